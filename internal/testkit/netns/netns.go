// Package netns is the test kit's network namespaces: created with lo up,
// joined by veth pairs, commands run inside them with `ip netns exec`, and
// goroutines switched into them for sockets of their own. Nothing a test
// sends from inside leaves them; Close deletes them.
//
// It is used by the tests of provisiond/dhcp and provisiond/ra and by
// internal/lab (whose cmd/demolab links no testing code), so it takes the
// small interfaces below instead of testing.TB.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Skipper is the part of testing.TB that Require uses.
type Skipper interface {
	Helper()
	Skip(args ...any)
}

// Fataler is the part of testing.TB that In uses.
type Fataler interface {
	Helper()
	Fatal(args ...any)
}

// Require skips t unless the test runs as root and iproute2's ip (and
// every other program named) is installed.
func Require(t Skipper, programs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (run the tests as root, as .ci/run does)")
	}
	for _, p := range append([]string{"ip"}, programs...) {
		if _, err := exec.LookPath(p); err != nil {
			t.Skip(fmt.Sprintf("skipping: %s is not installed: %v", p, err))
		}
	}
}

// NS is a network namespace created by this process.
type NS struct {
	Name string
}

// New creates a namespace named prefix-<8 hex digits> with lo up. Names
// are at most 15 bytes of prefix plus 9, unique per call.
func New(ctx context.Context, prefix string) (*NS, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("name a netns: %w", err)
	}
	ns := &NS{Name: prefix + "-" + hex.EncodeToString(b[:])}
	if err := Run(ctx, "ip", "netns", "add", ns.Name); err != nil {
		return nil, fmt.Errorf("create netns %s: %w", ns.Name, err)
	}
	if err := ns.Run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		_ = ns.Close() // the namespace is unusable; its creation error is the one to report
		return nil, fmt.Errorf("netns %s: lo up: %w", ns.Name, err)
	}
	return ns, nil
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its error with output.
func (n *NS) Run(ctx context.Context, name string, args ...string) error {
	return RunCmd(n.Command(ctx, name, args...))
}

// Close deletes the namespace. Processes still inside keep it alive:
// stop them first.
func (n *NS) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Run(ctx, "ip", "netns", "del", n.Name); err != nil {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}

// Do runs fn on a thread switched into the namespace, then switches the
// thread back. Sockets made in fn stay in the namespace whichever thread
// uses them later.
func (n *NS) Do(fn func()) error { return Do(n.Name, fn) }

// AddVeth creates a veth pair: devA (MAC macA) in a and devB (MAC macB) in
// b, both down. An empty MAC leaves the kernel's.
func AddVeth(ctx context.Context, a *NS, devA, macA string, b *NS, devB, macB string) error {
	args := []string{"link", "add", devA}
	if macA != "" {
		args = append(args, "address", macA)
	}
	args = append(args, "type", "veth", "peer", "name", devB)
	if macB != "" {
		args = append(args, "address", macB)
	}
	args = append(args, "netns", b.Name)
	if err := a.Run(ctx, "ip", args...); err != nil {
		return fmt.Errorf("veth %s (%s) to %s (%s): %w", devA, a.Name, devB, b.Name, err)
	}
	return nil
}

// Enter moves the calling thread into namespace name. The caller has
// locked the goroutine to its thread (runtime.LockOSThread) and, unless it
// switches back, never unlocks it: the runtime then ends the thread with
// the goroutine.
func Enter(name string) error {
	f, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer func() { _ = f.Close() }() // a namespace handle, only read
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	return nil
}

// Do runs fn on a thread switched into namespace name, then switches the
// thread back. If it cannot switch back it panics: the thread stays
// locked and dies with the goroutine.
func Do(name string, fn func()) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own netns: %w", err)
	}
	defer func() { _ = orig.Close() }() // a namespace handle, only read
	if err := Enter(name); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("leave netns %s: %v", name, err))
		}
		runtime.UnlockOSThread()
	}()
	fn()
	return nil
}

// In is Do for a test: it fails t if the thread cannot enter the namespace.
func In(t Fataler, name string, fn func()) {
	t.Helper()
	if err := Do(name, fn); err != nil {
		t.Fatal(err)
	}
}

// Run runs a command (outside any namespace) and returns its error with
// its output.
func Run(ctx context.Context, name string, args ...string) error {
	return RunCmd(exec.CommandContext(ctx, name, args...))
}

// RunCmd runs cmd and returns its error with the command line and output.
func RunCmd(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
