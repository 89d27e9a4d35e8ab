// Command agent runs provisiond's workflows on a machine. As PID 1 of the
// agent OS (or with --init) it first sets up the system from the kernel
// command line; otherwise (plain mode) it takes flags, for tests and for
// machines that already run an OS.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rackform/terraform-provider-baremetal/agent/actions"
	"github.com/rackform/terraform-provider-baremetal/agent/cmdline"
	"github.com/rackform/terraform-provider-baremetal/agent/initsys"
	"github.com/rackform/terraform-provider-baremetal/agent/runner"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

var version = "dev"

func main() {
	if os.Getpid() == 1 || (len(os.Args) > 1 && (os.Args[1] == "--init" || os.Args[1] == "-init")) {
		initMain() // never returns
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// run is plain mode.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		grpcAddr   = fs.String("grpc", os.Getenv("AGENT_GRPC"), "provisiond gRPC address HOST:PORT (env AGENT_GRPC)")
		hw         = fs.String("hw", os.Getenv("AGENT_HW"), "hardware id (env AGENT_HW)")
		token      = fs.String("token", "", "agent token; prefer --token-file or env AGENT_TOKEN, which ps does not show")
		tokenFile  = fs.String("token-file", os.Getenv("AGENT_TOKEN_FILE"), "file holding the agent token (env AGENT_TOKEN_FILE)")
		useTLS     = fs.Bool("tls", false, "use TLS to provisiond")
		insecure   = fs.Bool("insecure", false, "with --tls, do not verify provisiond's certificate")
		caFile     = fs.String("ca-file", "", "with --tls, PEM CA bundle to trust instead of the system roots")
		allowPower = fs.Bool("allow-power", false, "reboot or power off this host when provisiond says so (otherwise just exit)")
		heartbeat  = fs.Duration("heartbeat", 5*time.Second, "heartbeat period")
		progress   = fs.Duration("progress", 5*time.Second, "progress line period of long actions")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		showVer    = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVer {
		_, err := fmt.Fprintln(stderr, "agent", version)
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("component", "agent")

	tok := *token
	if tok == "" {
		tok = os.Getenv("AGENT_TOKEN")
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("read token file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if *grpcAddr == "" || *hw == "" || tok == "" {
		return errors.New("--grpc, --hw and a token (--token-file, AGENT_TOKEN or --token) are required")
	}
	var tlsCfg *tls.Config
	if *useTLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: *insecure}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return fmt.Errorf("read CA file: %w", err)
			}
			if tlsCfg.RootCAs, err = certPool(pem); err != nil {
				return fmt.Errorf("CA file %s: %w", *caFile, err)
			}
		}
	}
	// On a host with udev (not the agent OS), udev keeps /dev/disk/by-id.
	then, err := work(ctx, log, *grpcAddr, *hw, tok, tlsCfg, *heartbeat, *progress, nil)
	if err != nil {
		return err
	}
	if then == "none" {
		return nil
	}
	if !*allowPower {
		log.Info("provisiond asks to "+then+"; not done without --allow-power", "then", then)
		return nil
	}
	return initsys.Power(log, then)
}

// work connects to provisiond and runs the workflow.
func work(ctx context.Context, log *slog.Logger, addr, hw, token string, tlsCfg *tls.Config, heartbeat, progress time.Duration, before func(io.Writer)) (string, error) {
	conn, err := runner.Dial(addr, token, tlsCfg)
	if err != nil {
		return "", err
	}
	// Everything the workflow needed to say was answered by the time Run
	// returns: closing only tears the connection down.
	defer func() { _ = conn.Close() }()
	httpc := &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 30 * time.Second,
		// No overall timeout: images take as long as they take; the
		// action's context bounds it.
		ResponseHeaderTimeout: time.Minute,
	}}
	reg := actions.New(actions.Deps{HTTPClient: httpc, ProgressEvery: progress}).Registry()
	r := runner.New(pb.NewAgentClient(conn), runner.Config{HardwareID: hw, Actions: reg, HeartbeatEvery: heartbeat, BeforeAction: before, Logger: log})
	log.Info("agent starting", "version", version, "grpc", addr, "hardware", hw, "tls", tlsCfg != nil)
	return r.Run(ctx)
}

func certPool(pem []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate found")
	}
	return p, nil
}

// initMain is PID-1 mode. It never returns: PID 1 exiting panics the kernel.
func initMain() {
	log := slog.New(slog.NewTextHandler(os.Stdout, nil)).With("component", "agent-init")
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		then, err := initOnce(ctx, log)
		if err == nil {
			if then == "none" {
				log.Info("workflow done; nothing more to do")
				break
			}
			if err := initsys.Power(log, then); err != nil {
				log.Error("power action failed", "then", then, "err", err)
			}
			break
		}
		log.Error("agent failed; starting over", "attempt", attempt, "err", err)
		time.Sleep(min(time.Duration(attempt)*5*time.Second, time.Minute))
	}
	for {
		time.Sleep(time.Hour)
	}
}

// initOnce sets the system up and runs the workflow, turning a panic into
// an error so that PID 1 survives it.
func initOnce(ctx context.Context, log *slog.Logger) (then string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	if err := initsys.MountAll(log); err != nil {
		log.Warn("mounts", "err", err)
	}
	initsys.EnsureEntropy(log, 5*time.Second)
	initsys.DefaultEnv()
	loaded, failed := initsys.LoadDrivers(log, "/lib/modules", "/sys")
	log.Info("kernel modules loaded", "loaded", len(loaded), "failed", len(failed))
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", fmt.Errorf("read kernel command line: %w", err)
	}
	cfg, err := cmdline.Parse(string(raw))
	if err != nil {
		return "", err
	}
	log.Info("parameters", "cmdline", cfg.String())
	ifc, err := waitNIC(ctx, log, cfg)
	if err != nil {
		return "", err
	}
	if _, err := initsys.NetUp(ctx, log, ifc); err != nil {
		return "", err
	}
	var tlsCfg *tls.Config
	if cfg.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAPEM != nil {
			if tlsCfg.RootCAs, err = certPool(cfg.CAPEM); err != nil {
				return "", fmt.Errorf("bm.ca: %w", err)
			}
		}
	}
	return work(ctx, log, cfg.GRPC, cfg.HardwareID, cfg.Token, tlsCfg, 5*time.Second, 5*time.Second, linkDisks(log))
}

// linkDisks is the agent OS's stand-in for udev's /dev/disk/by-id: the links
// are made before every action, so a template may name a disk by id and a
// partition an earlier action created by <id>-part<N>. A failure is written
// to the action's output and the log; the action then fails on its own if
// it needed the link.
func linkDisks(log *slog.Logger) func(io.Writer) {
	return func(out io.Writer) {
		n, err := initsys.LinkDisks(log, "/sys", "/dev")
		if err != nil {
			log.Warn("disk links", "links", n, "err", err)
			_, _ = fmt.Fprintf(out, "agent: /dev/disk/by-id: %v\n", err) // best effort: the log has it too
			return
		}
		log.Debug("disk links", "links", n)
	}
}

// waitNIC waits for the boot NIC to appear (drivers probe asynchronously).
func waitNIC(ctx context.Context, log *slog.Logger, cfg cmdline.Config) (*initsys.Interface, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ifc, err := initsys.BootNIC(cfg.BootMAC)
		if err == nil {
			return ifc, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		log.Debug("waiting for network interface", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
