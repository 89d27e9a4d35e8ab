// Command provisiond is the bare-metal provisioner: it holds the state,
// serves DHCP, TFTP, iPXE scripts, the agent OS, images and metadata,
// drives BMCs and runs workflows. The Terraform provider talks to it over
// gRPC. See the README for the flags.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/provisiond/api"
	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc"
	"github.com/rackform/terraform-provider-baremetal/provisiond/dhcp"
	"github.com/rackform/terraform-provider-baremetal/provisiond/ipxe"
	"github.com/rackform/terraform-provider-baremetal/provisiond/metadata"
	"github.com/rackform/terraform-provider-baremetal/provisiond/ra"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/tftp"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

// tokens adapts the engine's "no running workflow" to the ipxe package's.
type tokens struct{ eng *workflow.Engine }

func (t tokens) MintAgentToken(ctx context.Context, hardwareID string) (string, string, error) {
	id, tok, err := t.eng.MintAgentToken(ctx, hardwareID)
	if errors.Is(err, workflow.ErrNotReady) {
		return "", "", fmt.Errorf("%w: %v", ipxe.ErrNoWorkflow, err)
	}
	return id, tok, err
}

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "provisiond:", err)
		os.Exit(1)
	}
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel.val))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat.val == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// readSecret reads a secret file: trimmed, non-empty.
func readSecret(path, what string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

func serverTLS(c *config) (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if c.TLSClientCA != "" {
		raw, err := os.ReadFile(c.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("read TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw) {
			return nil, fmt.Errorf("TLS client CA %s: no PEM certificate found", c.TLSClientCA)
		}
		// Agents authenticate with their workflow token and carry no
		// certificate; admin calls are checked for one by api.Auth.
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// maxAgentCA bounds the CA that rides on the kernel command line: x86
// kernels take 2048 bytes in all, and base64 grows it by a third. An ECDSA
// CA certificate (~600 bytes of PEM) fits; a 4096-bit RSA one does not.
const maxAgentCA = 1200

// loadAgentCA reads --tls-agent-ca: the agent OS has no system roots, so
// with TLS it can verify provisiond only against this.
func loadAgentCA(c *config, log *slog.Logger) ([]byte, error) {
	if c.TLSAgentCA == "" {
		if c.TLSCert != "" && c.PublicIP != "" {
			log.Warn("TLS without --tls-agent-ca: agents of network-booted machines cannot verify provisiond and will not connect")
		}
		return nil, nil
	}
	raw, err := os.ReadFile(c.TLSAgentCA)
	if err != nil {
		return nil, fmt.Errorf("read --tls-agent-ca: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("--tls-agent-ca %s: no PEM certificate found", c.TLSAgentCA)
	}
	if len(raw) > maxAgentCA {
		return nil, fmt.Errorf("--tls-agent-ca %s is %d bytes; the kernel command line takes at most %d: use a single ECDSA CA certificate", c.TLSAgentCA, len(raw), maxAgentCA)
	}
	return raw, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (err error) {
	c, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
	token, err := readSecret(c.TokenFile, "token file")
	if err != nil {
		return err
	}
	tlsConf, err := serverTLS(c)
	if err != nil {
		return err
	}

	st, err := store.Open(filepath.Join(c.DataDir, "provisiond.db"), store.Options{})
	if err != nil {
		return err
	}
	// The store was written to: a failing close is reported like any
	// other error on the way out.
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	auth := api.NewAuth(token, c.TLSClientCA != "", log)
	gopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(auth.Unary),
		grpc.ChainStreamInterceptor(auth.Stream),
	}
	if tlsConf != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	// DHCP hands out our address as server and boot host: check it before
	// anything listens, so a bad flag leaves nothing running.
	var serverIP netip.Addr
	if c.DHCPMode.val != "off" {
		serverIP, err = netip.ParseAddr(c.PublicIP)
		if err != nil || !serverIP.Is4() {
			return fmt.Errorf("--public-ip %q: DHCP needs the IPv4 address machines reach provisiond at", c.PublicIP)
		}
	}
	// Where machines reach us: the public IP with our listeners' ports.
	publicURL, grpcAddr := "", ""
	if c.PublicIP != "" {
		_, hp, _ := net.SplitHostPort(c.HTTPListen)
		_, gp, _ := net.SplitHostPort(c.GRPCListen)
		publicURL = "http://" + net.JoinHostPort(c.PublicIP, hp)
		grpcAddr = net.JoinHostPort(c.PublicIP, gp)
	}
	bmcMgr := bmc.NewManager(st, log, reg, bmc.Options{
		Timeout: c.BMCTimeout, Workers: c.BMCWorkers, PollInterval: c.PowerPoll, IPMICipherSuite: c.IPMICipherSuite,
	})
	eng := workflow.New(st, log, reg, bmcMgr, workflow.Options{
		PublicURL: publicURL, ImagesURL: publicURL + "/images", MetadataURL: publicURL + "/metadata",
		BootTimeout: c.BootTimeout, HeartbeatTimeout: c.HeartbeatTimeout,
	})

	gsrv := grpc.NewServer(gopts...)
	pb.RegisterAdminServer(gsrv, api.NewAdmin(st, log, api.Options{Machines: eng, Power: bmcMgr}))
	pb.RegisterAgentServer(gsrv, api.NewAgent(eng, log))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gsrv, hs)

	mux := http.NewServeMux()
	var proxies []string
	if c.TrustedProxies != "" {
		proxies = strings.Split(c.TrustedProxies, ",")
	}
	trusted, err := metadata.ParseTrustedProxies(proxies)
	if err != nil {
		return fmt.Errorf("parse --trusted-proxies: %w", err)
	}
	metadata.New(st, log, reg, metadata.Options{TrustedProxies: trusted, TokenOptional: !c.MetadataRequireToken}).Register(mux)
	agentCA, err := loadAgentCA(c, log)
	if err != nil {
		return err
	}
	ipxe.New(st, tokens{eng}, log, reg, ipxe.Options{
		GRPCAddr: grpcAddr, HTTPBase: publicURL, TLS: tlsConf != nil, CABundle: agentCA,
		AgentOSDir: c.AgentOSDir, Kernel: "vmlinuz", Initrd: "initramfs",
		ImagesDir: c.ImagesDir, IPXEDir: c.IPXEDir, SourceCheck: c.IPXESourceCheck,
	}).Register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := st.View(r.Context(), func(*store.Tx) error { return nil }); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	glis, err := net.Listen("tcp", c.GRPCListen)
	if err != nil {
		return fmt.Errorf("listen gRPC on %s: %w", c.GRPCListen, err)
	}
	hlis, err := net.Listen("tcp", c.HTTPListen)
	if err != nil {
		_ = glis.Close() // never served: the listen error is the news
		return fmt.Errorf("listen HTTP on %s: %w", c.HTTPListen, err)
	}
	log.Info("provisiond starting", "version", version, "grpc", glis.Addr().String(), "http", hlis.Addr().String(),
		"tls", tlsConf != nil, "mtls", c.TLSClientCA != "", "data_dir", c.DataDir)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return eng.Serve(gctx) })
	g.Go(func() error { return bmcMgr.Serve(gctx) })
	if c.DHCPMode.val != "off" {
		srv := dhcp.New(st, log, reg, dhcp.Options{
			Mode: c.DHCPMode.val, Interface: c.DHCPIface, ServerIP: serverIP, HTTPBase: publicURL,
			LeaseTime: c.DHCPLeaseTime, Domain: c.DHCPDomain, UserClass: "baremetal",
		})
		g.Go(func() error { return srv.Serve(gctx) })
	}
	switch {
	case !c.IPv6RA || c.DHCPMode.val == "off":
	case c.DHCPIface == "":
		log.Info("not answering IPv6 router solicitations: --dhcp-interface names no interface; iPXE may wait ~16 s for IPv6 router discovery")
	default:
		resp := ra.New(log, reg, ra.Options{Interface: c.DHCPIface})
		g.Go(func() error {
			// Machines still boot without it, only slower, so a host where
			// it cannot run (IPv6 disabled, say) keeps serving.
			if err := resp.Serve(gctx); err != nil {
				log.Warn("not answering IPv6 router solicitations; iPXE may wait ~16 s for IPv6 router discovery (--ipv6-ra=false silences this)", "err", err)
			}
			return nil
		})
	}
	if c.TFTPListen != "" {
		srv := tftp.New(log, reg, tftp.Options{Root: c.IPXEDir, Listen: c.TFTPListen})
		g.Go(func() error { return srv.Serve(gctx) })
	}
	g.Go(func() error {
		if err := gsrv.Serve(glis); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := hsrv.Serve(hlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("provisiond stopping")
		hs.Shutdown()
		sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownWait)
		defer cancel()
		stopped := make(chan struct{})
		go func() { gsrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			gsrv.Stop()
		}
		return hsrv.Shutdown(sctx)
	})
	err = g.Wait()
	if ctx.Err() != nil && err == nil {
		log.Info("provisiond stopped")
	}
	return err
}
