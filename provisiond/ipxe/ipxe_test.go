package ipxe

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// testNow is the clock of the handler under test.
var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// fakeTokens stands in for the workflow engine.
type fakeTokens struct {
	running map[string]string // hardware id → workflow id
	live    bool              // a live agent holds the token
	token   string
	calls   int
}

func (f *fakeTokens) MintAgentToken(_ context.Context, hw string) (string, string, error) {
	f.calls++
	wf, ok := f.running[hw]
	if !ok {
		return "", "", fmt.Errorf("hardware %s: %w", hw, ErrNoWorkflow)
	}
	if f.live {
		return "", "", fmt.Errorf("hardware %s: %w", hw, ErrAgentLive)
	}
	return wf, f.token, nil
}

func testStore(t testing.TB) *store.Store {
	t.Helper()
	st := teststore.Open(t)
	err := st.Update(context.Background(), func(tx *store.Tx) error {
		for _, h := range []store.Hardware{
			{ID: "hw-1", Hostname: "node1", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:01", IP: "192.0.2.10/24"}}, Netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}},
			{ID: "hw-2", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:02", IP: "192.0.2.11/24"}}, Netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}},
			{ID: "hw-off", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:03", IP: "192.0.2.12/24"}}},
			// No configured address (proxy DHCP, or reservation mode with
			// another DHCP server): only a lease ties a source to them.
			{ID: "hw-noip", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:04"}}, Netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}},
			{ID: "hw-lease", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:05"}}, Netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}},
			{ID: "hw-expired", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:06"}}, Netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}},
			{ID: "hw-arm", Arch: "aarch64", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:07", IP: "192.0.2.13/24"}}, Netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}},
		} {
			if err := tx.CreateHardware(h); err != nil {
				return err
			}
		}
		if err := tx.PutLease(store.Lease{MAC: "52:54:00:00:00:05", IP: "192.0.2.50", HardwareID: "hw-lease", Expires: testNow.Add(time.Hour)}); err != nil {
			return err
		}
		return tx.PutLease(store.Lease{MAC: "52:54:00:00:00:06", IP: "192.0.2.60", HardwareID: "hw-expired", Expires: testNow.Add(-time.Minute)})
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", p, diff)
	}
}

func TestScript(t *testing.T) {
	const token = "tok_0123456789abcdef"
	all := map[string]string{"hw-1": "wf-1", "hw-noip": "wf-4", "hw-lease": "wf-5", "hw-expired": "wf-6", "hw-arm": "wf-7"}
	tests := map[string]struct {
		path    string
		remote  string // default: hw-1's configured address
		opts    func(*Options)
		token   string
		live    bool
		status  int
		golden  string
		minted  int
		inBody  string
		inLog   string
		refused string // the refusal reason counted
		running map[string]string
	}{
		"agent":                 {path: "/ipxe/52:54:00:00:00:01", status: 200, golden: "agent.ipxe", minted: 1},
		"agent, hyphenated MAC": {path: "/ipxe/52-54-00-00-00-01", status: 200, golden: "agent.ipxe", minted: 1},
		"agent over TLS with a CA": {path: "/ipxe/52:54:00:00:00:01", status: 200, golden: "agent-tls.ipxe", minted: 1,
			opts: func(o *Options) {
				o.TLS, o.CABundle = true, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
			}},
		"no workflow: local disk": {path: "/ipxe/52:54:00:00:00:02", remote: "192.0.2.11:4000", status: 200, golden: "local.ipxe", minted: 1, refused: "no_workflow"},
		"netboot off: local disk": {path: "/ipxe/52:54:00:00:00:03", remote: "192.0.2.12:4000", status: 200, golden: "local.ipxe", refused: "netboot_off"},
		"unknown MAC: local disk": {path: "/ipxe/52:54:00:00:00:99", status: 200, golden: "local.ipxe", refused: "unknown_mac"},
		"wrong address: local disk, no token": {path: "/ipxe/52:54:00:00:00:01", remote: "192.0.2.99:4000", status: 200, golden: "local.ipxe",
			refused: "wrong_source", inLog: "not from 52:54:00:00:00:01's address (configured 192.0.2.10)"},
		// The hole of issue 13: an interface without a configured address
		// used to match any source, so anyone got the token.
		"no address and no lease: nobody gets a token": {path: "/ipxe/52:54:00:00:00:04", remote: "192.0.2.99:4000", status: 200, golden: "local.ipxe",
			refused: "wrong_source", inLog: "has no DHCP lease and no configured address"},
		"leased address: agent": {path: "/ipxe/52:54:00:00:00:05", remote: "192.0.2.50:4000", status: 200, minted: 1, inBody: "bm.workflow=wf-5"},
		"leased address, request from elsewhere: local disk": {path: "/ipxe/52:54:00:00:00:05", remote: "192.0.2.51:4000", status: 200, golden: "local.ipxe",
			refused: "wrong_source", inLog: "leased 192.0.2.50"},
		"expired lease: local disk": {path: "/ipxe/52:54:00:00:00:06", remote: "192.0.2.60:4000", status: 200, golden: "local.ipxe",
			refused: "wrong_source", inLog: "has no DHCP lease"},
		"v4-mapped source": {path: "/ipxe/52:54:00:00:00:01", remote: "[::ffff:192.0.2.10]:4000", status: 200, golden: "agent.ipxe", minted: 1},
		"source check off: any caller": {path: "/ipxe/52:54:00:00:00:04", remote: "198.51.100.7:4000", status: 200, minted: 1, inBody: "bm.workflow=wf-4",
			opts: func(o *Options) { o.AnySource = true }},
		"live agent: no second token": {path: "/ipxe/52:54:00:00:00:01", live: true, status: 200, golden: "local.ipxe", minted: 1,
			refused: "agent_live", inLog: "agent is alive"},
		"bad MAC":                       {path: "/ipxe/zz:54:00:00:00:01", status: 400, inBody: "MAC"},
		"short MAC":                     {path: "/ipxe/5254", status: 400, inBody: "MAC"},
		"unsafe token is not served":    {path: "/ipxe/52:54:00:00:00:01", token: "a b\nkernel evil", status: 500, minted: 1, inBody: "cannot render"},
		"workflow id unsafe is refused": {path: "/ipxe/52:54:00:00:00:01", status: 500, minted: 1, running: map[string]string{"hw-1": "wf 1"}},
		"aarch64 hardware, iPXE: the arm64 agent OS": {path: "/ipxe/52:54:00:00:00:07", remote: "192.0.2.13:4000", status: 200, golden: "agent-arm64.ipxe", minted: 1},
		"GRUB: the arm64 agent OS over GRUB's http":  {path: "/grub/52:54:00:00:00:07", remote: "192.0.2.13:4000", status: 200, golden: "agent-arm64.grub", minted: 1},
		"GRUB for x86_64 hardware: arm64 all the same, warned": {path: "/grub/52:54:00:00:00:01", status: 200, minted: 1,
			inBody: "linux (http,10.99.0.1:8080)/boot/arm64/vmlinuz", inLog: "arch is not aarch64"},
		"GRUB, no workflow: local disk": {path: "/grub/52:54:00:00:00:02", remote: "192.0.2.11:4000", status: 200, golden: "local.grub", minted: 1, refused: "no_workflow"},
		"GRUB, unknown MAC: local disk": {path: "/grub/52:54:00:00:00:99", status: 200, golden: "local.grub", refused: "unknown_mac"},
		"GRUB behind an https base: error, no script": {path: "/grub/52:54:00:00:00:07", remote: "192.0.2.13:4000", status: 500, minted: 1, inBody: "cannot render",
			opts: func(o *Options) { o.HTTPBase = "https://boot.example" }},
		"agent, second hardware running": {path: "/ipxe/52:54:00:00:00:02", remote: "192.0.2.11:4000", status: 200, golden: "agent-hw2.ipxe", minted: 1, running: map[string]string{"hw-2": "wf-2"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			opts := Options{GRPCAddr: "10.99.0.1:9090", HTTPBase: "http://10.99.0.1:8080/", AgentOSDir: t.TempDir(), Now: func() time.Time { return testNow }}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			tok := &fakeTokens{running: all, token: token, live: tc.live}
			if tc.token != "" {
				tok.token = tc.token
			}
			if tc.running != nil {
				tok.running = tc.running
			}
			var logs bytes.Buffer
			reg := prometheus.NewRegistry()
			h := New(testStore(t), tok, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg, opts)
			mux := http.NewServeMux()
			h.Register(mux)
			req := httptest.NewRequest("GET", tc.path, nil)
			req.RemoteAddr = "192.0.2.10:4000"
			if tc.remote != "" {
				req.RemoteAddr = tc.remote
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.golden != "" {
				golden(t, tc.golden, rec.Body.Bytes())
			}
			if tc.inBody != "" && !strings.Contains(rec.Body.String(), tc.inBody) {
				t.Errorf("body %q does not contain %q", rec.Body, tc.inBody)
			}
			if tc.inLog != "" && !strings.Contains(logs.String(), tc.inLog) {
				t.Errorf("log does not contain %q:\n%s", tc.inLog, logs.String())
			}
			if tok.calls != tc.minted {
				t.Errorf("tokens minted %d, want %d", tok.calls, tc.minted)
			}
			if tc.refused != "" {
				var m dto.Metric
				if err := h.refused.WithLabelValues(tc.refused).Write(&m); err != nil {
					t.Fatal(err)
				}
				if got := m.GetCounter().GetValue(); got != 1 {
					t.Errorf("provisiond_ipxe_refused_total{reason=%q} = %v, want 1", tc.refused, got)
				}
			}
			if got := rec.Header().Get("Cache-Control"); tc.status == 200 && got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
			if strings.Contains(logs.String(), tok.token) {
				t.Errorf("the token appears in the log:\n%s", logs.String())
			}
			if tc.status != 200 && strings.Contains(rec.Body.String(), tok.token) {
				t.Errorf("the token appears in an error body")
			}
		})
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot")
	if err := os.MkdirAll(filepath.Join(boot, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := bytes.Repeat([]byte("0123456789"), 1000)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, err := range []error{
		os.WriteFile(filepath.Join(boot, "vmlinuz"), kernel, 0o644),
		os.WriteFile(filepath.Join(dir, "secret"), []byte("outside"), 0o644),
		os.Symlink("../secret", filepath.Join(boot, "escape")),
		os.Chtimes(filepath.Join(boot, "vmlinuz"), mtime, mtime),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	h := New(testStore(t), &fakeTokens{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil,
		Options{AgentOSDir: boot, ImagesDir: boot, IPXEDir: "/usr/lib/ipxe"})
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	etag := fmt.Sprintf(`"%x-%x"`, mtime.UnixNano(), len(kernel))

	type result struct {
		Status  int
		Body    string
		Length  string
		ETag    string
		Range   string
		Listing bool
	}
	tests := map[string]struct {
		path    string
		headers map[string]string
		want    result
	}{
		"whole file": {path: "/boot/vmlinuz", want: result{Status: 200, Body: string(kernel), Length: "10000", ETag: etag}},
		"range": {path: "/images/vmlinuz", headers: map[string]string{"Range": "bytes=10-19"},
			want: result{Status: 206, Body: "0123456789", Length: "10", ETag: etag, Range: "bytes 10-19/10000"}},
		"if-none-match":             {path: "/images/vmlinuz", headers: map[string]string{"If-None-Match": etag}, want: result{Status: 304, ETag: etag}},
		"if-range with old etag":    {path: "/images/vmlinuz", headers: map[string]string{"Range": "bytes=0-1", "If-Range": `"old"`}, want: result{Status: 200, Body: string(kernel), Length: "10000", ETag: etag}},
		"directory: no listing":     {path: "/boot/sub", want: result{Status: 404, Body: "404 page not found\n", Length: "19"}},
		"root: no listing":          {path: "/boot/", want: result{Status: 404, Body: "404 page not found\n", Length: "19"}},
		"symlink out":               {path: "/boot/escape", want: result{Status: 404, Body: "404 page not found\n", Length: "19"}},
		"encoded traversal":         {path: "/images/..%2fsecret", want: result{Status: 400, Body: "invalid path\n", Length: "13"}},
		"missing":                   {path: "/boot/initramfs", want: result{Status: 404, Body: "404 page not found\n", Length: "19"}},
		"iPXE binary for UEFI HTTP": {path: "/ipxe/bin/does-not-exist.efi", want: result{Status: 404, Body: "404 page not found\n", Length: "19"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }() // read-only
			body, _ := io.ReadAll(resp.Body)
			got := result{Status: resp.StatusCode, Body: string(body), Length: resp.Header.Get("Content-Length"), ETag: resp.Header.Get("ETag"),
				Range: resp.Header.Get("Content-Range"), Listing: strings.Contains(string(body), "<a href")}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// The iPXE binaries of the Debian package, for UEFI HTTP boot.
	if want, err := os.ReadFile("/usr/lib/ipxe/snponly.efi"); err == nil {
		resp, err := http.Get(srv.URL + "/ipxe/bin/snponly.efi")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read; got is checked below
		if !bytes.Equal(got, want) || resp.Header.Get("Content-Type") != "application/efi" {
			t.Errorf("snponly.efi: %d bytes (want %d), Content-Type %q", len(got), len(want), resp.Header.Get("Content-Type"))
		}
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:00:00:01", "52-54-00-00-00-01", "5254.0000.0001", "", "zz:zz:zz:zz:zz:zz", "00:00:00:00:00:00:00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := ParseMAC(s)
		if err != nil {
			return
		}
		if len(mac) != 17 || strings.ToLower(mac) != mac {
			t.Fatalf("ParseMAC(%q) = %q", s, mac)
		}
		again, err := ParseMAC(mac)
		if err != nil || again != mac {
			t.Fatalf("ParseMAC(%q) = %q, %v; not stable", mac, again, err)
		}
	})
}
