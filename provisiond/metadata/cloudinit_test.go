package metadata

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// clientFrom returns an HTTP client whose connections leave from src (a
// 127.0.0.0/8 address), so the server sees a real source address.
func clientFrom(t testing.TB, src string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t testing.TB, c *http.Client, u string, h map[string]string) (int, string) {
	t.Helper()
	return call(t, c, http.MethodGet, u, h)
}

func call(t testing.TB, c *http.Client, method, u string, h map[string]string) (int, string) {
	t.Helper()
	r, err := http.NewRequestWithContext(context.Background(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		r.Header.Set(k, v)
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer func() { _ = resp.Body.Close() }() // read-only; ReadAll's error is checked
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp.StatusCode, string(b)
}

// ec2Crawler does what cloud-init's Ec2 datasource does against a metadata
// service, following its source:
//
//   - cloudinit/sources/DataSourceEc2.py (canonical/cloud-init):
//     wait_for_metadata_service() GETs <url>/2009-04-04/meta-data/instance-id
//     (min_metadata_version) when the platform is not AWS/Aliyun; on those
//     (IDMSV2_SUPPORTED_CLOUD_PLATFORMS) it first PUTs <url>/latest/api/token
//     with "X-aws-ec2-metadata-token-ttl-seconds: 21600" and sends the token
//     as "X-aws-ec2-metadata-token" on every later request.
//     get_metadata_api_version() then GETs <url>/<v>/meta-data/instance-id
//     for v in extended_metadata_versions ("2021-03-23", "2018-09-24",
//     "2016-09-02") and falls back to 2009-04-04 when none answers 200.
//     crawl_metadata() fetches user-data, then the meta-data tree.
//   - cloudinit/sources/helpers/ec2.py: get_instance_userdata() GETs
//     <url>/<v>/user-data and treats 404 as "no user-data"
//     (SKIP_USERDATA_CODES); get_instance_metadata() GETs <url>/<v>/meta-data/
//     (explicit trailing slash) and MetadataMaterializer walks it: each
//     listing line ending in "/" is a child fetched as <base><name>/; any
//     other line is a leaf, except "N=name" with integer N, which becomes a
//     fetch of <base>N/openssh-key stored under "name" (the public-keys
//     form); "security-credentials" is skipped. MetadataLeafDecoder turns a
//     leaf into a JSON object if it looks like one, a list of lines if it
//     contains "\n", else a string.
//   - doc/rtd/reference/datasources/ec2.rst: the listing of
//     /2009-04-04/meta-data/ and metadata_urls selection by a 200 for
//     <url>/<version>/meta-data/instance-id.
type ec2Crawler struct {
	t     *testing.T
	c     *http.Client
	base  string
	token string
	log   []string // "METHOD path code", in order
}

func (cr *ec2Crawler) fetch(method, u string, hdr map[string]string) (int, string) {
	h := map[string]string{}
	for k, v := range hdr {
		h[k] = v
	}
	if cr.token != "" {
		h[TokenHeader] = cr.token
	}
	code, body := call(cr.t, cr.c, method, u, h)
	p, _ := url.Parse(u)
	cr.log = append(cr.log, method+" "+p.Path+" "+strconv.Itoa(code))
	return code, body
}

// crawl returns the api version, the raw user-data and the materialized
// meta-data, as cloud-init's crawl_metadata does.
func (cr *ec2Crawler) crawl(imdsv2 bool) (string, string, map[string]any) {
	t := cr.t
	if imdsv2 {
		code, tok := cr.fetch(http.MethodPut, cr.base+"/latest/api/token", map[string]string{TokenTTLHeader: "21600"})
		if code != 200 || tok == "" {
			t.Fatalf("token PUT: %d %q", code, tok)
		}
		cr.token = tok
	} else if code, _ := cr.fetch(http.MethodGet, cr.base+"/2009-04-04/meta-data/instance-id", nil); code != 200 {
		t.Fatalf("wait_for_metadata_service: instance-id answered %d", code)
	}
	version := "2009-04-04"
	for _, v := range []string{"2021-03-23", "2018-09-24", "2016-09-02"} {
		if code, _ := cr.fetch(http.MethodGet, cr.base+"/"+v+"/meta-data/instance-id", nil); code == 200 {
			version = v
			break
		}
	}
	code, ud := cr.fetch(http.MethodGet, cr.base+"/"+version+"/user-data", nil)
	switch code {
	case 200:
	case 404:
		ud = ""
	default:
		t.Fatalf("user-data: %d", code)
	}
	mdURL := cr.base + "/" + version + "/meta-data/"
	return version, ud, cr.materialize(mdURL)
}

func (cr *ec2Crawler) materialize(base string) map[string]any {
	code, blob := cr.fetch(http.MethodGet, base, nil)
	if code != 200 {
		cr.t.Fatalf("listing %s: %d", base, code)
	}
	out := map[string]any{}
	leaves := map[string]string{} // field name -> resource
	var children []string
	for _, line := range strings.Split(blob, "\n") {
		line = strings.TrimSpace(line)
		name := strings.TrimRight(line, "/")
		if line == "" || name == "" || name == "security-credentials" {
			continue
		}
		if strings.HasSuffix(line, "/") {
			children = append(children, name)
			continue
		}
		resource := name
		if ident, sub, ok := strings.Cut(line, "="); ok {
			if n, err := strconv.Atoi(ident); err == nil {
				resource, name = strconv.Itoa(n)+"/openssh-key", sub
			}
		}
		leaves[name] = resource
	}
	for _, c := range children {
		out[c] = cr.materialize(base + url.PathEscape(c) + "/")
	}
	for field, res := range leaves {
		code, blob := cr.fetch(http.MethodGet, base+res, nil)
		if code != 200 {
			cr.t.Fatalf("leaf %s%s: %d", base, res, code)
		}
		switch {
		case strings.Contains(blob, "\n"):
			out[field] = strings.Split(strings.TrimRight(blob, "\n"), "\n")
		case strings.HasPrefix(strings.TrimSpace(blob), "{"):
			cr.t.Errorf("leaf %s looks like JSON; cloud-init would decode it: %q", field, blob)
		default:
			out[field] = blob
		}
	}
	return out
}

func TestCloudInitEC2Crawl(t *testing.T) {
	for _, imdsv2 := range []bool{false, true} {
		t.Run("imdsv2="+strconv.FormatBool(imdsv2), func(t *testing.T) {
			f := newFixture(t, Options{TokenOptional: !imdsv2})
			err := f.st.Update(context.Background(), func(tx *store.Tx) error {
				h, err := tx.Hardware("hw-a")
				if err != nil {
					return err
				}
				h.Interfaces[0].IP = "127.0.0.21/8"
				return tx.UpdateHardware(h)
			})
			if err != nil {
				t.Fatal(err)
			}
			f.now = time.Now() // real clock: tokens cross a real network
			srv := httptest.NewServer(f.mux)
			defer srv.Close()
			cr := &ec2Crawler{t: t, c: clientFrom(t, "127.0.0.21"), base: srv.URL}
			version, ud, md := cr.crawl(imdsv2)

			if version != "2009-04-04" {
				t.Errorf("api version %q, want the 2009-04-04 fallback", version)
			}
			if ud != userDataA {
				t.Errorf("user-data %q, want %q", ud, userDataA)
			}
			want := map[string]any{
				"hostname": "a.example", "instance-id": "hw-a", "local-hostname": "a.example",
				"local-ipv4": "127.0.0.21", "mac": "52:54:00:00:00:0a", "public-ipv4": "203.0.113.10",
				"placement": map[string]any{"availability-zone": "rack1"},
				"public-keys": map[string]any{
					"key-0": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a@x",
					"key-1": "ssh-rsa AAAAB3NzaC1yc2E b@y",
				},
				"tags": map[string]any{"instance": map[string]any{
					"availability-zone": "rack1", "public-ipv4": "203.0.113.10", "role": "db",
				}},
			}
			if diff := cmp.Diff(want, md); diff != "" {
				t.Errorf("materialized meta-data (-want +got):\n%s", diff)
			}
			// cloud-init's datasource reads these keys by name.
			if md["instance-id"] != "hw-a" || md["placement"].(map[string]any)["availability-zone"] != "rack1" {
				t.Errorf("get_instance_id / availability_zone would fail: %v", md)
			}
			for _, l := range cr.log {
				if strings.HasSuffix(l, " 401") || strings.HasSuffix(l, " 500") {
					t.Errorf("request refused during the crawl: %s", l)
				}
			}
			t.Logf("cloud-init crawl: %d requests: %s", len(cr.log), strings.Join(cr.log, "; "))
		})
	}
}
