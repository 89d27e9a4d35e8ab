package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
)

// withCA returns a golden script with its placeholder bm.ca (not a
// certificate, which the agent's parser refuses) replaced by a real CA.
func withCA(t *testing.T, script []byte) ([]byte, string) {
	t.Helper()
	ca := testpki.New(t).CACert
	i := bytes.Index(script, []byte("bm.ca="))
	if i < 0 {
		t.Fatal("the script has no bm.ca")
	}
	j := i + bytes.IndexByte(script[i:], ' ')
	out := append(append(append([]byte(nil), script[:i]...), "bm.ca="+base64.StdEncoding.EncodeToString([]byte(ca))...), script[j:]...)
	return out, ca
}

// TestParseScript reads the scripts provisiond's iPXE handler renders (its
// golden files), so that a change of that format breaks here too.
func TestParseScript(t *testing.T) {
	tests := map[string]struct {
		agentOS bool
		want    string // cfg.String()
		token   string
		ca      bool
	}{
		"agent.ipxe": {agentOS: true, token: "tok_0123456789abcdef",
			want: "grpc=10.99.0.1:9090 http=http://10.99.0.1:8080 hw=hw-1 workflow=wf-1 tls=false ca=false mac= token=true"},
		"agent-tls.ipxe": {agentOS: true, token: "tok_0123456789abcdef", ca: true,
			want: "grpc=10.99.0.1:9090 http=http://10.99.0.1:8080 hw=hw-1 workflow=wf-1 tls=true ca=true mac= token=true"},
		"local.ipxe":            {},
		"agent-hw2.ipxe (hw-2)": {agentOS: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			file, _, _ := strings.Cut(name, " ")
			raw, err := os.ReadFile(filepath.Join("..", "..", "provisiond", "ipxe", "testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ca {
				raw, _ = withCA(t, raw)
			}
			cfg, agentOS, err := parseScript(string(raw))
			if err != nil {
				t.Fatal(err)
			}
			if agentOS != tc.agentOS {
				t.Fatalf("agentOS = %t, want %t", agentOS, tc.agentOS)
			}
			if tc.want != "" {
				if diff := cmp.Diff(tc.want, cfg.String()); diff != "" {
					t.Errorf("config (-want +got):\n%s", diff)
				}
				if cfg.Token != tc.token || (cfg.CAPEM != nil) != tc.ca {
					t.Errorf("token %q, CA %t", cfg.Token, cfg.CAPEM != nil)
				}
			}
		})
	}
	for name, script := range map[string]string{
		"not iPXE":           "kernel http://x/vmlinuz bm.grpc=a:1 bm.hw=h bm.token=t\n",
		"no boot":            "#!ipxe\necho hello\n",
		"missing parameter":  "#!ipxe\nkernel http://x/vmlinuz bm.grpc=a:1 bm.token=t || goto failed\n",
		"kernel without URL": "#!ipxe\nkernel --name k\n",
	} {
		if _, _, err := parseScript(script); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

// TestRunBootsTheAgent serves a script over HTTP and checks the agent's
// command line and environment, with a shell script standing in for it.
func TestRunBootsTheAgent(t *testing.T) {
	dir := t.TempDir()
	golden, err := os.ReadFile("../../provisiond/ipxe/testdata/agent-tls.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	golden, wantCA := withCA(t, golden)
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Path + " from " + strings.Split(r.RemoteAddr, ":")[0]
		if _, err := w.Write(golden); err != nil {
			t.Errorf("serve script: %v", err)
		}
	}))
	defer srv.Close()
	agent := filepath.Join(dir, "agent")
	out := filepath.Join(dir, "argv")
	script := "#!/bin/sh\necho \"$* token=$AGENT_TOKEN\" >" + out + ".tmp && mv " + out + ".tmp " + out + "\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	var log bytes.Buffer
	env := map[string]string{"BOOT": "pxe"}
	go func() {
		done <- run(ctx, []string{"-url", srv.URL + "/ipxe/52:54:00:00:00:01", "-src", "127.0.0.1", "-agent", agent, "-dir", dir, "--", "--heartbeat", "1s"},
			func(k string) string { return env[k] }, &log)
	}()
	var argv []byte
	for argv == nil && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		argv, _ = os.ReadFile(out)
	}
	// plainboot stays up after the agent, as a powered-on machine.
	select {
	case err := <-done:
		t.Fatalf("plainboot returned before it was stopped: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := "--grpc 10.99.0.1:9090 --hw hw-1 --tls --ca-file " + filepath.Join(dir, "ca.pem") + " --heartbeat 1s token=tok_0123456789abcdef\n"
	if diff := cmp.Diff(want, string(argv)); diff != "" {
		t.Errorf("agent command line (-want +got):\n%s", diff)
	}
	if asked != "/ipxe/52:54:00:00:00:01 from 127.0.0.1" {
		t.Errorf("script request: %q", asked)
	}
	if strings.Contains(log.String(), "tok_0123456789abcdef") {
		t.Errorf("plainboot logged the token:\n%s", log.String())
	}
	if ca, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err != nil || string(ca) != wantCA {
		t.Errorf("CA bundle: %q, %v", ca, err)
	}
}
