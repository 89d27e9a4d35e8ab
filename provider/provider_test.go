package provider

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
	"github.com/rackform/terraform-provider-baremetal/provisiond/api"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
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
	code := m.Run()
	if err := removeLabBinaries(); err != nil {
		// Left in the temp dir: worth a line, not a failed run.
		fmt.Fprintln(os.Stderr, "provider tests:", err)
	}
	os.Exit(code)
}

// protoV6 runs the provider in the test process.
var protoV6 = map[string]func() (tfprotov6.ProviderServer, error){
	"baremetal": providerserver.NewProtocol6WithError(New("test")()),
}

// syncBuffer collects a daemon's log for inspection (secrets canary).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testDaemon is provisiond's gRPC API in the test process: a real store
// in a temporary directory, the real Admin service and token guard, over
// TLS signed by a throw-away CA, on 127.0.0.1.
type testDaemon struct {
	Endpoint string
	Token    string
	PKI      *testpki.PKI
	Store    *store.Store
	Log      *syncBuffer
	dir      string
	log      *slog.Logger
	lis      net.Listener
}

// startDaemon starts provisiond's API for one test; opts wires the
// workflow engine and BMC controller when the test needs them.
func startDaemon(t *testing.T, opts func(st *store.Store, log *slog.Logger) api.Options) *testDaemon {
	t.Helper()
	d := newDaemon(t)
	var o api.Options
	if opts != nil {
		o = opts(d.Store, d.log)
	}
	d.serve(t, o)
	return d
}

// newDaemon opens the store and the gRPC listener (so that Endpoint is
// known to what is wired before serve) and makes the secrets.
func newDaemon(t *testing.T) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "provisiond.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	logBuf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pki := testpki.New(t)
	pki.WriteFiles(t, dir)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return &testDaemon{
		Endpoint: lis.Addr().String(), Token: "admin-token-" + store.NewID(), PKI: pki, Store: st, Log: logBuf,
		dir: dir, log: log, lis: lis,
	}
}

// serve serves the Admin service with o, and the further services that
// register adds (the Agent service), until the test ends.
func (d *testDaemon) serve(t *testing.T, o api.Options, register ...func(*grpc.Server)) {
	t.Helper()
	tlsConf, err := serverTLS(d.PKI)
	if err != nil {
		t.Fatal(err)
	}
	auth := api.NewAuth(d.Token, false, d.log, nil)
	gsrv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.ChainUnaryInterceptor(auth.Unary),
		grpc.ChainStreamInterceptor(auth.Stream),
	)
	pb.RegisterAdminServer(gsrv, api.NewAdmin(d.Store, d.log, o))
	for _, r := range register {
		r(gsrv)
	}
	served := make(chan error, 1)
	go func() { served <- gsrv.Serve(d.lis) }()
	t.Cleanup(func() {
		gsrv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve gRPC: %v", err)
		}
		if t.Failed() {
			t.Logf("provisiond log:\n%s", d.Log.String())
		}
	})
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
