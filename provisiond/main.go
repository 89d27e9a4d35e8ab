// Command provisiond is the bare-metal provisioner: it holds the state,
// serves DHCP, TFTP, iPXE scripts, the agent OS, images and metadata,
// drives BMCs and runs workflows. The Terraform provider talks to it over
// gRPC. See the README for the flags.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc"
	"github.com/rackform/terraform-provider-baremetal/provisiond/ctl"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/dhcp"
	"github.com/rackform/terraform-provider-baremetal/provisiond/metadata"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		if err := ctl.Run(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "provisiond ctl:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "flags-markdown" {
		// For make docs: the README's flag table (see flagdoc.go).
		path := ""
		if len(os.Args) > 2 {
			path = os.Args[2]
		}
		if err := writeFlagsMarkdown(path); err != nil {
			fmt.Fprintln(os.Stderr, "provisiond flags-markdown:", err)
			os.Exit(1)
		}
		return
	}
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

// minTokenBytes is the shortest admin token accepted: 32 bytes, as
// `head -c 32 /dev/urandom | base64` makes, is out of reach of guessing.
const minTokenBytes = 32

// checkToken refuses a short admin token and warns when its file is
// readable by others than provisiond's user.
func checkToken(path, token string, log *slog.Logger) error {
	if len(token) < minTokenBytes {
		return fmt.Errorf("token file %s holds %d bytes; the admin token needs at least %d: make one with `head -c 32 /dev/urandom | base64 > %s`", path, len(token), minTokenBytes, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat token file: %w", err)
	}
	if fi.Mode().Perm()&0o044 != 0 {
		log.Warn("token file is readable by group or others: anyone who reads it administers every machine; chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	return nil
}

// reachable reports whether a listen address may be reached from other
// hosts: anything but a loopback address or "localhost".
func reachable(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.IsLoopback()
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

// loadBMCCAs is the pool Redfish BMC certificates are verified against:
// the system roots and the CAs of file (nil, the system roots alone, when
// file is empty).
func loadBMCCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read --bmc-ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("--bmc-ca-file %s: no PEM certificate found", file)
	}
	return pool, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (err error) {
	c, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	if c.ShowVersion {
		_, err := fmt.Fprintln(stderr, "provisiond", version)
		return err
	}
	log := newLogger(c, stderr)
	token, err := readSecret(c.TokenFile, "token file")
	if err != nil {
		return err
	}
	if err := checkToken(c.TokenFile, token, log); err != nil {
		return err
	}
	tlsConf, err := serverTLS(c)
	if err != nil {
		return err
	}
	if tlsConf == nil && reachable(c.GRPCListen) {
		log.Warn("gRPC API in plain text on an address other hosts reach: the admin token, agent tokens and user-data cross the network in clear; "+
			"set --tls-cert and --tls-key, and --tls-agent-ca for network-booted machines", "grpc", c.GRPCListen)
	}

	var secretsKey []byte
	if c.SecretsKeyFile != "" {
		if secretsKey, err = store.ReadKeyFile(c.SecretsKeyFile); err != nil {
			return err
		}
	}
	var proxies []string
	if c.TrustedProxies != "" {
		proxies = strings.Split(c.TrustedProxies, ",")
	}
	trusted, err := metadata.ParseTrustedProxies(proxies)
	if err != nil {
		return fmt.Errorf("parse --trusted-proxies: %w", err)
	}
	if !c.IPXESourceCheck {
		log.Warn("--ipxe-source-check=false: agent tokens are minted for any caller of /ipxe/{mac}; anyone who can reach provisiond's HTTP port and guess a MAC can take a workflow's token, read its environment and report it done. Use it only in a lab")
	}
	agentCA, err := loadAgentCA(c, log)
	if err != nil {
		return err
	}
	bmcCAs, err := loadBMCCAs(c.BMCCAFile)
	if err != nil {
		return err
	}
	retries := c.BMCRetries
	if retries == 0 {
		retries = -1 // bmc.Options: 0 is the default, negative none
	}
	d, err := daemon.New(daemon.Config{
		DataDir: c.DataDir, GRPCListen: c.GRPCListen, HTTPListen: c.HTTPListen, MetricsListen: c.MetricsListen,
		Token: token, TLS: tlsConf, RequireClientCert: c.TLSClientCA != "", AgentCA: agentCA, SecretsKey: secretsKey,
		PublicIP: c.PublicIP, DHCPMode: dhcp.Mode(c.DHCPMode.val), DHCPInterface: c.DHCPIface, DHCPLeaseTime: c.DHCPLeaseTime,
		DHCPDomain: c.DHCPDomain, IPv6RA: c.IPv6RA, TFTPListen: c.TFTPListen,
		IPXEDir: c.IPXEDir, EFIARM64Binary: c.EFIARM64Bin, AgentOSDir: c.AgentOSDir, ImagesDir: c.ImagesDir, IPXEAnySource: !c.IPXESourceCheck,
		TrustedProxies: trusted, MetadataTokenOptional: !c.MetadataRequireToken,
		BMC: bmc.Options{
			Timeout: c.BMCTimeout, Retries: retries, Workers: c.BMCWorkers, PollInterval: c.PowerPoll,
			IPMICipherSuite: c.IPMICipherSuite, IpmitoolPath: c.IpmitoolPath, RedfishRootCAs: bmcCAs,
		},
		Workflow:  workflow.Options{BootTimeout: c.BootTimeout, HeartbeatTimeout: c.HeartbeatTimeout},
		Retention: c.Retention, ShutdownWait: c.ShutdownWait, Version: version,
	}, daemon.WithLogger(log))
	if err != nil {
		return err
	}
	return d.Serve(ctx)
}
