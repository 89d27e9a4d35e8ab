package main

import (
	"context"
	"fmt"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
)

const testTemplate = `version: "0.1"
name: stream
global_timeout: 1800
tasks:
  - name: os
    worker: "{{.device_1}}"
    actions:
      - name: stream-image
        image: image2disk
        timeout: 600
        environment:
          IMG_URL: http://example.invalid/img.raw
          DEST_DISK: /dev/sda
`

// testToken is an admin token of the 32 bytes provisiond requires.
const testToken = "test-admin-token-0123456789abcdef"

type syncBuffer = testkit.Buffer

type runningDaemon struct {
	grpcAddr, httpAddr string
	pki                *testpki.PKI
	log                *syncBuffer
	done               chan error
	cancel             context.CancelFunc
}

// startDaemon runs provisiond in-process with TLS and a token, the way
// `provisiond --data-dir X --token-file T ...` does.
func startDaemon(t *testing.T, token string, extra ...string) *runningDaemon {
	t.Helper()
	pki := testpki.New(t)
	pki.WriteFiles(t, t.TempDir())
	return startDaemonWithPKI(t, token, pki, extra...)
}

func startDaemonWithPKI(t *testing.T, token string, pki *testpki.PKI, extra ...string) *runningDaemon {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &runningDaemon{grpcAddr: testkit.FreeTCP(t), httpAddr: testkit.FreeTCP(t), pki: pki, log: &syncBuffer{}, done: make(chan error, 1)}
	args := append([]string{
		"--data-dir", filepath.Join(dir, "data"), "--token-file", tokenFile,
		"--grpc-listen", d.grpcAddr, "--http-listen", d.httpAddr,
		"--tls-cert", pki.ServerCertFile, "--tls-key", pki.ServerKeyFile,
		"--dhcp-mode", "off", "--tftp-listen", "", "--log-format", "json",
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- run(ctx, args, func(string) string { return "" }, d.log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-d.done:
			if err != nil {
				t.Errorf("provisiond: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("provisiond did not stop within 15s")
		}
	})
	// Wait until HTTP answers: both listeners are up by then.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.httpAddr + "/healthz")
		if err == nil {
			_ = resp.Body.Close() // only the answer mattered
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("provisiond did not come up: %v\n%s", err, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func (d *runningDaemon) client(t *testing.T, cfg client.Config) (*client.Client, error) {
	t.Helper()
	cfg.Endpoint = d.grpcAddr
	if cfg.CACert == "" && !cfg.Insecure {
		cfg.CACert = d.pki.CACert
	}
	cfg.ConnectTimeout = 5 * time.Second
	c, err := client.New(context.Background(), cfg)
	if err == nil {
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("close client: %v", err)
			}
		})
	}
	return c, err
}

func TestAdminCRUDOverTLS(t *testing.T) {
	const token = "s3cret-admin-token-for-the-crud-test"
	d := startDaemon(t, token)
	c, err := d.client(t, client.Config{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	hw := &pb.Hardware{
		Id: "node-1", Hostname: "node-1",
		Interfaces: []*pb.Interface{{Mac: "AA:BB:CC:00:00:01", Ip: "10.10.0.11/24", Gateway: "10.10.0.1", NameServers: []string{"10.10.0.1"}}},
		Disks:      []string{"/dev/sda"},
		Bmc:        &pb.BMC{Driver: "ipmi", Address: "127.0.0.1", Port: 623, Username: "admin", Password: "bmc-pass"},
		Labels:     map[string]string{"rack": "r1"},
		Metadata:   `{"role": "worker"}`,
	}
	created, err := c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetBmc().GetPassword() != "" || !created.GetBmc().GetPasswordSet() {
		t.Fatalf("BMC password must be write-only: %+v", created.GetBmc())
	}
	if got := created.GetInterfaces()[0].GetMac(); got != "aa:bb:cc:00:00:01" {
		t.Fatalf("MAC not normalised: %q", got)
	}
	if created.GetMetadata() != `{"role":"worker"}` || created.GetArch() != "x86_64" {
		t.Fatalf("metadata or arch default: %q %q", created.GetMetadata(), created.GetArch())
	}

	// A second hardware with the same MAC is refused.
	_, err = c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{Id: "node-2", Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:00:01"}}}})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate MAC: %v, want AlreadyExists", err)
	}

	// Validation errors are InvalidArgument and name the field.
	for name, bad := range map[string]*pb.Hardware{
		"mac":      {Interfaces: []*pb.Interface{{Mac: "zz"}}},
		"ip":       {Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:00:09", Ip: "10.0.0.1"}}},
		"arch":     {Arch: "sparc", Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:00:09"}}},
		"bmc":      {Bmc: &pb.BMC{Driver: "telnet"}, Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:00:09"}}},
		"metadata": {Metadata: "[1,2", Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:00:09"}}},
		"hostname": {Hostname: "bad_host!", Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:00:09"}}},
		"no nics":  {},
	} {
		_, err := c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: bad})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}

	// Update keeps the stored password when none is sent.
	hw.Hostname = "node-1a"
	hw.Bmc.Password = ""
	updated, err := c.UpdateHardware(ctx, &pb.UpdateHardwareRequest{Hardware: hw})
	if err != nil {
		t.Fatal(err)
	}
	if updated.GetHostname() != "node-1a" || !updated.GetBmc().GetPasswordSet() {
		t.Fatalf("update: %+v", updated)
	}
	list, err := c.ListHardware(ctx, &pb.ListHardwareRequest{Labels: map[string]string{"rack": "r1"}})
	if err != nil || len(list.GetHardware()) != 1 {
		t.Fatalf("list by label: %v %v", list, err)
	}
	if l, _ := c.ListHardware(ctx, &pb.ListHardwareRequest{Labels: map[string]string{"rack": "r2"}}); len(l.GetHardware()) != 0 {
		t.Fatalf("label filter let through %d", len(l.GetHardware()))
	}

	// Templates: validated on the server.
	tpl, err := c.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Name: "stream", Content: testTemplate}})
	if err != nil {
		t.Fatal(err)
	}
	want := []*pb.TemplateTask{{Name: "os", Actions: []string{"stream-image"}}}
	if d := cmp.Diff(want, tpl.GetTasks(), cmpProto()); d != "" {
		t.Fatalf("tasks (-want +got):\n%s", d)
	}
	_, err = c.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Name: "bad", Content: "version: \"0.1\"\ntasks: [\n"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid template: %v, want InvalidArgument", err)
	}
	tpl.Name = "stream-v2"
	if _, err := c.UpdateTemplate(ctx, &pb.UpdateTemplateRequest{Template: tpl}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTemplate(ctx, &pb.GetTemplateRequest{Id: tpl.GetId()})
	if err != nil || got.GetName() != "stream-v2" {
		t.Fatalf("get template: %v %v", got, err)
	}
	tl, err := c.ListTemplates(ctx, &pb.ListTemplatesRequest{})
	if err != nil || len(tl.GetTemplates()) != 1 {
		t.Fatalf("list templates: %v %v", tl, err)
	}

	// Deletes, then not found.
	if _, err := c.DeleteTemplate(ctx, &pb.DeleteTemplateRequest{Id: tpl.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteHardware(ctx, &pb.DeleteHardwareRequest{Id: "node-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetHardware(ctx, &pb.GetHardwareRequest{Id: "node-1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get deleted: %v, want NotFound", err)
	}

	// Secrets never reach the log.
	if logs := d.log.String(); strings.Contains(logs, "bmc-pass") || strings.Contains(logs, token) {
		t.Fatalf("a secret reached the log:\n%s", logs)
	}
}

func TestAdminRefusesWithoutToken(t *testing.T) {
	d := startDaemon(t, testToken)
	ctx := context.Background()
	for name, cfg := range map[string]client.Config{
		"no token":    {},
		"wrong token": {Token: "wrong-token"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := d.client(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ListHardware(ctx, &pb.ListHardwareRequest{})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("got %v, want Unauthenticated", err)
			}
		})
	}
}

func TestClientErrorsSayWhy(t *testing.T) {
	d := startDaemon(t, testToken)
	tests := map[string]struct {
		cfg  client.Config
		want string
	}{
		"untrusted CA":    {client.Config{Token: testToken, CACert: d.pki.OtherCACert}, "certificate"},
		"plain to TLS":    {client.Config{Token: testToken, Endpoint: "http://"}, "tls=false"},
		"nothing listens": {client.Config{Token: testToken, Endpoint: "nothing"}, "127.0.0.1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			switch cfg.Endpoint {
			case "http://":
				cfg.Endpoint = "http://" + d.grpcAddr
			case "nothing":
				cfg.Endpoint = testkit.FreeTCP(t)
			default:
				cfg.Endpoint = d.grpcAddr
			}
			cfg.ConnectTimeout = 3 * time.Second
			_, err := client.New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestMutualTLS(t *testing.T) {
	const token = testToken
	// One CA signs the server and the client certificate.
	pki := testpki.New(t)
	pki.WriteFiles(t, t.TempDir())
	d := startDaemonWithPKI(t, token, pki, "--tls-client-ca", pki.CACertFile)
	ctx := context.Background()

	c, err := d.client(t, client.Config{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListHardware(ctx, &pb.ListHardwareRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("admin call without client certificate: %v, want Unauthenticated", err)
	}
	c2, err := d.client(t, client.Config{Token: token, ClientCert: d.pki.ClientCert, ClientKey: d.pki.ClientKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.ListHardware(ctx, &pb.ListHardwareRequest{}); err != nil {
		t.Fatalf("admin call with client certificate: %v", err)
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "provisiond.yaml")
	must(t, os.WriteFile(cfgFile, []byte("data-dir: /from/file\nlog-level: warn\nhttp-listen: \":1\"\ntoken-file: /t\n"), 0o600))
	env := map[string]string{"PROVISIOND_LOG_LEVEL": "debug", "PROVISIOND_GRPC_LISTEN": ":2"}
	c, err := parseConfig([]string{"--config", cfgFile, "--grpc-listen", ":3"}, func(k string) string { return env[k] })
	must(t, err)
	got := []string{c.DataDir, c.LogLevel.val, c.HTTPListen, c.GRPCListen}
	if d := cmp.Diff([]string{"/from/file", "debug", ":1", ":3"}, got); d != "" {
		t.Fatalf("flag > env > file (-want +got):\n%s", d)
	}

	bad := map[string]struct {
		args []string
		env  map[string]string
		file string
	}{
		"enum flag":     {args: []string{"--token-file", "/t", "--dhcp-mode", "sometimes"}},
		"enum env":      {args: []string{"--token-file", "/t"}, env: map[string]string{"PROVISIOND_LOG_FORMAT": "xml"}},
		"unknown key":   {file: "tokenfile: /t\n"},
		"no token":      {args: []string{}},
		"half TLS":      {args: []string{"--token-file", "/t", "--tls-cert", "c.pem"}},
		"bad yaml":      {file: "data-dir: [\n"},
		"stray arg":     {args: []string{"--token-file", "/t", "serve"}},
		"mtls no cert":  {args: []string{"--token-file", "/t", "--tls-client-ca", "ca.pem"}},
		"bad duration":  {args: []string{"--token-file", "/t", "--shutdown-timeout", "soon"}},
		"file enum bad": {file: "token-file: /t\ndhcp-mode: maybe\n"},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				f := filepath.Join(t.TempDir(), "c.yaml")
				must(t, os.WriteFile(f, []byte(tc.file), 0o600))
				args = append(args, "--config", f)
			}
			_, err := parseConfig(args, func(k string) string { return tc.env[k] })
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestHTTPHealthAndMetrics(t *testing.T) {
	d := startDaemon(t, testToken)
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": "go_goroutines"} {
		resp, err := http.Get("http://" + d.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read; the body is checked below
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d %.200s", path, resp.StatusCode, body)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	d := startDaemon(t, testToken)
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("run returned %v after a signal, want nil", err)
		}
		d.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown within 10s")
	}
	if !strings.Contains(d.log.String(), "provisiond stopped") {
		t.Fatalf("log lacks the stop line:\n%s", d.log.String())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func cmpProto() cmp.Option {
	return cmp.Comparer(func(a, b *pb.TemplateTask) bool {
		return a.GetName() == b.GetName() && fmt.Sprint(a.GetActions()) == fmt.Sprint(b.GetActions())
	})
}

func TestDHCPNeedsPublicIP(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	must(t, os.WriteFile(tokenFile, []byte(testToken), 0o600))
	args := []string{"--data-dir", dir, "--token-file", tokenFile, "--grpc-listen", testkit.FreeTCP(t), "--http-listen", testkit.FreeTCP(t),
		"--tftp-listen", "", "--dhcp-mode", "reservation"}
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), args, func(string) string { return "" }, io.Discard) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "--public-ip") {
			t.Fatalf("err = %v, want it to name --public-ip", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run kept going without a usable --public-ip")
	}
}
