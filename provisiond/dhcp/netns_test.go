package dhcp

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// link is two network namespaces joined by a veth pair: the server side
// (vsrv, 10.99.0.1/16) and the client side (vcli, no address unless asked).
// Nothing leaves them; both are deleted in cleanup.
type link struct {
	srv, cli string
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (run the tests as root, as .ci/run does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip command (iproute2) is not installed")
	}
}

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newLink creates the namespaces; cliMAC is vcli's MAC address.
func newLink(t testing.TB, cliMAC string) link {
	t.Helper()
	needRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	l := link{srv: "bmdhcp-s-" + id, cli: "bmdhcp-c-" + id}
	run(t, "ip", "netns", "add", l.srv)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.srv).Run() }) // test cleanup
	run(t, "ip", "netns", "add", l.cli)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.cli).Run() }) // test cleanup
	run(t, "ip", "-n", l.srv, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.cli, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.srv, "link", "add", "vsrv", "type", "veth", "peer", "name", "vcli", "netns", l.cli)
	run(t, "ip", "-n", l.cli, "link", "set", "vcli", "address", cliMAC)
	run(t, "ip", "-n", l.srv, "addr", "add", "10.99.0.1/16", "dev", "vsrv")
	run(t, "ip", "-n", l.srv, "link", "set", "vsrv", "up")
	run(t, "ip", "-n", l.cli, "link", "set", "vcli", "up")
	return l
}

// in runs fn on a thread switched into namespace ns. Sockets made in fn
// stay in ns after it returns, whichever thread later uses them.
func in(t testing.TB, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("open own netns: %v", err)
	}
	defer func() { _ = orig.Close() }() // test cleanup
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("open netns %s: %v", ns, err)
	}
	defer func() { _ = target.Close() }() // test cleanup
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", ns, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime ends it with the goroutine.
			panic(fmt.Sprintf("leave netns %s: %v", ns, err))
		}
		runtime.UnlockOSThread()
	}()
	fn()
}
