package metadata

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

const (
	userDataA = "#cloud-config\nhostname: a\n# kept as is: \x00 é \t\r\n"
	userDataB = "#!/bin/sh\necho B-SECRET\n"
	bmcSecret = "bmc-password-never-served"
)

// fixture is a store holding three servers:
//
//	hw-a 10.0.0.10: machine with user-data, two SSH keys, labels, metadata
//	hw-b 10.0.0.11: machine with other user-data
//	hw-c 10.0.0.12: hardware only, no machine
//
// 192.0.2.0/24 is the trusted proxy range.
type fixture struct {
	st  *store.Store
	srv *Server
	mux *http.ServeMux
	reg *prometheus.Registry
	now time.Time
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	st := teststore.Open(t)
	ctx := context.Background()
	err := st.Update(ctx, func(tx *store.Tx) error {
		if err := tx.CreateTemplate(store.Template{ID: "tpl", Name: "ubuntu", Content: "version: \"0.1\"\n"}); err != nil {
			return err
		}
		hws := []store.Hardware{
			{
				ID: "hw-a", Hostname: "a.example", Arch: "x86_64", UEFI: true, Disks: []string{"/dev/sda"},
				Interfaces: []store.Interface{
					{MAC: "52:54:00:00:00:0a", IP: "10.0.0.10/24", Gateway: "10.0.0.1", NameServers: []string{"10.0.0.2"}},
					{MAC: "52:54:00:00:01:0a"},
				},
				BMC: store.BMC{Driver: "ipmi", Address: "10.1.0.10", Username: "admin", Password: bmcSecret},
				Labels: map[string]string{
					"availability-zone": "rack1", "public-ipv4": "203.0.113.10", "role": "db",
					"topology.kubernetes.io/zone": "z1", "bad=key": "x",
				},
				Metadata: json.RawMessage(`{"vendor_data":"#cloud-config\nntp: {enabled: true}\n","custom":{"n":1}}`),
			},
			{ID: "hw-b", Hostname: "b.example", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:0b", IP: "10.0.0.11/24"}},
				Metadata: json.RawMessage(`{"public_ipv4":"203.0.113.11"}`)},
			{ID: "hw-c", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:0c", IP: "10.0.0.12"}}},
		}
		for _, h := range hws {
			if err := tx.CreateHardware(h); err != nil {
				return err
			}
		}
		if err := tx.PutMachine(store.Machine{
			HardwareID: "hw-a", TemplateID: "tpl", UserData: userDataA, WorkflowID: "wf-1",
			SSHKeys:    []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x", " ssh-rsa AAAAB3NzaC1yc2E b@y\n"},
			Parameters: map[string]string{"image_url": "http://img/ubuntu.raw"},
		}); err != nil {
			return err
		}
		return tx.PutMachine(store.Machine{HardwareID: "hw-b", TemplateID: "tpl", UserData: userDataB})
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st, reg: prometheus.NewRegistry(), now: time.Unix(1_800_000_000, 0)}
	if opts.TrustedProxies == nil {
		opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	}
	opts.Now = func() time.Time { return f.now }
	f.srv = New(st, nil, f.reg, opts)
	f.mux = http.NewServeMux()
	f.srv.Register(f.mux)
	return f
}

// req is one request to the fixture's mux.
type req struct {
	method string
	remote string // "10.0.0.10"
	xff    string
	path   string
	header map[string]string
}

func (f *fixture) do(t testing.TB, q req) (int, string, http.Header) {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodGet
	}
	r := httptest.NewRequest(q.method, "http://metadata"+q.path, nil)
	ap := netip.AddrPortFrom(netip.MustParseAddr(q.remote), 40000)
	r.RemoteAddr = ap.String()
	if q.xff != "" {
		r.Header.Set("X-Forwarded-For", q.xff)
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body), w.Result().Header
}

const (
	listingA = "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nplacement/\npublic-ipv4\npublic-keys/\ntags/"
	vendorA  = "#cloud-config\nntp: {enabled: true}\n"
)

func TestEC2Paths(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	const a, b, c = "10.0.0.10", "10.0.0.11", "10.0.0.12"
	tests := map[string]struct {
		q        req
		wantCode int
		wantBody string // checked when wantCode is 200
		wantType string
	}{
		"version listing":            {req{remote: a, path: "/2009-04-04/"}, 200, "meta-data\nuser-data\nvendor-data", "text/plain; charset=utf-8"},
		"latest listing":             {req{remote: a, path: "/latest/"}, 200, "meta-data\nuser-data\nvendor-data", ""},
		"listing no machine":         {req{remote: c, path: "/latest/"}, 200, "meta-data", ""},
		"meta-data/":                 {req{remote: a, path: "/2009-04-04/meta-data/"}, 200, listingA, "text/plain; charset=utf-8"},
		"meta-data without slash":    {req{remote: a, path: "/latest/meta-data"}, 200, listingA, ""},
		"instance-id":                {req{remote: a, path: "/2009-04-04/meta-data/instance-id"}, 200, "hw-a", ""},
		"instance-id latest":         {req{remote: b, path: "/latest/meta-data/instance-id"}, 200, "hw-b", ""},
		"hostname":                   {req{remote: a, path: "/latest/meta-data/hostname"}, 200, "a.example", ""},
		"local-hostname":             {req{remote: a, path: "/latest/meta-data/local-hostname"}, 200, "a.example", ""},
		"local-ipv4":                 {req{remote: a, path: "/latest/meta-data/local-ipv4"}, 200, "10.0.0.10", ""},
		"mac":                        {req{remote: a, path: "/latest/meta-data/mac"}, 200, "52:54:00:00:00:0a", ""},
		"public-ipv4 from label":     {req{remote: a, path: "/latest/meta-data/public-ipv4"}, 200, "203.0.113.10", ""},
		"public-ipv4 from metadata":  {req{remote: b, path: "/latest/meta-data/public-ipv4"}, 200, "203.0.113.11", ""},
		"public-ipv4 unset":          {req{remote: c, path: "/latest/meta-data/public-ipv4"}, 404, "", ""},
		"placement/":                 {req{remote: a, path: "/latest/meta-data/placement/"}, 200, "availability-zone", ""},
		"availability-zone":          {req{remote: a, path: "/latest/meta-data/placement/availability-zone"}, 200, "rack1", ""},
		"placement unset":            {req{remote: c, path: "/latest/meta-data/placement/availability-zone"}, 404, "", ""},
		"public-keys/":               {req{remote: a, path: "/latest/meta-data/public-keys/"}, 200, "0=key-0\n1=key-1", ""},
		"public-keys without slash":  {req{remote: a, path: "/latest/meta-data/public-keys"}, 200, "0=key-0\n1=key-1", ""},
		"public-keys/0/":             {req{remote: a, path: "/latest/meta-data/public-keys/0/"}, 200, "openssh-key", ""},
		"public-keys/0":              {req{remote: a, path: "/latest/meta-data/public-keys/0"}, 200, "openssh-key", ""},
		"openssh-key 0":              {req{remote: a, path: "/2009-04-04/meta-data/public-keys/0/openssh-key"}, 200, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x", ""},
		"openssh-key 1 trimmed":      {req{remote: a, path: "/2009-04-04/meta-data/public-keys/1/openssh-key"}, 200, "ssh-rsa AAAAB3NzaC1yc2E b@y", ""},
		"openssh-key 2 missing":      {req{remote: a, path: "/latest/meta-data/public-keys/2/openssh-key"}, 404, "", ""},
		"public-keys by name":        {req{remote: a, path: "/latest/meta-data/public-keys/key-0"}, 404, "", ""},
		"public-keys no machine":     {req{remote: c, path: "/latest/meta-data/public-keys/"}, 404, "", ""},
		"tags/":                      {req{remote: a, path: "/latest/meta-data/tags/"}, 200, "instance/", ""},
		"tags/instance/":             {req{remote: a, path: "/latest/meta-data/tags/instance/"}, 200, "availability-zone\npublic-ipv4\nrole", ""},
		"tag value":                  {req{remote: a, path: "/latest/meta-data/tags/instance/role"}, 200, "db", ""},
		"tag with slash not served":  {req{remote: a, path: "/latest/meta-data/tags/instance/topology.kubernetes.io/zone"}, 404, "", ""},
		"tag with = not served":      {req{remote: a, path: "/latest/meta-data/tags/instance/bad=key"}, 404, "", ""},
		"tags none":                  {req{remote: c, path: "/latest/meta-data/tags/"}, 404, "", ""},
		"leaf with trailing slash":   {req{remote: a, path: "/latest/meta-data/instance-id/"}, 404, "", ""},
		"below a leaf":               {req{remote: a, path: "/latest/meta-data/instance-id/x"}, 404, "", ""},
		"unknown leaf":               {req{remote: a, path: "/latest/meta-data/ami-id"}, 404, "", ""},
		"unknown top":                {req{remote: a, path: "/latest/dynamic/instance-identity/document"}, 404, "", ""},
		"unserved version":           {req{remote: a, path: "/2021-03-23/meta-data/instance-id"}, 404, "", ""},
		"meta-data no machine":       {req{remote: c, path: "/latest/meta-data/"}, 200, "instance-id\nlocal-ipv4\nmac", ""},
		"user-data raw":              {req{remote: a, path: "/2009-04-04/user-data"}, 200, userDataA, "application/octet-stream"},
		"user-data latest":           {req{remote: b, path: "/latest/user-data"}, 200, userDataB, ""},
		"user-data no machine":       {req{remote: c, path: "/latest/user-data"}, 404, "", ""},
		"user-data with slash":       {req{remote: a, path: "/latest/user-data/"}, 404, "", ""},
		"vendor-data":                {req{remote: a, path: "/latest/vendor-data"}, 200, vendorA, "application/octet-stream"},
		"vendor-data unset":          {req{remote: b, path: "/latest/vendor-data"}, 404, "", ""},
		"unknown caller":             {req{remote: "10.0.0.99", path: "/latest/meta-data/instance-id"}, 404, "", ""},
		"unknown caller user-data":   {req{remote: "10.0.0.99", path: "/latest/user-data"}, 404, "", ""},
		"ipv4-mapped peer":           {req{remote: "::ffff:10.0.0.10", path: "/latest/meta-data/instance-id"}, 200, "hw-a", ""},
		"POST refused":               {req{method: http.MethodPost, remote: a, path: "/latest/user-data"}, 405, "", ""},
		"HEAD user-data":             {req{method: http.MethodHead, remote: a, path: "/latest/user-data"}, 200, "", ""},
		"json unknown caller":        {req{remote: "10.0.0.99", path: "/metadata"}, 404, "", ""},
		"nocloud listing":            {req{remote: a, path: "/nocloud/"}, 200, "meta-data\nuser-data\nvendor-data", ""},
		"nocloud user-data":          {req{remote: a, path: "/nocloud/user-data"}, 200, userDataA, "application/octet-stream"},
		"nocloud user-data empty":    {req{remote: c, path: "/nocloud/user-data"}, 200, "", "application/octet-stream"},
		"nocloud vendor-data":        {req{remote: a, path: "/nocloud/vendor-data"}, 200, vendorA, ""},
		"nocloud unknown":            {req{remote: a, path: "/nocloud/network-config"}, 404, "", ""},
		"openstack versions":         {req{remote: a, path: "/openstack/"}, 200, "latest", ""},
		"openstack listing":          {req{remote: a, path: "/openstack/latest/"}, 200, "meta_data.json\nnetwork_data.json\nvendor_data.json\nuser_data", ""},
		"openstack user_data":        {req{remote: b, path: "/openstack/latest/user_data"}, 200, userDataB, ""},
		"openstack user_data none":   {req{remote: c, path: "/openstack/latest/user_data"}, 404, "", ""},
		"openstack vendor_data":      {req{remote: a, path: "/openstack/latest/vendor_data.json"}, 200, "{\n  \"cloud-init\": \"#cloud-config\\nntp: {enabled: true}\\n\"\n}\n", "application/json"},
		"openstack unknown version":  {req{remote: a, path: "/openstack/2012-08-10/meta_data.json"}, 404, "", ""},
		"openstack unknown caller":   {req{remote: "10.0.0.99", path: "/openstack/latest/meta_data.json"}, 404, "", ""},
		"nocloud meta-data no match": {req{remote: "10.0.0.99", path: "/nocloud/meta-data"}, 404, "", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, body, h := f.do(t, tc.q)
			if code != tc.wantCode {
				t.Fatalf("%s %s from %s: code %d, want %d (body %q)", tc.q.method, tc.q.path, tc.q.remote, code, tc.wantCode, body)
			}
			if code != 200 || tc.q.method == http.MethodHead {
				return
			}
			if diff := cmp.Diff(tc.wantBody, body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if tc.wantType != "" && h.Get("Content-Type") != tc.wantType {
				t.Errorf("Content-Type %q, want %q", h.Get("Content-Type"), tc.wantType)
			}
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", h.Get("Cache-Control"))
			}
		})
	}
}

// TestProxies: X-Forwarded-For counts only from a trusted proxy, and then
// only its right-most untrusted entry.
func TestProxies(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	tests := map[string]struct {
		remote, xff string
		path        string
		wantCode    int
		wantBody    string
	}{
		"trusted proxy forwards A":              {"192.0.2.5", "10.0.0.10", "/latest/meta-data/instance-id", 200, "hw-a"},
		"trusted proxy forwards B user-data":    {"192.0.2.5", "10.0.0.11", "/latest/user-data", 200, userDataB},
		"right-most untrusted entry wins":       {"192.0.2.5", "10.0.0.10, 10.0.0.11", "/latest/meta-data/instance-id", 200, "hw-b"},
		"client-written left entries ignored":   {"192.0.2.5", "10.0.0.10,10.0.0.99", "/latest/meta-data/instance-id", 404, ""},
		"chain of trusted proxies skipped":      {"192.0.2.5", "10.0.0.10, 192.0.2.9", "/latest/meta-data/instance-id", 200, "hw-a"},
		"entry with port":                       {"192.0.2.5", "10.0.0.12:5555", "/latest/meta-data/instance-id", 200, "hw-c"},
		"trusted proxy without header is proxy": {"192.0.2.5", "", "/latest/meta-data/instance-id", 404, ""},
		"trusted proxy garbage header":          {"192.0.2.5", "not-an-ip", "/latest/meta-data/instance-id", 400, ""},
		"spoofed XFF from untrusted machine B":  {"10.0.0.11", "10.0.0.10", "/latest/user-data", 200, userDataB},
		"spoofed XFF from machine C for A":      {"10.0.0.12", "10.0.0.10", "/latest/user-data", 404, ""},
		"spoofed XFF from unknown host":         {"198.51.100.7", "10.0.0.10", "/latest/user-data", 404, ""},
		"spoofed XFF JSON":                      {"10.0.0.11", "10.0.0.10", "/metadata", 200, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, body, _ := f.do(t, req{remote: tc.remote, xff: tc.xff, path: tc.path})
			if code != tc.wantCode {
				t.Fatalf("code %d, want %d (body %q)", code, tc.wantCode, body)
			}
			if strings.Contains(body, "hw-a") && tc.wantBody != "hw-a" || strings.Contains(body, "hostname: a") {
				t.Errorf("machine A's data leaked: %q", body)
			}
			if tc.wantBody != "" {
				if diff := cmp.Diff(tc.wantBody, body); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestMachinesIsolated: over real loopback TCP, two machines identified by
// their real source addresses each get only their own user-data.
func TestMachinesIsolated(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	err := f.st.Update(context.Background(), func(tx *store.Tx) error {
		for id, ip := range map[string]string{"hw-a": "127.0.0.2/8", "hw-b": "127.0.0.3/8"} {
			h, err := tx.Hardware(id)
			if err != nil {
				return err
			}
			h.Interfaces[0].IP = ip
			if err := tx.UpdateHardware(h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.mux)
	defer srv.Close()
	for _, tc := range []struct{ src, want, other string }{
		{"127.0.0.2", userDataA, userDataB},
		{"127.0.0.3", userDataB, userDataA},
	} {
		c := clientFrom(t, tc.src)
		for _, p := range []string{"/latest/user-data", "/2009-04-04/user-data", "/openstack/latest/user_data", "/nocloud/user-data"} {
			code, body := get(t, c, srv.URL+p, nil)
			if code != 200 || body != tc.want {
				t.Errorf("from %s %s: %d %q, want 200 %q", tc.src, p, code, body, tc.want)
			}
			if strings.Contains(body, tc.other) {
				t.Errorf("from %s %s: other machine's user-data served", tc.src, p)
			}
		}
		// Even with a forged X-Forwarded-For naming the other machine.
		other := map[string]string{"127.0.0.2": "127.0.0.3", "127.0.0.3": "127.0.0.2"}[tc.src]
		code, body := get(t, c, srv.URL+"/latest/user-data", map[string]string{"X-Forwarded-For": other})
		if code != 200 || body != tc.want {
			t.Errorf("from %s forging XFF %s: %d %q, want own user-data", tc.src, other, code, body)
		}
	}
	// 127.0.0.4 is no machine.
	if code, _ := get(t, clientFrom(t, "127.0.0.4"), srv.URL+"/latest/meta-data/instance-id", nil); code != 404 {
		t.Errorf("unknown source 127.0.0.4: %d, want 404", code)
	}
}

func TestJSONDocument(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	code, body, h := f.do(t, req{remote: "10.0.0.10", path: "/metadata"})
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("code %d type %q", code, h.Get("Content-Type"))
	}
	if strings.Contains(body, bmcSecret) || strings.Contains(body, "10.1.0.10") || strings.Contains(strings.ToLower(body), "bmc") {
		t.Fatalf("BMC details in /metadata: %s", body)
	}
	var got Document
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := Document{
		InstanceID: "hw-a", Hostname: "a.example", Arch: "x86_64", UEFI: true,
		LocalIPv4: "10.0.0.10", PublicIPv4: "203.0.113.10", AvailabilityZone: "rack1",
		Interfaces: []DocInterface{
			{MAC: "52:54:00:00:00:0a", Address: "10.0.0.10", Prefix: 24, Netmask: "255.255.255.0", Gateway: "10.0.0.1", NameServers: []string{"10.0.0.2"}},
			{MAC: "52:54:00:00:01:0a"},
		},
		Disks: []string{"/dev/sda"},
		Labels: map[string]string{
			"availability-zone": "rack1", "public-ipv4": "203.0.113.10", "role": "db",
			"topology.kubernetes.io/zone": "z1", "bad=key": "x",
		},
		Metadata: json.RawMessage(`{"vendor_data":"#cloud-config\nntp: {enabled: true}\n","custom":{"n":1}}`),
		Machine: &DocMachine{
			TemplateID: "tpl", WorkflowID: "wf-1",
			Parameters: map[string]string{"image_url": "http://img/ubuntu.raw"},
			SSHKeys:    []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x", "ssh-rsa AAAAB3NzaC1yc2E b@y"},
			UserData:   userDataA,
		},
	}
	// Metadata is re-indented by the encoder: compare it as a value.
	var gm, wm any
	_ = json.Unmarshal(got.Metadata, &gm)
	_ = json.Unmarshal(want.Metadata, &wm)
	if diff := cmp.Diff(wm, gm); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	got.Metadata, want.Metadata = nil, nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("document (-want +got):\n%s", diff)
	}

	// No machine: the document still answers, machine null.
	code, body, _ = f.do(t, req{remote: "10.0.0.12", path: "/metadata"})
	var gotC map[string]any
	if err := json.Unmarshal([]byte(body), &gotC); code != 200 || err != nil {
		t.Fatalf("hw-c: %d %v", code, err)
	}
	if m, ok := gotC["machine"]; !ok || m != nil {
		t.Errorf("hw-c machine = %v, want null", m)
	}
}

func TestOpenStackAndNoCloud(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	tests := map[string]struct {
		path string
		want any
	}{
		"meta_data.json": {"/openstack/latest/meta_data.json", map[string]any{
			"uuid": "hw-a", "hostname": "a.example", "name": "a.example", "launch_index": float64(0),
			"availability_zone": "rack1",
			"public_keys":       map[string]any{"key-0": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x", "key-1": "ssh-rsa AAAAB3NzaC1yc2E b@y"},
			"keys": []any{
				map[string]any{"name": "key-0", "type": "ssh", "data": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x"},
				map[string]any{"name": "key-1", "type": "ssh", "data": "ssh-rsa AAAAB3NzaC1yc2E b@y"},
			},
			"meta": map[string]any{"availability-zone": "rack1", "public-ipv4": "203.0.113.10", "role": "db"},
		}},
		"network_data.json": {"/openstack/latest/network_data.json", map[string]any{
			"links": []any{
				map[string]any{"id": "iface0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:0a"},
				map[string]any{"id": "iface1", "type": "phy", "ethernet_mac_address": "52:54:00:00:01:0a"},
			},
			"networks": []any{
				map[string]any{"id": "network0", "link": "iface0", "type": "ipv4", "ip_address": "10.0.0.10", "netmask": "255.255.255.0",
					"routes":   []any{map[string]any{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}},
					"services": []any{map[string]any{"type": "dns", "address": "10.0.0.2"}}},
				map[string]any{"id": "network1", "link": "iface1", "type": "ipv4_dhcp"},
			},
			"services": []any{map[string]any{"type": "dns", "address": "10.0.0.2"}},
		}},
		"nocloud meta-data": {"/nocloud/meta-data", map[string]any{
			"instance-id": "hw-a", "local-hostname": "a.example", "hostname": "a.example", "availability_zone": "rack1",
			"public-keys": []any{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x", "ssh-rsa AAAAB3NzaC1yc2E b@y"},
			"network-interfaces": "auto eth0\niface eth0 inet static\n    hwaddress ether 52:54:00:00:00:0a\n    address 10.0.0.10\n" +
				"    netmask 255.255.255.0\n    gateway 10.0.0.1\n    dns-nameservers 10.0.0.2\n" +
				"auto eth1\niface eth1 inet dhcp\n    hwaddress ether 52:54:00:00:01:0a\n",
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, body, _ := f.do(t, req{remote: "10.0.0.10", path: tc.path})
			if code != 200 {
				t.Fatalf("code %d", code)
			}
			var got any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, body)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestTokens covers the IMDSv2-style session token.
func TestTokens(t *testing.T) {
	f := newFixture(t, Options{})
	put := func(remote, xff, ttl string) (int, string) {
		h := map[string]string{}
		if ttl != "" {
			h[TokenTTLHeader] = ttl
		}
		code, body, _ := f.do(t, req{method: http.MethodPut, remote: remote, xff: xff, path: "/latest/api/token", header: h})
		return code, body
	}
	for name, tc := range map[string]struct {
		remote, xff, ttl string
		want             int
	}{
		"no ttl":               {"10.0.0.10", "", "", 400},
		"ttl zero":             {"10.0.0.10", "", "0", 400},
		"ttl too long":         {"10.0.0.10", "", "21601", 400},
		"ttl not a number":     {"10.0.0.10", "", "1h", 400},
		"ttl max":              {"10.0.0.10", "", "21600", 200},
		"unknown caller":       {"10.0.0.99", "", "60", 404},
		"forwarded, untrusted": {"10.0.0.10", "10.0.0.10", "60", 403},
		"via trusted proxy":    {"192.0.2.1", "10.0.0.10", "60", 200},
	} {
		if code, body := put(tc.remote, tc.xff, tc.ttl); code != tc.want {
			t.Errorf("PUT token %s: %d %q, want %d", name, code, body, tc.want)
		}
	}

	code, tokA := put("10.0.0.10", "", "60")
	if code != 200 || tokA == "" {
		t.Fatalf("token for A: %d %q", code, tokA)
	}
	_, tokB := put("10.0.0.11", "", "60")
	withTok := func(tok string) map[string]string { return map[string]string{TokenHeader: tok} }
	tampered := []byte(tokA)
	tampered[3] ^= 1

	tests := map[string]struct {
		q    req
		want int
	}{
		"user-data without token":          {req{remote: "10.0.0.10", path: "/latest/user-data"}, 401},
		"user-data with token":             {req{remote: "10.0.0.10", path: "/latest/user-data", header: withTok(tokA)}, 200},
		"vendor-data without token":        {req{remote: "10.0.0.10", path: "/latest/vendor-data"}, 401},
		"json without token":               {req{remote: "10.0.0.10", path: "/metadata"}, 401},
		"json with token":                  {req{remote: "10.0.0.10", path: "/metadata", header: withTok(tokA)}, 200},
		"openstack user_data without":      {req{remote: "10.0.0.10", path: "/openstack/latest/user_data"}, 401},
		"nocloud user-data without":        {req{remote: "10.0.0.10", path: "/nocloud/user-data"}, 401},
		"meta-data stays open":             {req{remote: "10.0.0.10", path: "/latest/meta-data/instance-id"}, 200},
		"bad token refused on meta-data":   {req{remote: "10.0.0.10", path: "/latest/meta-data/instance-id", header: withTok("junk")}, 401},
		"A's token used by B":              {req{remote: "10.0.0.11", path: "/latest/user-data", header: withTok(tokA)}, 401},
		"B's token used by B":              {req{remote: "10.0.0.11", path: "/latest/user-data", header: withTok(tokB)}, 200},
		"tampered token":                   {req{remote: "10.0.0.10", path: "/latest/user-data", header: withTok(string(tampered))}, 401},
		"token via trusted proxy":          {req{remote: "192.0.2.3", xff: "10.0.0.10", path: "/latest/user-data", header: withTok(tokA)}, 200},
		"user-data none, token, still 404": {req{remote: "10.0.0.12", path: "/latest/user-data", header: withTok(mustToken(t, f, "10.0.0.12"))}, 404},
	}
	for name, tc := range tests {
		if code, body, _ := f.do(t, tc.q); code != tc.want {
			t.Errorf("%s: %d %q, want %d", name, code, body, tc.want)
		}
	}

	// The token expires.
	f.now = f.now.Add(61 * time.Second)
	if code, _, _ := f.do(t, req{remote: "10.0.0.10", path: "/latest/user-data", header: withTok(tokA)}); code != 401 {
		t.Errorf("expired token: %d, want 401", code)
	}
	// A token from another process's key is refused.
	other := New(f.st, nil, nil, Options{Now: func() time.Time { return f.now }})
	bindA := `"hw-a"|"wf-1"` // hw-a with its machine's current workflow
	if code, _, _ := f.do(t, req{remote: "10.0.0.10", path: "/latest/user-data", header: withTok(f.srv.makeToken(bindA, f.now.Add(time.Hour)))}); code != 200 {
		t.Errorf("token signed with the server's key: %d, want 200", code)
	}
	foreign := other.makeToken(bindA, f.now.Add(time.Hour))
	if code, _, _ := f.do(t, req{remote: "10.0.0.10", path: "/latest/user-data", header: withTok(foreign)}); code != 401 {
		t.Errorf("token signed with another key: %d, want 401", code)
	}
}

func mustToken(t *testing.T, f *fixture, remote string) string {
	t.Helper()
	code, body, _ := f.do(t, req{method: http.MethodPut, remote: remote, path: "/latest/api/token", header: map[string]string{TokenTTLHeader: "60"}})
	if code != 200 {
		t.Fatalf("token for %s: %d", remote, code)
	}
	return body
}

// TestTokenOptional: with TokenOptional, user-data needs no token, but a
// presented token is still checked.
func TestTokenOptional(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	if code, _, _ := f.do(t, req{remote: "10.0.0.10", path: "/latest/user-data"}); code != 200 {
		t.Errorf("without token: %d, want 200", code)
	}
	if code, _, _ := f.do(t, req{remote: "10.0.0.10", path: "/latest/user-data", header: map[string]string{TokenHeader: "x.y"}}); code != 401 {
		t.Errorf("invalid token: %d, want 401", code)
	}
}

// TestReflectsStoreChanges: no cache; every change is visible at once.
func TestReflectsStoreChanges(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	ctx := context.Background()
	get := func(remote, path string) (int, string) {
		code, body, _ := f.do(t, req{remote: remote, path: path})
		return code, body
	}
	update := func(fn func(*store.Tx) error) {
		t.Helper()
		if err := f.st.Update(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *store.Tx) error {
		h, _ := tx.Hardware("hw-a")
		h.Hostname = "renamed.example"
		h.Labels["role"] = "web"
		return tx.UpdateHardware(h)
	})
	if _, body := get("10.0.0.10", "/latest/meta-data/hostname"); body != "renamed.example" {
		t.Errorf("hostname after update: %q", body)
	}
	if _, body := get("10.0.0.10", "/latest/meta-data/tags/instance/role"); body != "web" {
		t.Errorf("tag after update: %q", body)
	}
	update(func(tx *store.Tx) error {
		m, _ := tx.Machine("hw-a")
		m.UserData = "new user data"
		return tx.PutMachine(m)
	})
	if _, body := get("10.0.0.10", "/latest/user-data"); body != "new user data" {
		t.Errorf("user-data after update: %q", body)
	}
	update(func(tx *store.Tx) error { return tx.DeleteMachine("hw-a") })
	if code, _ := get("10.0.0.10", "/latest/user-data"); code != 404 {
		t.Errorf("user-data after machine delete: %d, want 404", code)
	}
	if code, body := get("10.0.0.10", "/latest/meta-data/instance-id"); code != 200 || body != "hw-a" {
		t.Errorf("meta-data after machine delete: %d %q", code, body)
	}
	// Readdress hw-b: the old address is nobody's, the new one is hw-b's.
	update(func(tx *store.Tx) error {
		h, _ := tx.Hardware("hw-b")
		h.Interfaces[0].IP = "10.0.0.50/24"
		return tx.UpdateHardware(h)
	})
	if code, _ := get("10.0.0.11", "/latest/user-data"); code != 404 {
		t.Errorf("old address after readdress: %d, want 404", code)
	}
	if code, body := get("10.0.0.50", "/latest/user-data"); code != 200 || body != userDataB {
		t.Errorf("new address after readdress: %d %q", code, body)
	}
	update(func(tx *store.Tx) error { return tx.DeleteHardware("hw-c") })
	if code, _ := get("10.0.0.12", "/latest/meta-data/instance-id"); code != 404 {
		t.Errorf("deleted hardware: %d, want 404", code)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	for _, q := range []req{
		{remote: "10.0.0.10", path: "/latest/user-data"},
		{remote: "10.0.0.10", path: "/latest/user-data"},
		{remote: "10.0.0.12", path: "/latest/user-data"},
		{remote: "10.0.0.10", path: "/latest/meta-data/instance-id"},
		{remote: "10.0.0.99", path: "/metadata"},
		{remote: "10.0.0.10", path: "/nocloud/meta-data"},
	} {
		f.do(t, q)
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	histograms := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetName() {
			case "provisiond_metadata_requests_total":
				got[labels["class"]+"/"+labels["code"]] = m.GetCounter().GetValue()
			case "provisiond_metadata_request_duration_seconds":
				histograms++
			}
		}
	}
	want := map[string]float64{"ec2-user-data/200": 2, "ec2-user-data/404": 1, "ec2-meta-data/200": 1, "json/404": 1, "nocloud/200": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests_total (-want +got):\n%s", diff)
	}
	if histograms != 4 {
		t.Errorf("duration series: %d, want 4 (one per class)", histograms)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.0.0.0/8", " 192.0.2.1 ", "", "fd00::/64", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("10.1.0.0/16"),
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := ParseTrustedProxies([]string{"0.0.0.0/0x"}); err == nil {
		t.Error("bad CIDR accepted")
	}
}

// TestTokenPUTRefusesForwarded: a token PUT that names a proxy hop in any of
// the three forwarding headers is refused from an untrusted peer, as AWS
// IMDSv2 does: a proxy on the machine that forwards the PUT would carry the
// token off the machine. (Issue 13 item 7; before, only X-Forwarded-For was
// refused.)
func TestTokenPUTRefusesForwarded(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	for name, tc := range map[string]struct {
		remote string
		header map[string]string
		want   int
	}{
		"X-Forwarded-For":          {"10.0.0.10", map[string]string{"X-Forwarded-For": "10.0.0.10"}, 403},
		"Forwarded":                {"10.0.0.10", map[string]string{"Forwarded": "for=10.0.0.10;proto=http"}, 403},
		"Via":                      {"10.0.0.10", map[string]string{"Via": "1.1 squid"}, 403},
		"Via, lower case":          {"10.0.0.10", map[string]string{"via": "1.0 fred"}, 403},
		"Forwarded, empty for":     {"10.0.0.10", map[string]string{"Forwarded": "proto=https"}, 403},
		"none":                     {"10.0.0.10", nil, 200},
		"trusted proxy, XFF + Via": {"192.0.2.1", map[string]string{"X-Forwarded-For": "10.0.0.10", "Via": "1.1 relay"}, 200},
		"trusted proxy, Forwarded": {"192.0.2.1", map[string]string{"X-Forwarded-For": "10.0.0.10", "Forwarded": "for=10.0.0.10"}, 200},
	} {
		t.Run(name, func(t *testing.T) {
			h := map[string]string{TokenTTLHeader: "60"}
			for k, v := range tc.header {
				h[k] = v
			}
			code, body, _ := f.do(t, req{method: http.MethodPut, remote: tc.remote, path: "/latest/api/token", header: h})
			if code != tc.want {
				t.Errorf("PUT token with %v: %d %q, want %d", tc.header, code, body, tc.want)
			}
		})
	}
}

// TestTokenBoundToWorkflow: a session token is bound to the machine's
// current workflow, checked at use, so a token minted during one install
// cannot read the user-data of the next one (reinstall), nor anything once
// the machine is deprovisioned or its hardware deleted. (Issue 13 item 7;
// before, tokens were bound to the hardware id only.)
func TestTokenBoundToWorkflow(t *testing.T) {
	ctx := context.Background()
	withTok := func(tok string) map[string]string { return map[string]string{TokenHeader: tok} }
	userData := func(f *fixture, tok string) int {
		// /metadata holds the user-data and answers whether or not a
		// machine is installed, so only the token decides its code.
		code, _, _ := f.do(t, req{remote: "10.0.0.10", path: "/metadata", header: withTok(tok)})
		return code
	}
	setMachine := func(t *testing.T, f *fixture, fn func(tx *store.Tx, m store.Machine) error) {
		t.Helper()
		err := f.st.Update(ctx, func(tx *store.Tx) error {
			m, err := tx.Machine("hw-a")
			if err != nil {
				return err
			}
			return fn(tx, m)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		change func(tx *store.Tx, m store.Machine) error
		want   int
	}{
		"unchanged": {func(*store.Tx, store.Machine) error { return nil }, 200},
		"same workflow, install finished": {func(tx *store.Tx, m store.Machine) error {
			m.ProvisionedAt = time.Unix(1_800_000_100, 0)
			return tx.PutMachine(m)
		}, 200},
		"reinstall: new workflow": {func(tx *store.Tx, m store.Machine) error {
			m.WorkflowID, m.UserData = "wf-2", "#cloud-config\n# second install\n"
			return tx.PutMachine(m)
		}, 401},
		"deprovision started": {func(tx *store.Tx, m store.Machine) error {
			m.WorkflowID = "wf-deprovision"
			return tx.PutMachine(m)
		}, 401},
		"deprovisioned: machine gone": {func(tx *store.Tx, _ store.Machine) error {
			return tx.DeleteMachine("hw-a")
		}, 401},
		"machine gone, then reinstalled with the same workflow id": {func(tx *store.Tx, m store.Machine) error {
			if err := tx.DeleteMachine("hw-a"); err != nil {
				return err
			}
			m.WorkflowID = "wf-1"
			return tx.PutMachine(m)
		}, 200}, // the same workflow is the same install: the binding is the workflow
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Options{TokenOptional: true})
			tok := mustToken(t, f, "10.0.0.10")
			if code := userData(f, tok); code != 200 {
				t.Fatalf("before the change: %d, want 200", code)
			}
			setMachine(t, f, tc.change)
			if code := userData(f, tok); code != tc.want {
				t.Errorf("after the change: %d, want %d", code, tc.want)
			}
			// A fresh token works again whenever the machine is there.
			if tc.want != 200 && name != "deprovisioned: machine gone" {
				if code := userData(f, mustToken(t, f, "10.0.0.10")); code != 200 {
					t.Errorf("fresh token after the change: %d, want 200", code)
				}
			}
		})
	}

	t.Run("machine and hardware deleted, hardware re-created", func(t *testing.T) {
		f := newFixture(t, Options{TokenOptional: true})
		tok := mustToken(t, f, "10.0.0.11") // hw-b: a machine with no workflow id
		err := f.st.Update(ctx, func(tx *store.Tx) error {
			hw, err := tx.Hardware("hw-b")
			if err != nil {
				return err
			}
			if err := tx.DeleteMachine("hw-b"); err != nil {
				return err
			}
			if err := tx.DeleteHardware("hw-b"); err != nil {
				return err
			}
			return tx.CreateHardware(hw)
		})
		if err != nil {
			t.Fatal(err)
		}
		if code, _, _ := f.do(t, req{remote: "10.0.0.11", path: "/metadata", header: withTok(tok)}); code != 401 {
			t.Errorf("token of the deleted machine on /metadata: %d, want 401", code)
		}
	})

	t.Run("hardware deleted", func(t *testing.T) {
		f := newFixture(t, Options{TokenOptional: true})
		tok := mustToken(t, f, "10.0.0.12") // hw-c: hardware only
		err := f.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteHardware("hw-c") })
		if err != nil {
			t.Fatal(err)
		}
		if code, _, _ := f.do(t, req{remote: "10.0.0.12", path: "/metadata", header: withTok(tok)}); code != 404 {
			t.Errorf("after the hardware is deleted: %d, want 404 (unknown caller)", code)
		}
	})
}

// TestTokenRequiredByDefault: the zero Options (and so provisiond's default)
// serve no document that can hold secrets without a session token, on
// every layout; the meta-data tree, meta_data.json and network_data.json
// stay open so that cloud-init still finds its instance-id, host name, keys
// and network. (Issue 13 item 7; before, tokens were optional by default.)
func TestTokenRequiredByDefault(t *testing.T) {
	f := newFixture(t, Options{})
	tok := mustToken(t, f, "10.0.0.10")
	for p, open := range map[string]bool{
		"/latest/user-data":                               false,
		"/2009-04-04/user-data":                           false,
		"/latest/vendor-data":                             false,
		"/metadata":                                       false,
		"/openstack/latest/user_data":                     false,
		"/openstack/latest/vendor_data.json":              false,
		"/nocloud/user-data":                              false,
		"/nocloud/vendor-data":                            false,
		"/latest/meta-data/instance-id":                   true,
		"/2009-04-04/meta-data/public-keys/0/openssh-key": true,
		"/openstack/latest/meta_data.json":                true,
		"/openstack/latest/network_data.json":             true,
		"/nocloud/meta-data":                              true,
	} {
		want := 401
		if open {
			want = 200
		}
		if code, body, _ := f.do(t, req{remote: "10.0.0.10", path: p}); code != want {
			t.Errorf("GET %s without a token: %d %q, want %d", p, code, body, want)
		}
		if code, body, _ := f.do(t, req{remote: "10.0.0.10", path: p, header: map[string]string{TokenHeader: tok}}); code != 200 {
			t.Errorf("GET %s with a token: %d %q, want 200", p, code, body)
		}
	}
}

// TestMachinesIsolatedWithTokens: over real loopback connections from two
// source addresses, with tokens required (the default), a second machine
// reads only its own user-data: its own token gives its own document, the
// first machine's token is refused, and it cannot obtain a token for the
// first machine by naming it in a forwarding header.
func TestMachinesIsolatedWithTokens(t *testing.T) {
	f := newFixture(t, Options{})
	f.now = time.Now() // real clock: tokens cross a real network
	err := f.st.Update(context.Background(), func(tx *store.Tx) error {
		for id, ip := range map[string]string{"hw-a": "127.0.0.2/8", "hw-b": "127.0.0.3/8"} {
			h, err := tx.Hardware(id)
			if err != nil {
				return err
			}
			h.Interfaces[0].IP = ip
			if err := tx.UpdateHardware(h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.mux)
	defer srv.Close()
	a, b := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
	ttl := map[string]string{TokenTTLHeader: "60"}
	token := func(c *http.Client, extra map[string]string) (int, string) {
		h := map[string]string{TokenTTLHeader: "60"}
		for k, v := range extra {
			h[k] = v
		}
		return call(t, c, http.MethodPut, srv.URL+"/latest/api/token", h)
	}
	codeA, tokA := token(a, nil)
	codeB, tokB := token(b, nil)
	if codeA != 200 || codeB != 200 {
		t.Fatalf("token PUTs: A %d, B %d", codeA, codeB)
	}
	paths := []string{"/latest/user-data", "/2009-04-04/user-data", "/openstack/latest/user_data", "/nocloud/user-data", "/metadata"}
	for _, p := range paths {
		if code, body := get(t, b, srv.URL+p, map[string]string{TokenHeader: tokB}); code != 200 || !strings.Contains(body, "B-SECRET") || strings.Contains(body, "hostname: a") {
			t.Errorf("B with its token, %s: %d %q, want B's own document", p, code, body)
		}
		if code, body := get(t, b, srv.URL+p, map[string]string{TokenHeader: tokA}); code != 401 {
			t.Errorf("B with A's token, %s: %d %q, want 401", p, code, body)
		}
		if code, body := get(t, b, srv.URL+p, nil); code != 401 {
			t.Errorf("B without a token, %s: %d %q, want 401", p, code, body)
		}
		if code, body := get(t, a, srv.URL+p, map[string]string{TokenHeader: tokA}); code != 200 || strings.Contains(body, "B-SECRET") {
			t.Errorf("A with its token, %s: %d %q, want A's own document", p, code, body)
		}
	}
	// B cannot have a token minted for A by naming A in a forwarding header
	// (it is no trusted proxy), and a header naming A changes nothing when B
	// reads with its own token.
	for _, h := range []map[string]string{
		{"X-Forwarded-For": "127.0.0.2"}, {"Forwarded": "for=127.0.0.2"}, {"Via": "1.1 127.0.0.2"},
	} {
		if code, body := token(b, h); code != 403 {
			t.Errorf("B's token PUT with %v: %d %q, want 403", h, code, body)
		}
	}
	if code, body := get(t, b, srv.URL+"/latest/user-data", map[string]string{TokenHeader: tokB, "X-Forwarded-For": "127.0.0.2"}); code != 200 || body != userDataB {
		t.Errorf("B with its token naming A in X-Forwarded-For: %d %q, want B's user-data", code, body)
	}
	// An address that is no machine gets no token.
	if code, _ := call(t, clientFrom(t, "127.0.0.4"), http.MethodPut, srv.URL+"/latest/api/token", ttl); code != 404 {
		t.Errorf("token PUT from unknown 127.0.0.4: %d, want 404", code)
	}
}

// TestCallerByLease: a caller whose address is configured on no hardware
// is found through its unexpired DHCP lease (proxy mode: the address the
// site's DHCP server gave it, as provisiond saw it); an expired lease, or
// none, is 404.
func TestCallerByLease(t *testing.T) {
	f := newFixture(t, Options{TokenOptional: true})
	ctx := context.Background()
	// hw-a's second NIC has no address; the site's DHCP gave it 10.0.0.50.
	err := f.st.Update(ctx, func(tx *store.Tx) error {
		if err := tx.PutLease(store.Lease{MAC: "52:54:00:00:01:0a", IP: "10.0.0.50", HardwareID: "hw-a", Expires: f.now.Add(time.Hour)}); err != nil {
			return err
		}
		return tx.PutLease(store.Lease{MAC: "52:54:00:00:00:0b", IP: "10.0.0.51", HardwareID: "hw-b", Expires: f.now.Add(-time.Second)})
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, body, _ := f.do(t, req{remote: "10.0.0.50", path: "/2009-04-04/meta-data/hostname"}); code != http.StatusOK || body != "a.example" {
		t.Errorf("hostname from the leased address: %d %q, want 200 a.example", code, body)
	}
	if code, body, _ := f.do(t, req{remote: "10.0.0.50", path: "/2009-04-04/user-data"}); code != http.StatusOK || body != userDataA {
		t.Errorf("user-data from the leased address: %d %q", code, body)
	}
	if code, _, _ := f.do(t, req{remote: "10.0.0.51", path: "/2009-04-04/meta-data/hostname"}); code != http.StatusNotFound {
		t.Errorf("expired lease: %d, want 404", code)
	}
	if code, _, _ := f.do(t, req{remote: "10.0.0.52", path: "/2009-04-04/meta-data/hostname"}); code != http.StatusNotFound {
		t.Errorf("no lease: %d, want 404", code)
	}
	// A configured address still wins over a lease record of it.
	if code, body, _ := f.do(t, req{remote: "10.0.0.11", path: "/2009-04-04/meta-data/hostname"}); code != http.StatusOK || body != "b.example" {
		t.Errorf("configured address: %d %q", code, body)
	}
}
