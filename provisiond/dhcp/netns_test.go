package dhcp

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/netns"
)

// link is two network namespaces joined by a veth pair: the server side
// (vsrv, 10.99.0.1/16) and the client side (vcli, no address unless asked).
// Nothing leaves them; both are deleted in cleanup.
type link struct {
	srv, cli string
}

func needRoot(t testing.TB) {
	t.Helper()
	netns.Require(t)
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sides [2]*netns.NS
	for i, prefix := range []string{"bmdhcp-s", "bmdhcp-c"} {
		ns, err := netns.New(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ns.Close(); err != nil {
				t.Error(err)
			}
		})
		sides[i] = ns
	}
	srv, cli := sides[0], sides[1]
	if err := netns.AddVeth(ctx, srv, "vsrv", "", cli, "vcli", cliMAC); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ns   *netns.NS
		args []string
	}{
		{srv, []string{"addr", "add", "10.99.0.1/16", "dev", "vsrv"}},
		{srv, []string{"link", "set", "vsrv", "up"}},
		{cli, []string{"link", "set", "vcli", "up"}},
	} {
		if err := c.ns.Run(ctx, "ip", c.args...); err != nil {
			t.Fatal(err)
		}
	}
	return link{srv: srv.Name, cli: cli.Name}
}
