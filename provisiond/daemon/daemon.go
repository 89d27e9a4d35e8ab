// Package daemon wires provisiond: the store, the BMC manager, the
// workflow engine, the gRPC API, the HTTP server (iPXE scripts, agent OS,
// images, metadata, health, metrics), DHCP, the IPv6 RA responder, TFTP
// and retention. provisiond's main turns flags, environment and YAML into
// a Config; tests build the same daemon in process with New and options
// (a fake BMC, a clock, listeners of their own), so what they test is what
// ships.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
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

// Config is provisiond's configuration with every file already read:
// secrets and certificates are values here, never paths.
type Config struct {
	// DataDir holds provisiond.db.
	DataDir string
	// GRPCListen, HTTPListen and MetricsListen are listen addresses; an
	// empty MetricsListen serves /metrics on the HTTP listener. Listeners
	// given with WithListeners take precedence.
	GRPCListen, HTTPListen, MetricsListen string
	// Token is the admin bearer token.
	Token string
	// TLS, when set, serves the gRPC API over TLS; RequireClientCert makes
	// admin calls present a certificate that verified against its
	// ClientCAs.
	TLS               *tls.Config
	RequireClientCert bool
	// AgentCA is the PEM the agent OS trusts for provisiond's certificate.
	AgentCA []byte
	// SecretsKey seals secret store fields (nil: plain).
	SecretsKey []byte
	// NoSync turns off fsync in the store: tests only.
	NoSync bool

	// PublicIP is the address machines reach provisiond at; PublicHTTP and
	// PublicGRPC override the URL and address built from it and the
	// listeners' ports (tests whose machines reach loopback).
	PublicIP, PublicHTTP, PublicGRPC string
	// DHCPMode is dhcp.ModeReservation, dhcp.ModeProxy or dhcp.ModeOff.
	DHCPMode      dhcp.Mode
	DHCPInterface string
	DHCPLeaseTime time.Duration
	DHCPDomain    string
	// IPv6RA answers router solicitations on DHCPInterface.
	IPv6RA bool
	// TFTPListen serves the iPXE binaries (empty: off).
	TFTPListen string
	// IPXEDir, AgentOSDir and ImagesDir are the served directories.
	IPXEDir, AgentOSDir, ImagesDir string
	// EFIARM64Binary is the boot loader of arm64 UEFI PXE clients: a name
	// in IPXEDir, or a path (with a '/') served under its base name
	// (empty: snp-arm64.efi).
	EFIARM64Binary string
	// IPXEAnySource mints agent tokens for any caller (labs only).
	IPXEAnySource bool

	TrustedProxies []netip.Prefix
	// MetadataTokenOptional serves user-data and /metadata to plain GETs;
	// false requires an IMDSv2-style session token.
	MetadataTokenOptional bool

	BMC      bmc.Options
	Workflow workflow.Options
	// Retention deletes terminal workflows older than this (0: never).
	Retention time.Duration
	// ShutdownWait bounds a graceful stop.
	ShutdownWait time.Duration

	// Version is reported in the start line.
	Version string
}

// Option changes how New builds the daemon.
type Option func(*options)

type options struct {
	log     *slog.Logger
	power   workflow.Power
	clock   func() time.Time
	grpcLis net.Listener
	httpLis net.Listener
}

// WithLogger logs to log [discard].
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// WithPower drives BMCs through p instead of bmclib (a fake in tests), for
// the workflow engine and the Admin API's power calls alike; the BMC
// manager's power poll still reads through bmclib.
func WithPower(p workflow.Power) Option { return func(o *options) { o.power = p } }

// WithClock is the workflow engine's clock [time.Now].
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// WithListeners serves gRPC and HTTP on listeners the caller opened (nil
// keeps the Config's address). The daemon closes them.
func WithListeners(grpcLis, httpLis net.Listener) Option {
	return func(o *options) { o.grpcLis, o.httpLis = grpcLis, httpLis }
}

// Daemon is a wired provisiond. Create it with New, run it with Serve.
type Daemon struct {
	cfg Config
	log *slog.Logger

	st     *store.Store
	bmc    *bmc.Manager
	eng    *workflow.Engine
	ret    *workflow.Retention
	gsrv   *grpc.Server
	health *health.Server
	hsrv   *http.Server
	msrv   *http.Server
	dhcp   *dhcp.Server
	ra     *ra.Responder
	tftp   *tftp.Server

	glis, hlis, mlis net.Listener
}

// New opens and checks the store, builds every service and opens the
// listeners, so that a bad store or a taken port is an error here, before
// anything serves. Close releases what New took when Serve is not called.
func New(cfg Config, opts ...Option) (d *Daemon, err error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	log := o.log
	if cfg.DHCPMode == "" {
		cfg.DHCPMode = dhcp.ModeOff
	}
	if cfg.ShutdownWait <= 0 {
		cfg.ShutdownWait = 10 * time.Second
	}
	built := &Daemon{cfg: cfg, log: log}
	d = built
	defer func() {
		if err != nil {
			_ = built.Close() // the error that stopped New is the news
		}
	}()

	// DHCP hands out our address as server and boot host: check it before
	// anything is opened.
	var serverIP netip.Addr
	if cfg.DHCPMode != dhcp.ModeOff {
		serverIP, err = netip.ParseAddr(cfg.PublicIP)
		if err != nil || !serverIP.Is4() {
			return nil, fmt.Errorf("--public-ip %q: DHCP needs the IPv4 address machines reach provisiond at", cfg.PublicIP)
		}
	}

	// The store is checked before anything listens: a damaged or empty
	// file stops provisiond here, with its path, not later in a panic.
	d.st, err = store.Open(filepath.Join(cfg.DataDir, "provisiond.db"), store.Options{SecretsKey: cfg.SecretsKey, Log: log, NoSync: cfg.NoSync})
	if err != nil {
		return nil, err
	}
	rep := d.st.OpenReport()
	log.Info("store checked", "path", d.st.Path(), "records", rep.Records, "page_check", rep.PageCheck.Round(time.Millisecond),
		"decode", rep.Decode.Round(time.Millisecond), "secrets_sealed", cfg.SecretsKey != nil, "newly_sealed", rep.Sealed)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "provisiond_build_info", Help: "Always 1: the version of provisiond and of the Go it was built with.",
			ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }))

	if d.glis, err = listen(o.grpcLis, cfg.GRPCListen, "gRPC"); err != nil {
		return nil, err
	}
	d.glis = api.LimitListener(d.glis)
	if d.hlis, err = listen(o.httpLis, cfg.HTTPListen, "HTTP"); err != nil {
		return nil, err
	}
	if cfg.MetricsListen != "" {
		if d.mlis, err = listen(nil, cfg.MetricsListen, "metrics"); err != nil {
			return nil, err
		}
	}

	// Where machines reach us: the public IP with our listeners' ports.
	publicURL, grpcAddr := cfg.PublicHTTP, cfg.PublicGRPC
	if cfg.PublicIP != "" {
		_, hp, _ := net.SplitHostPort(d.hlis.Addr().String())
		_, gp, _ := net.SplitHostPort(d.glis.Addr().String())
		if publicURL == "" {
			publicURL = "http://" + net.JoinHostPort(cfg.PublicIP, hp)
		}
		if grpcAddr == "" {
			grpcAddr = net.JoinHostPort(cfg.PublicIP, gp)
		}
	}

	d.bmc = bmc.NewManager(d.st, log, reg, cfg.BMC)
	power := workflow.Power(d.bmc)
	if o.power != nil {
		power = o.power
	}
	wopts := cfg.Workflow
	wopts.PublicURL, wopts.ImagesURL, wopts.MetadataURL = publicURL, publicURL+"/images", publicURL+"/metadata"
	if o.clock != nil {
		wopts.Now = o.clock
	}
	d.eng = workflow.New(d.st, log, reg, power, wopts)
	if cfg.Retention > 0 {
		d.ret = workflow.NewRetention(d.st, log, reg, workflow.RetentionOptions{MaxAge: cfg.Retention})
	}

	auth := api.NewAuth(cfg.Token, cfg.RequireClientCert, log, reg).WithAgentTokens(d.eng)
	var creds credentials.TransportCredentials
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	d.gsrv = grpc.NewServer(api.ServerOptions(auth, creds, log, api.NewServerMetrics(reg))...)
	pb.RegisterAdminServer(d.gsrv, api.NewAdmin(d.st, log, api.Options{Machines: d.eng, Power: power}))
	pb.RegisterAgentServer(d.gsrv, api.NewAgent(d.eng, log, reg))
	d.health = health.NewServer()
	healthpb.RegisterHealthServer(d.gsrv, d.health)

	mux := http.NewServeMux()
	metadata.New(d.st, log, reg, metadata.Options{TrustedProxies: cfg.TrustedProxies, TokenOptional: cfg.MetadataTokenOptional}).Register(mux)
	arm64Name, extra := ARM64Binary(cfg.EFIARM64Binary)
	ipxe.New(d.st, Tokens{d.eng}, log, reg, ipxe.Options{
		GRPCAddr: grpcAddr, HTTPBase: publicURL, TLS: cfg.TLS != nil, CABundle: cfg.AgentCA,
		AgentOSDir: cfg.AgentOSDir, Kernel: "vmlinuz", Initrd: "initramfs",
		ImagesDir: cfg.ImagesDir, IPXEDir: cfg.IPXEDir, AnySource: cfg.IPXEAnySource, Binaries: extra,
	}).Register(mux)
	mux.Handle("GET /healthz", Healthz(d.st))
	// With a metrics listener, /metrics leaves the port machines reach.
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if d.mlis == nil {
		mux.Handle("GET /metrics", metrics)
	} else {
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", metrics)
		d.msrv = NewHTTPServer(mmux)
	}
	d.hsrv = NewHTTPServer(mux)

	if cfg.DHCPMode != dhcp.ModeOff {
		d.dhcp = dhcp.New(d.st, log, reg, dhcp.Options{
			Mode: cfg.DHCPMode, Interface: cfg.DHCPInterface, ServerIP: serverIP, HTTPBase: publicURL,
			LeaseTime: cfg.DHCPLeaseTime, Domain: cfg.DHCPDomain, UserClass: "baremetal",
			Binaries: dhcp.Binaries{EFIARM64: arm64Name},
		})
		switch {
		case !cfg.IPv6RA:
		case cfg.DHCPInterface == "":
			log.Info("not answering IPv6 router solicitations: --dhcp-interface names no interface; iPXE may wait ~16 s for IPv6 router discovery")
		default:
			d.ra = ra.New(log, reg, ra.Options{Interface: cfg.DHCPInterface})
		}
	}
	if cfg.TFTPListen != "" {
		d.tftp = tftp.New(log, reg, tftp.Options{Root: cfg.IPXEDir, Listen: cfg.TFTPListen, Files: extra})
	}
	return d, nil
}

func listen(given net.Listener, addr, what string) (net.Listener, error) {
	if given != nil {
		return given, nil
	}
	lc := net.ListenConfig{KeepAliveConfig: deadPeerKeepAlive, Control: deadPeerUserTimeout}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", what, addr, err)
	}
	return l, nil
}

// deadPeerKeepAlive reaps connections of machines that went away in 11 s
// of silence instead of Go's default 150 s. GRUB (the arm64 loader) opens
// its connections from the same source ports on every boot and answers
// neither the challenge ACK of the connection its previous boot left
// open nor keepalive probes: until that connection is reaped, the next
// boot's config fetch hangs (TestE2EArm64 saw a reset machine wait two
// minutes for it).
var deadPeerKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3}

// Store is the daemon's store (tests read and seed it).
func (d *Daemon) Store() *store.Store { return d.st }

// Engine is the daemon's workflow engine.
func (d *Daemon) Engine() *workflow.Engine { return d.eng }

// GRPCAddr and HTTPAddr are the listeners' addresses.
func (d *Daemon) GRPCAddr() string { return d.glis.Addr().String() }

// HTTPAddr is the HTTP listener's address.
func (d *Daemon) HTTPAddr() string { return d.hlis.Addr().String() }

// MetricsAddr is the metrics listener's address ("" when /metrics is on
// the HTTP listener).
func (d *Daemon) MetricsAddr() string {
	if d.mlis == nil {
		return ""
	}
	return d.mlis.Addr().String()
}

// Close releases what New opened; Serve does it itself when it returns.
func (d *Daemon) Close() error {
	var errs []error
	for _, l := range []net.Listener{d.glis, d.hlis, d.mlis} {
		if l != nil {
			_ = l.Close() // not served, or served and stopped: nothing to report
		}
	}
	if d.st != nil {
		if err := d.st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
		d.st = nil
	}
	return errors.Join(errs...)
}

// Serve runs every service until ctx ends or one fails, stops them
// gracefully (bounded by Config.ShutdownWait) and closes the store.
func (d *Daemon) Serve(ctx context.Context) (err error) {
	defer func() {
		if cerr := d.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	log, cfg := d.log, d.cfg
	log.Info("provisiond starting", "version", cfg.Version, "grpc", d.glis.Addr().String(), "http", d.hlis.Addr().String(),
		"tls", cfg.TLS != nil, "mtls", cfg.RequireClientCert, "data_dir", cfg.DataDir)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.eng.Serve(gctx) })
	g.Go(func() error { return d.bmc.Serve(gctx) })
	if d.ret != nil {
		g.Go(func() error { return d.ret.Serve(gctx) })
	}
	if d.dhcp != nil {
		g.Go(func() error { return d.dhcp.Serve(gctx) })
	}
	if d.ra != nil {
		g.Go(func() error {
			// Machines still boot without it, only slower, so a host where
			// it cannot run (IPv6 disabled, say) keeps serving.
			if err := d.ra.Serve(gctx); err != nil {
				log.Warn("not answering IPv6 router solicitations; iPXE may wait ~16 s for IPv6 router discovery (--ipv6-ra=false silences this)", "err", err)
			}
			return nil
		})
	}
	if d.tftp != nil {
		g.Go(func() error { return d.tftp.Serve(gctx) })
	}
	g.Go(func() error {
		if err := d.gsrv.Serve(d.glis); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	serveHTTP := func(s *http.Server, l net.Listener, what string) {
		g.Go(func() error {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", what, err)
			}
			return nil
		})
	}
	serveHTTP(d.hsrv, d.hlis, "HTTP")
	if d.msrv != nil {
		serveHTTP(d.msrv, d.mlis, "metrics")
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("provisiond stopping")
		d.health.Shutdown()
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownWait)
		defer cancel()
		stopped := make(chan struct{})
		go func() { d.gsrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			d.gsrv.Stop()
		}
		err := d.hsrv.Shutdown(sctx)
		if d.msrv != nil {
			if merr := d.msrv.Shutdown(sctx); merr != nil {
				err = errors.Join(err, fmt.Errorf("shut down metrics: %w", merr))
			}
		}
		return err
	})
	err = g.Wait()
	if ctx.Err() != nil && err == nil {
		log.Info("provisiond stopped")
	}
	return err
}

// ARM64Binary reads --efi-arm64-binary: the name DHCP hands arm64 UEFI
// clients and, for a path (with a '/'), the extra file TFTP and
// /ipxe/bin/ serve under that name.
func ARM64Binary(v string) (string, map[string]string) {
	if !strings.Contains(v, "/") {
		return v, nil
	}
	name := filepath.Base(v)
	return name, map[string]string{name: v}
}

// Tokens adapts the engine's token errors to the ipxe package's.
type Tokens struct{ Engine *workflow.Engine }

// MintAgentToken implements ipxe.Tokens.
func (t Tokens) MintAgentToken(ctx context.Context, hardwareID string) (string, string, error) {
	id, tok, err := t.Engine.MintAgentToken(ctx, hardwareID)
	switch {
	case errors.Is(err, workflow.ErrNotReady):
		return "", "", fmt.Errorf("%w: %v", ipxe.ErrNoWorkflow, err)
	case errors.Is(err, workflow.ErrAgentLive):
		return "", "", fmt.Errorf("%w: %v", ipxe.ErrAgentLive, err)
	}
	return id, tok, err
}

// HealthChecker is what /healthz asks: the store's read and write health.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Healthz answers 200 "ok" while the store reads and writes, 503 with the
// reason otherwise.
func Healthz(h HealthChecker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.Health(r.Context()); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
}

// NewHTTPServer is the HTTP server of provisiond's listeners.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute, // request bodies are at most a metadata token PUT
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}
