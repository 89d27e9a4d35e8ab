package provider

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/gobuild"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain points terraform-plugin-testing at the repository's terraform
// binary (make tools) unless TF_ACC_TERRAFORM_PATH says otherwise: this
// machine cannot download one.
func TestMain(m *testing.M) {
	env := map[string]string{"CHECKPOINT_DISABLE": "1"}
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		if p, err := filepath.Abs("../bin/terraform"); err == nil {
			if _, err := os.Stat(p); err == nil {
				env["TF_ACC_TERRAFORM_PATH"] = p
			}
		}
	}
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintln(os.Stderr, "provider tests:", err)
			os.Exit(1)
		}
	}
	// The binaries the lab tests build (gobuild) are removed when they end.
	os.Exit(gobuild.Main(m))
}

// protoV6 runs the provider in the test process.
var protoV6 = map[string]func() (tfprotov6.ProviderServer, error){
	"baremetal": providerserver.NewProtocol6WithError(New("test")()),
}

type syncBuffer = testkit.Buffer

// testDaemon is provisiond in the test process, wired by the daemon
// package exactly as the binary is: a real store in a temporary
// directory, the Admin and Agent services behind the token guard over TLS
// signed by a throw-away CA, the workflow engine and the HTTP server, on
// 127.0.0.1.
type testDaemon struct {
	Endpoint string
	HTTP     string // http://127.0.0.1:PORT
	Token    string
	PKI      *testpki.PKI
	Store    *store.Store
	Engine   *workflow.Engine
	Log      *syncBuffer
	dir      string
	log      *slog.Logger
}

// startDaemon starts provisiond for one test with the engine's timings
// made short; tune changes the configuration and opts the wiring (a
// simulated BMC with daemon.WithPower). Both may be nil.
func startDaemon(t *testing.T, tune func(*daemon.Config), opts ...daemon.Option) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	logBuf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pki := testpki.New(t)
	pki.WriteFiles(t, dir)
	tlsConf, err := serverTLS(pki)
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.Config{
		DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", PublicIP: "127.0.0.1",
		Token: "admin-token-" + store.NewID(), TLS: tlsConf, AgentCA: []byte(pki.CACert), NoSync: true,
		Workflow: workflow.Options{
			BootTimeout: time.Minute, HeartbeatTimeout: time.Minute, ActionGrace: time.Second,
			PowerAttempts: 2, PowerRetryDelay: 10 * time.Millisecond,
		},
		ShutdownWait: 5 * time.Second,
	}
	if tune != nil {
		tune(&cfg)
	}
	dd, err := daemon.New(cfg, append([]daemon.Option{daemon.WithLogger(log)}, opts...)...)
	if err != nil {
		t.Fatalf("provisiond: %v", err)
	}
	d := &testDaemon{
		Endpoint: dd.GRPCAddr(), HTTP: "http://" + dd.HTTPAddr(), Token: cfg.Token, PKI: pki,
		Store: dd.Store(), Engine: dd.Engine(), Log: logBuf, dir: dir, log: log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- dd.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("provisiond: %v", err)
		}
		if t.Failed() {
			t.Logf("provisiond log:\n%s", d.Log.String())
		}
	})
	return d
}

// ProviderConfig is the provider block that reaches this daemon.
func (d *testDaemon) ProviderConfig() string {
	return fmt.Sprintf(`
provider "baremetal" {
  endpoint = %q
  token    = %q
  ca_cert  = file(%q)
}
`, d.Endpoint, d.Token, d.PKI.CACertFile)
}

// preCheck skips acceptance tests that cannot run here.
func preCheck(t *testing.T) func() {
	return func() {
		if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
			t.Skip("no terraform binary: run `make tools` or set TF_ACC_TERRAFORM_PATH")
		}
	}
}

// requireAcc skips before starting the daemon when acceptance tests are off.
func requireAcc(t *testing.T) {
	t.Helper()
	if os.Getenv(resource.EnvTfAcc) == "" {
		t.Skip("acceptance test: set TF_ACC=1 (make testacc)")
	}
}

// hcl joins configuration fragments.
func hcl(parts ...string) string { return strings.Join(parts, "\n") }

// mustHardware reads hardware straight from the store.
func (d *testDaemon) mustHardware(t *testing.T, id string) store.Hardware {
	t.Helper()
	h, err := d.Store.GetHardware(context.Background(), id)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return h
}
func serverTLS(p *testpki.PKI) (*tls.Config, error) {
	pair, err := tls.X509KeyPair([]byte(p.ServerCert), []byte(p.ServerKey))
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}, nil
}
