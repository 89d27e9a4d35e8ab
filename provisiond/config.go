package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rackform/terraform-provider-baremetal/provisiond/dhcp"
)

// config is provisiond's configuration. Every field is a flag; each flag
// is also read from PROVISIOND_<NAME> (dashes as underscores) and from the
// YAML file given by --config (keys are the flag names). A flag given on
// the command line wins over the environment, which wins over the file.
type config struct {
	// ShowVersion is --version: print the version and exit. It is a
	// command, not a setting, so neither the environment nor the config
	// file can set it.
	ShowVersion bool

	ConfigFile   string
	DataDir      string
	GRPCListen   string
	HTTPListen   string
	DHCPIface    string
	DHCPMode     modeFlag
	TFTPListen   string
	PublicIP     string
	IPXEDir      string
	EFIARM64Bin  string
	AgentOSDir   string
	ImagesDir    string
	TokenFile    string
	TLSCert      string
	TLSKey       string
	TLSClientCA  string
	TLSAgentCA   string
	LogLevel     enum
	LogFormat    enum
	ShutdownWait time.Duration

	DHCPLeaseTime                 time.Duration
	DHCPDomain                    string
	IPXESourceCheck               bool
	TrustedProxies                string
	MetricsListen                 string
	MetadataRequireToken          bool
	BMCTimeout                    time.Duration
	BMCWorkers                    int
	PowerPoll                     time.Duration
	IPMICipherSuite               string
	BMCCAFile                     string
	BMCRetries                    int
	IpmitoolPath                  string
	IPv6RA                        bool
	BootTimeout, HeartbeatTimeout time.Duration
	Retention                     time.Duration

	// SecretsKeyFile seals BMC passwords and user-data in the store.
	SecretsKeyFile string
}

// enum is a string flag that accepts only listed values.
type enum struct {
	val     string
	allowed []string
}

func (e *enum) String() string { return e.val }

func (e *enum) Set(s string) error {
	for _, a := range e.allowed {
		if s == a {
			e.val = s
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(e.allowed, ", "))
}

// modeFlag is --dhcp-mode: a dhcp.Mode, checked by dhcp.ParseMode.
type modeFlag struct{ val dhcp.Mode }

func (m *modeFlag) String() string { return string(m.val) }

func (m *modeFlag) Set(s string) error {
	v, err := dhcp.ParseMode(s)
	if err != nil {
		return err
	}
	m.val = v
	return nil
}

func newFlags(c *config) *flag.FlagSet {
	c.DHCPMode = modeFlag{dhcp.ModeReservation}
	c.LogLevel = enum{"info", []string{"debug", "info", "warn", "error"}}
	c.LogFormat = enum{"text", []string{"text", "json"}}

	fs := flag.NewFlagSet("provisiond", flag.ContinueOnError)
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.StringVar(&c.ConfigFile, "config", "", "YAML file with settings (keys are flag names)")
	fs.StringVar(&c.DataDir, "data-dir", "/var/lib/provisiond", "directory of the state database (provisiond.db, bbolt)")
	fs.StringVar(&c.GRPCListen, "grpc-listen", ":7777", "address of the gRPC API: Admin (admin token) and Agent (per-workflow token)")
	fs.StringVar(&c.HTTPListen, "http-listen", ":8080", "address of the HTTP server: iPXE scripts, agent OS, images, metadata, /healthz, and /metrics unless --metrics-listen is set")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "address of a separate listener for /metrics, which then leaves --http-listen, the port machines reach (empty: /metrics on --http-listen)")
	fs.StringVar(&c.DHCPIface, "dhcp-interface", "", "interface the DHCP server binds to (empty: all)")
	fs.Var(&c.DHCPMode, "dhcp-mode", fmt.Sprintf("DHCP mode: %s, %s or %s", dhcp.ModeReservation, dhcp.ModeProxy, dhcp.ModeOff))
	fs.StringVar(&c.TFTPListen, "tftp-listen", ":69", "address of the TFTP server (empty: off)")
	fs.StringVar(&c.PublicIP, "public-ip", "", "the address machines reach provisiond at (required for network boot)")
	fs.StringVar(&c.IPXEDir, "ipxe-dir", "/usr/lib/ipxe", "directory of iPXE binaries (Debian's ipxe package)")
	fs.StringVar(&c.EFIARM64Bin, "efi-arm64-binary", "snp-arm64.efi", "boot loader for arm64 UEFI PXE clients (DHCP option 93 = 11): a file name in --ipxe-dir, or a path with a '/' to a file anywhere, served over TFTP and /ipxe/bin/ under its base name; make agent-os builds GRUB's, build/agent-os/arm64/grubnetaa64.efi (Debian has no arm64 iPXE)")
	fs.StringVar(&c.AgentOSDir, "agent-os-dir", "", "directory holding the agent OS (make agent-os): vmlinuz and initramfs (amd64), and arm64/vmlinuz and arm64/initramfs (arm64)")
	fs.StringVar(&c.ImagesDir, "images-dir", "", "directory of OS images served under /images/")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the admin API bearer token, at least 32 bytes (head -c 32 /dev/urandom | base64 > FILE; mode 600, provisiond warns otherwise); required")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate of the gRPC API (enables TLS; needs --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA bundle: admin clients must also present a certificate it signed (mutual TLS)")
	fs.StringVar(&c.TLSAgentCA, "tls-agent-ca", "", "PEM CA the agent OS trusts for provisiond's certificate, passed on its kernel command line (bm.ca; one ECDSA certificate fits, a 4096-bit RSA one does not); required with TLS and network boot")
	fs.StringVar(&c.SecretsKeyFile, "secrets-key-file", "", "file of 32 random bytes or their base64 (head -c 32 /dev/urandom > key): BMC passwords and machine user-data are sealed with it (AES-256-GCM) in provisiond.db; a store once sealed needs the same key to open")
	fs.Var(&c.LogLevel, "log-level", "log level: debug, info, warn or error")
	fs.Var(&c.LogFormat, "log-format", "log format: text or json")
	fs.DurationVar(&c.ShutdownWait, "shutdown-timeout", 10*time.Second, "how long a graceful stop (SIGTERM, SIGINT) may take")
	fs.DurationVar(&c.DHCPLeaseTime, "dhcp-lease-time", time.Hour, "DHCP lease time")
	fs.StringVar(&c.DHCPDomain, "dhcp-domain", "", "domain name (option 15) for host names that are not FQDNs")
	fs.BoolVar(&c.IPXESourceCheck, "ipxe-source-check", true, "mint an agent token only for a request from the MAC's DHCP lease or configured address (see the README's Security model); false mints for any caller: labs only")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs whose X-Forwarded-For the metadata service believes")
	fs.BoolVar(&c.MetadataRequireToken, "metadata-require-token", false, "user-data, vendor-data and /metadata (EC2, OpenStack and NoCloud forms) need an IMDSv2-style session token (PUT /latest/api/token); off by default because cloud-init 22.4 sends tokens only on AWS, so its Ec2, OpenStack and NoCloud datasources read no user-data on bare metal with it on (see the README's Security model)")
	fs.DurationVar(&c.BMCTimeout, "bmc-timeout", 30*time.Second, "timeout of one BMC operation attempt")
	fs.IntVar(&c.BMCWorkers, "bmc-workers", 16, "BMC operations in flight at once across all BMCs")
	fs.DurationVar(&c.PowerPoll, "power-poll-interval", time.Minute, "how often every server's power state is read (negative: off)")
	fs.DurationVar(&c.BootTimeout, "boot-timeout", 15*time.Minute, "how long a workflow waits for the agent to call in after the power-on")
	fs.DurationVar(&c.HeartbeatTimeout, "heartbeat-timeout", 5*time.Minute, "fail a running workflow whose agent has sent no heartbeat or report for this long")
	fs.BoolVar(&c.IPv6RA, "ipv6-ra", true, "answer IPv6 router solicitations on --dhcp-interface with a zero-lifetime advertisement (\"no router here\"), so iPXE skips its ~16 s IPv6 router discovery wait; only with DHCP on and --dhcp-interface named; turn off on links that have a real IPv6 router")
	fs.DurationVar(&c.Retention, "retention", 720*time.Hour, "delete workflows that ended longer ago than this, with their events (and power/operator events as old); a machine's current workflow and unfinished ones are never deleted; 0 keeps everything. A month covers the post-mortem of a failed install and a monthly audit")
	fs.StringVar(&c.IPMICipherSuite, "ipmi-cipher-suite", "", "ipmitool -C cipher suite (empty: try 3, then 17)")
	fs.StringVar(&c.BMCCAFile, "bmc-ca-file", "", "PEM CA bundle that Redfish BMC certificates are verified against, besides the system roots (a site CA that signed the BMCs' certificates); a hardware's bmc.insecure_tls skips verification for that BMC")
	fs.IntVar(&c.BMCRetries, "bmc-retries", 2, "more attempts of a BMC operation after a transient failure (timeout, connection refused), with backoff from 1 s doubling; 0: none. A refused password is never retried")
	fs.StringVar(&c.IpmitoolPath, "ipmitool-path", "", "the ipmitool binary of the ipmi driver (empty: looked up on PATH)")
	return fs
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "PROVISIOND_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads the command line, then the environment, then the
// config file, each filling only what the one before left unset.
func parseConfig(args []string, getenv func(string) string) (*config, error) {
	c := &config{}
	fs := newFlags(c)
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.ShowVersion {
		return c, nil
	}
	set := map[string]bool{"version": true}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := lookupEnv(getenv, envName(f.Name)); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
			set[f.Name] = true
		}
	})
	if err != nil {
		return nil, err
	}
	if c.ConfigFile != "" {
		raw, err := os.ReadFile(c.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		var file map[string]any
		if err := yaml.Unmarshal(raw, &file); err != nil {
			return nil, fmt.Errorf("parse config %s: %w", c.ConfigFile, err)
		}
		for k, v := range file {
			f := fs.Lookup(k)
			if f == nil || k == "config" || k == "version" {
				return nil, fmt.Errorf("config %s: unknown setting %q", c.ConfigFile, k)
			}
			if set[k] {
				continue
			}
			if e := f.Value.Set(fmt.Sprint(v)); e != nil {
				return nil, fmt.Errorf("config %s: %s: %w", c.ConfigFile, k, e)
			}
		}
	}
	return c, c.validate()
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func (c *config) validate() error {
	var errs []error
	if c.TokenFile == "" {
		errs = append(errs, errors.New("--token-file is required: the admin API never runs without a token"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
	}
	if c.TLSAgentCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("--tls-agent-ca needs --tls-cert and --tls-key"))
	}
	if c.Retention < 0 {
		errs = append(errs, errors.New("--retention must be 0 (keep everything) or a positive duration"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	return errors.Join(errs...)
}
