package main

import (
	"context"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runUntilStore runs provisiond with a data dir that cannot be created,
// so run gets through its checks and start-up warnings and fails at the
// store, before anything listens. It returns the log and run's error.
func runUntilStore(t *testing.T, token string, mode os.FileMode, extra ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	must(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	must(t, os.Chmod(tokenFile, mode))
	blocker := filepath.Join(dir, "file")
	must(t, os.WriteFile(blocker, nil, 0o600))
	args := append([]string{"--data-dir", filepath.Join(blocker, "data"), "--token-file", tokenFile,
		"--dhcp-mode", "off", "--tftp-listen", "", "--grpc-listen", "127.0.0.1:1", "--http-listen", "127.0.0.1:1"}, extra...)
	log := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := run(ctx, args, func(string) string { return "" }, log)
	return log.String(), err
}

// TestPlainTextWarning is issue 13 item 6: without TLS on an address other
// hosts reach, tokens and user-data cross the wire in clear, and the start
// line's tls=false was the only hint.
func TestPlainTextWarning(t *testing.T) {
	pki := testpki.New(t)
	pki.WriteFiles(t, t.TempDir())
	tls := []string{"--tls-cert", pki.ServerCertFile, "--tls-key", pki.ServerKeyFile}
	for name, tc := range map[string]struct {
		listen string
		tls    bool
		warn   bool
	}{
		"all interfaces":      {listen: ":7777", warn: true},
		"all IPv4":            {listen: "0.0.0.0:7777", warn: true},
		"all IPv6":            {listen: "[::]:7777", warn: true},
		"an address":          {listen: "192.0.2.1:7777", warn: true},
		"a host name":         {listen: "provisiond.example:7777", warn: true},
		"loopback":            {listen: "127.0.0.1:7777"},
		"IPv6 loopback":       {listen: "[::1]:7777"},
		"localhost":           {listen: "localhost:7777"},
		"TLS, all interfaces": {listen: ":7777", tls: true},
	} {
		t.Run(name, func(t *testing.T) {
			args := []string{"--grpc-listen", tc.listen}
			if tc.tls {
				args = append(args, tls...)
			}
			log, err := runUntilStore(t, testToken, 0o600, args...)
			if err == nil || !strings.Contains(err.Error(), "store") {
				t.Fatalf("run: %v, want the store error\n%s", err, log)
			}
			var warns []string
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "level=WARN") && strings.Contains(l, "plain text") {
					warns = append(warns, l)
				}
			}
			if !tc.warn {
				if len(warns) > 0 {
					t.Fatalf("warned: %s", warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Fatalf("want one plain-text WARN line, got %d:\n%s", len(warns), log)
			}
			for _, want := range []string{"admin token", "agent tokens", "user-data", "--tls-cert", "--tls-key", "--tls-agent-ca", tc.listen} {
				if !strings.Contains(warns[0], want) {
					t.Errorf("warning lacks %q: %s", want, warns[0])
				}
			}
		})
	}
}

// TestShortTokenRefused: an admin token under 32 bytes is guessable;
// provisiond refuses to start and says how to make a good one.
func TestShortTokenRefused(t *testing.T) {
	log, err := runUntilStore(t, "short-token", 0o600)
	if err == nil || !strings.Contains(err.Error(), "at least 32") || !strings.Contains(err.Error(), "head -c 32 /dev/urandom | base64 >") {
		t.Fatalf("run: %v, want a refusal of the 11-byte token saying how to make one\n%s", err, log)
	}
	if strings.Contains(err.Error()+log, "short-token") {
		t.Errorf("the token itself shows in the error or log: %v\n%s", err, log)
	}
}

// TestTokenFileModeWarns: a token file readable by group or others is
// the admin token handed to them.
func TestTokenFileModeWarns(t *testing.T) {
	for mode, warn := range map[os.FileMode]bool{0o600: false, 0o400: false, 0o640: true, 0o604: true} {
		t.Run(mode.String(), func(t *testing.T) {
			log, _ := runUntilStore(t, testToken, mode)
			if got := strings.Contains(log, "token file is readable by group or others"); got != warn {
				t.Errorf("mode %v: warned=%v, want %v\n%s", mode, got, warn, log)
			}
		})
	}
}

// TestMetricsListen: with --metrics-listen, /metrics is served there and
// no longer on the machine-facing HTTP port.
func TestMetricsListen(t *testing.T) {
	maddr := testkit.FreeTCP(t)
	d := startDaemon(t, testToken, "--metrics-listen", maddr)
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read; checked by the caller
		return resp.StatusCode, string(body)
	}
	if code, body := get("http://" + maddr + "/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics listener: %d %.200s", code, body)
	}
	if code, _ := get("http://" + d.httpAddr + "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on --http-listen: %d, want 404", code)
	}
	if code, _ := get("http://" + d.httpAddr + "/healthz"); code != 200 {
		t.Errorf("/healthz on --http-listen: %d", code)
	}
}

// TestHTTPServerTimeouts: slow or idle clients cannot hold connections
// forever, while slow downloads of large images still finish.
func TestHTTPServerTimeouts(t *testing.T) {
	s := daemon.NewHTTPServer(http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.IdleTimeout <= 0 {
		t.Errorf("timeouts: header %v, read %v, idle %v; want all set", s.ReadHeaderTimeout, s.ReadTimeout, s.IdleTimeout)
	}
	if s.WriteTimeout != 0 {
		t.Errorf("WriteTimeout %v would cut off image downloads to slow machines", s.WriteTimeout)
	}
}
