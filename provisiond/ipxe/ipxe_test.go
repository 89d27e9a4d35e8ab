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

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeTokens stands in for the workflow engine.
type fakeTokens struct {
	running map[string]string // hardware id → workflow id
	token   string
	calls   int
}

func (f *fakeTokens) MintAgentToken(_ context.Context, hw string) (string, string, error) {
	f.calls++
	wf, ok := f.running[hw]
	if !ok {
		return "", "", fmt.Errorf("hardware %s: %w", hw, ErrNoWorkflow)
	}
	return wf, f.token, nil
}

func testStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	err = st.Update(context.Background(), func(tx *store.Tx) error {
		for _, h := range []store.Hardware{
			{ID: "hw-1", Hostname: "node1", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:01", IP: "192.0.2.10/24"}}, Netboot: store.Netboot{AllowPXE: true}},
			{ID: "hw-2", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:02", IP: "192.0.2.11/24"}}, Netboot: store.Netboot{AllowPXE: true}},
			{ID: "hw-off", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:03", IP: "192.0.2.12/24"}}},
		} {
			if err := tx.CreateHardware(h); err != nil {
				return err
			}
		}
		return nil
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
	tests := map[string]struct {
		path    string
		remote  string
		opts    func(*Options)
		token   string
		status  int
		golden  string
		minted  int
		inBody  string
		running map[string]string
	}{
		"agent":                 {path: "/ipxe/52:54:00:00:00:01", status: 200, golden: "agent.ipxe", minted: 1},
		"agent, hyphenated MAC": {path: "/ipxe/52-54-00-00-00-01", status: 200, golden: "agent.ipxe", minted: 1},
		"agent over TLS with a CA": {path: "/ipxe/52:54:00:00:00:01", status: 200, golden: "agent-tls.ipxe", minted: 1,
			opts: func(o *Options) {
				o.TLS, o.CABundle = true, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
			}},
		"no workflow: local disk":     {path: "/ipxe/52:54:00:00:00:02", status: 200, golden: "local-no-workflow.ipxe", minted: 1},
		"netboot off: local disk":     {path: "/ipxe/52:54:00:00:00:03", status: 200, golden: "local-netboot-off.ipxe"},
		"unknown MAC: local disk":     {path: "/ipxe/52:54:00:00:00:99", status: 200, golden: "local-unknown.ipxe"},
		"source check, right address": {path: "/ipxe/52:54:00:00:00:01", remote: "192.0.2.10:4000", status: 200, golden: "agent.ipxe", minted: 1, opts: func(o *Options) { o.SourceCheck = true }},
		"source check, wrong address: local disk, no token": {path: "/ipxe/52:54:00:00:00:01", remote: "192.0.2.99:4000", status: 200, golden: "local-source.ipxe",
			opts: func(o *Options) { o.SourceCheck = true }},
		"bad MAC":                        {path: "/ipxe/zz:54:00:00:00:01", status: 400, inBody: "MAC"},
		"short MAC":                      {path: "/ipxe/5254", status: 400, inBody: "MAC"},
		"unsafe token is not served":     {path: "/ipxe/52:54:00:00:00:01", token: "a b\nkernel evil", status: 500, minted: 1, inBody: "cannot render"},
		"workflow id unsafe is refused":  {path: "/ipxe/52:54:00:00:00:01", status: 500, minted: 1, running: map[string]string{"hw-1": "wf 1"}},
		"agent, second hardware running": {path: "/ipxe/52:54:00:00:00:02", status: 200, golden: "agent-hw2.ipxe", minted: 1, running: map[string]string{"hw-2": "wf-2"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			opts := Options{GRPCAddr: "10.99.0.1:9090", HTTPBase: "http://10.99.0.1:8080/", AgentOSDir: t.TempDir()}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			tok := &fakeTokens{running: map[string]string{"hw-1": "wf-1"}, token: token}
			if tc.token != "" {
				tok.token = tc.token
			}
			if tc.running != nil {
				tok.running = tc.running
			}
			var logs bytes.Buffer
			h := New(testStore(t), tok, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), prometheus.NewRegistry(), opts)
			mux := http.NewServeMux()
			h.Register(mux)
			req := httptest.NewRequest("GET", tc.path, nil)
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
			if tok.calls != tc.minted {
				t.Errorf("tokens minted %d, want %d", tok.calls, tc.minted)
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
