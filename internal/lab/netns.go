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
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/netns"
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

// NetNS is a network namespace created by this process. Its commands,
// creation and deletion are the test kit's (internal/testkit/netns); the
// tap and bridge devices of the VMs are the lab's.
type NetNS struct {
	Name string
}

// kit is the test kit's view of n.
func (n *NetNS) kit() *netns.NS { return &netns.NS{Name: n.Name} }

// NewNetNS creates a namespace named prefix-<random> with lo up. Names are at
// most 15 bytes of prefix plus 9, unique per call.
func NewNetNS(ctx context.Context, prefix string) (*NetNS, error) {
	ns, err := netns.New(ctx, prefix)
	if err != nil {
		return nil, err
	}
	return &NetNS{Name: ns.Name}, nil
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
	return n.steps(ctx, fmt.Sprintf("add tap %s", dev), steps)
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
	return n.steps(ctx, fmt.Sprintf("add bridge %s", br), steps)
}

// AddBridgePort creates tap device dev inside the namespace as a port of
// bridge br and brings it up. QEMU attaches to it like to AddTap's.
func (n *NetNS) AddBridgePort(ctx context.Context, dev, br string) error {
	steps := [][]string{
		{"ip", "tuntap", "add", "dev", dev, "mode", "tap"},
		{"ip", "link", "set", dev, "master", br},
		{"ip", "link", "set", dev, "up"},
	}
	return n.steps(ctx, fmt.Sprintf("add tap %s to %s", dev, br), steps)
}

// steps runs each command of steps inside the namespace, stopping at the
// first that fails.
func (n *NetNS) steps(ctx context.Context, what string, steps [][]string) error {
	for _, s := range steps {
		if err := n.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("netns %s: %s: %w", n.Name, what, err)
		}
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (n *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return n.kit().Command(ctx, name, args...)
}

// Run runs a command inside the namespace and returns its error with output.
func (n *NetNS) Run(ctx context.Context, name string, args ...string) error {
	return runCmd(n.Command(ctx, name, args...))
}

// Close deletes the namespace. Processes still inside keep it alive: close
// the BMCs and VMs first.
func (n *NetNS) Close() error { return n.kit().Close() }

func run(ctx context.Context, name string, args ...string) error {
	return netns.Run(ctx, name, args...)
}

func runCmd(cmd *exec.Cmd) error { return netns.RunCmd(cmd) }

// errIfDone returns ctx's error wrapped with what was being waited for.
func errIfDone(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}
