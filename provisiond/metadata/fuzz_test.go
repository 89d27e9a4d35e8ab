package metadata

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzPaths sends arbitrary paths and X-Forwarded-For values to the full
// handler stack as machine B (10.0.0.11), directly or through a trusted
// proxy. Whatever the input: no panic, only expected status codes, and never
// machine A's user-data, hostname or keys, unless a trusted proxy named A's
// address (10.0.0.10) as the client.
func FuzzPaths(f *testing.F) {
	for _, s := range []string{
		"/latest/meta-data/", "/2009-04-04/user-data", "/latest/meta-data/public-keys/0/openssh-key",
		"/latest/meta-data/tags/instance/role", "/latest/meta-data//instance-id", "/latest/meta-data/../user-data",
		"/metadata", "/openstack/latest/meta_data.json", "/nocloud/meta-data", "/latest/meta-data/public-keys/0/",
		"/latest/meta-data/instance-id/", "/latest/%2e%2e/user-data", "/latest/meta-data/placement",
	} {
		f.Add(s, "", false)
		f.Add(s, "10.0.0.10", false)
		f.Add(s, "10.0.0.10, 10.0.0.11", true)
	}
	fx := newFixture(f, Options{TokenOptional: true})
	f.Fuzz(func(t *testing.T, path, xff string, viaProxy bool) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		remote := "10.0.0.11:4000"
		if viaProxy {
			remote = "192.0.2.8:4000"
		}
		r := &http.Request{
			Method: http.MethodGet, URL: &url.URL{Path: path}, RequestURI: path, Host: "metadata",
			RemoteAddr: remote, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		w := httptest.NewRecorder()
		fx.mux.ServeHTTP(w, r)
		switch w.Code {
		case 200, 301, 307, 308, 400, 404, 405:
		default:
			t.Fatalf("GET %q (xff %q): unexpected status %d", path, xff, w.Code)
		}
		body := w.Body.String()
		asA := false
		if viaProxy {
			if ip, _, err := fx.srv.callerIP(r); err == nil && ip.String() == "10.0.0.10" {
				asA = true
			}
		}
		if !asA && (strings.Contains(body, "hostname: a") || strings.Contains(body, "a.example") || strings.Contains(body, "AAAAC3Nza")) {
			t.Fatalf("GET %q (xff %q, proxy %v): machine A's data served: %q", path, xff, viaProxy, body)
		}
		// An EC2 leaf answer must be exactly what the tree holds.
		if w.Code == 200 && !viaProxy {
			if _, _, ok := ec2Path(path); ok {
				a := answerEC2(mustLookup(t, fx, "10.0.0.11"), path)
				if a.status != 200 || string(a.body) != body {
					t.Fatalf("GET %q: served %q, resolver says %d %q", path, body, a.status, a.body)
				}
			}
		}
	})
}

// FuzzResolve checks the meta-data tree walk on its own: every path either
// fails or lands on a node, and every directory's listing names children
// that resolve.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"", "/", "public-keys/", "public-keys/0/openssh-key", "tags/instance/role", "a//b", "placement"} {
		f.Add(s)
	}
	fx := newFixture(f, Options{TokenOptional: true})
	rec := mustLookup(f, fx, "10.0.0.10")
	root := metaTree(factsOf(rec))
	f.Fuzz(func(t *testing.T, p string) {
		n, ok := root.resolve(p)
		if !ok {
			return
		}
		if n == nil {
			t.Fatalf("resolve(%q) ok with nil node", p)
		}
		if n.children == nil {
			if strings.HasSuffix(p, "/") {
				t.Fatalf("leaf %q resolved with a trailing slash", p)
			}
			return
		}
		for _, line := range n.lines {
			name, _, _ := strings.Cut(strings.TrimSuffix(line, "/"), "=")
			if _, ok := n.children[name]; !ok {
				t.Fatalf("listing of %q names %q, which does not resolve", p, line)
			}
		}
	})
}

func mustLookup(t testing.TB, fx *fixture, ip string) record {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = ip + ":1"
	addr, _, err := fx.srv.callerIP(r)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := fx.srv.lookup(r.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// FuzzToken feeds arbitrary session-token headers to checkToken: it must
// never panic, and it may accept a token only if it is, byte for byte, the
// token the server itself mints for that binding and the expiry it carries.
func FuzzToken(f *testing.F) {
	srv := New(nil, nil, nil, Options{Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	bind := `"hw-a"|"wf-1"`
	valid := srv.makeToken(bind, time.Unix(1_800_000_060, 0))
	for _, s := range []string{valid, valid + "A", "x.y", ".", "", valid[:len(valid)-1], strings.Replace(valid, ".", "..", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if !srv.checkToken(tok, bind) {
			return
		}
		p, _, _ := strings.Cut(tok, ".")
		payload, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			t.Fatalf("accepted %q with an undecodable payload", tok)
		}
		i := strings.LastIndexByte(string(payload), '|')
		exp, err := strconv.ParseInt(string(payload[i+1:]), 10, 64)
		if err != nil {
			t.Fatalf("accepted %q with a bad expiry", tok)
		}
		if want := srv.makeToken(bind, time.Unix(exp, 0)); tok != want {
			t.Fatalf("accepted %q, which the server would spell %q", tok, want)
		}
	})
}
