// Package lab is the harness of the end-to-end tests (LAB.md): a network
// namespace with a tap device that nothing leaves, ipmi_sim BMCs whose
// chassis_control script powers QEMU VMs on and off with the stored boot
// device, QEMU command lines for BIOS and UEFI machines, and helpers that wait
// for a line on a VM's serial console.
//
// Everything it starts is killed by PID, and every namespace it creates is
// deleted, by the Close methods; tests register them with t.Cleanup.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Skipper is the part of testing.TB the Require functions use; the lab
// is also run by cmd/demolab, which links no testing package.
type Skipper interface {
	Helper()
	Skip(args ...any)
	Skipf(format string, args ...any)
}

// RequireRoot skips t unless the test runs as root (netns and tap need it).
func RequireRoot(t Skipper) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, tap devices): run as root or in CI")
	}
}

// RequireBinaries skips t when a program is not installed.
func RequireBinaries(t Skipper, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (Debian: qemu-system-x86 openipmi ipmitool iproute2): %v", n, err)
		}
	}
}

// NetNS is a network namespace created by this process.
type NetNS struct {
	Name string
}

// NewNetNS creates a namespace named prefix-<random> with lo up. Names are at
// most 15 bytes of prefix plus 9, unique per call.
func NewNetNS(ctx context.Context, prefix string) (*NetNS, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	ns := &NetNS{Name: fmt.Sprintf("%s-%s", prefix, hex.EncodeToString(b[:]))}
	if err := run(ctx, "ip", "netns", "add", ns.Name); err != nil {
		return nil, fmt.Errorf("create netns %s: %w", ns.Name, err)
	}
	if err := ns.Run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("netns %s: lo up: %w", ns.Name, err)
	}
	return ns, nil
}

// AddTap creates tap device dev with address cidr (e.g. "10.99.0.1/24") inside
// the namespace and brings it up, with IPv6 DAD off so the link is usable at
// once. QEMU attaches to it with -netdev tap,ifname=dev,script=no,downscript=no.
func (n *NetNS) AddTap(ctx context.Context, dev, cidr string) error {
	steps := [][]string{
		{"ip", "tuntap", "add", "dev", dev, "mode", "tap"},
		{"sysctl", "-q", "-w", "net.ipv6.conf." + dev + ".accept_dad=0"},
		{"ip", "addr", "add", cidr, "dev", dev},
		{"ip", "link", "set", dev, "up"},
	}
	for _, s := range steps {
		if err := n.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("netns %s: add tap %s: %w", n.Name, dev, err)
		}
	}
	return nil
}

// AddBridge creates bridge br with address cidr inside the namespace: the
// layer-2 segment of a rack, to which AddTap attaches one tap per VM.
func (n *NetNS) AddBridge(ctx context.Context, br, cidr string) error {
	steps := [][]string{
		{"ip", "link", "add", br, "type", "bridge", "forward_delay", "0"},
		{"sysctl", "-q", "-w", "net.ipv6.conf." + br + ".accept_dad=0"},
		{"ip", "addr", "add", cidr, "dev", br},
		{"ip", "link", "set", br, "up"},
	}
	for _, s := range steps {
		if err := n.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("netns %s: add bridge %s: %w", n.Name, br, err)
		}
	}
	return nil
}

// AddBridgePort creates tap device dev inside the namespace as a port of
// bridge br and brings it up. QEMU attaches to it like to AddTap's.
func (n *NetNS) AddBridgePort(ctx context.Context, dev, br string) error {
	steps := [][]string{
		{"ip", "tuntap", "add", "dev", dev, "mode", "tap"},
		{"ip", "link", "set", dev, "master", br},
		{"ip", "link", "set", dev, "up"},
	}
	for _, s := range steps {
		if err := n.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("netns %s: add tap %s to %s: %w", n.Name, dev, br, err)
		}
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (n *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its error with output.
func (n *NetNS) Run(ctx context.Context, name string, args ...string) error {
	return runCmd(n.Command(ctx, name, args...))
}

// Close deletes the namespace. Processes still inside keep it alive: close
// the BMCs and VMs first.
func (n *NetNS) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, "ip", "netns", "del", n.Name); err != nil {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	return runCmd(exec.CommandContext(ctx, name, args...))
}

func runCmd(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// errIfDone returns ctx's error wrapped with what was being waited for.
func errIfDone(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}
