// Command plainboot plays the firmware and the agent OS of a lab machine
// whose agent runs in plain mode on this host: internal/lab's BMC starts it
// on power on (BMC.Machine) with the stored boot device in $BOOT and kills
// its process group on power off.
//
// On a network boot (BOOT=pxe) it fetches the iPXE script that provisiond
// serves for the machine's MAC, as iPXE does after DHCP, from the machine's
// own address; reads the agent's parameters from the script's kernel
// command line with the parser of the agent's init mode (agent/cmdline);
// and runs the agent binary in plain mode with them: gRPC address, hardware
// id, TLS and CA, and the one-time token (in the environment, which ps does
// not show). A script that boots the local disk, or BOOT=disk, stands for
// the installed OS. Either way plainboot then stays up, as a powered-on
// server does, until it is killed.
//
//	plainboot -url http://HOST:PORT/ipxe/MAC -src IP -agent PATH -dir DIR [-- AGENT-FLAGS...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rackform/terraform-provider-baremetal/agent/cmdline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "plainboot:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("plainboot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		url   = fs.String("url", "", "iPXE script URL, http://HOST:PORT/ipxe/MAC (what DHCP hands iPXE)")
		src   = fs.String("src", "", "source address of the script request: the machine's own address, which provisiond checks")
		agent = fs.String("agent", "", "the agent binary")
		dir   = fs.String("dir", "", "the machine's scratch directory (for the CA bundle)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *agent == "" || *dir == "" {
		return errors.New("-url, -agent and -dir are required")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "plainboot")
	boot := getenv("BOOT")
	log.Info("power on", "boot", boot)
	if boot == "pxe" {
		if err := netboot(ctx, log, *url, *src, *agent, *dir, fs.Args()); err != nil {
			// Firmware that cannot boot the network goes on to the next
			// boot device: the disk.
			log.Error("network boot failed", "err", err)
		}
	} else {
		log.Info("booting the local disk: the installed OS is up")
	}
	<-ctx.Done()
	return nil
}

// netboot fetches and follows the iPXE script. It returns once the agent
// has exited, or at once when the script boots the local disk.
func netboot(ctx context.Context, log *slog.Logger, url, src, agent, dir string, agentArgs []string) error {
	script, err := fetch(ctx, url, src)
	if err != nil {
		return err
	}
	cfg, agentOS, err := parseScript(script)
	if err != nil {
		return fmt.Errorf("iPXE script from %s: %w", url, err)
	}
	if !agentOS {
		log.Info("the iPXE script boots the local disk: the installed OS is up", "says", echoLine(script))
		return nil
	}
	log.Info("booting the agent OS", "cmdline", cfg.String()) // String leaves the token out
	argv := []string{"--grpc", cfg.GRPC, "--hw", cfg.HardwareID}
	if cfg.TLS {
		argv = append(argv, "--tls")
		if cfg.CAPEM != nil {
			ca := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(ca, cfg.CAPEM, 0o600); err != nil {
				return fmt.Errorf("write the CA bundle of bm.ca: %w", err)
			}
			argv = append(argv, "--ca-file", ca)
		}
	}
	cmd := exec.CommandContext(ctx, agent, append(argv, agentArgs...)...)
	cmd.Env = append(os.Environ(), "AGENT_TOKEN="+cfg.Token)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// The agent dies with plainboot even when only plainboot is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	log.Info("the agent is done; the agent OS idles until the BMC acts")
	return nil
}

// fetch gets the iPXE script from the machine's own address.
func fetch(ctx context.Context, url, src string) (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		ip := net.ParseIP(src)
		if ip == nil {
			return "", fmt.Errorf("-src %q is not an IP address", src)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "iPXE/1.21.1 (plainboot)")
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch iPXE script: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // read-only; ReadAll's error is the one that counts
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read iPXE script from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch iPXE script from %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// parseScript reads an iPXE script as provisiond writes it (see
// provisiond/ipxe): agentOS is true when it boots a kernel, whose command
// line then gives cfg; false when it boots the local disk (sanboot, exit).
func parseScript(script string) (cfg cmdline.Config, agentOS bool, err error) {
	if !strings.HasPrefix(script, "#!ipxe") {
		return cfg, false, errors.New("not an iPXE script (no #!ipxe line)")
	}
	local := false
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		// "cmd args || goto failed": the command is what comes before ||.
		line, _, _ = strings.Cut(line, "||")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "kernel":
			// kernel [--option...] URL ARGS...: ARGS is the kernel command line.
			rest := f[1:]
			for len(rest) > 0 && strings.HasPrefix(rest[0], "--") {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				return cfg, false, fmt.Errorf("%q has no kernel URL", line)
			}
			cfg, err = cmdline.Parse(strings.Join(rest[1:], " "))
			return cfg, err == nil, err
		case "sanboot", "exit":
			local = true
		}
	}
	if local {
		return cfg, false, nil
	}
	return cfg, false, errors.New("the script boots neither a kernel nor the local disk")
}

// echoLine is the script's first echo: what provisiond says it does.
func echoLine(script string) string {
	for _, line := range strings.Split(script, "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "echo "); ok {
			return s
		}
	}
	return ""
}
