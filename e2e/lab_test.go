package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// requireLab skips unless `make e2e` runs the test as root with the lab's
// programs installed, and fails when what it serves is not built. It
// returns the repository root.
func requireLab(t *testing.T) string {
	t.Helper()
	if os.Getenv("BAREMETAL_E2E") == "" {
		t.Skip("end-to-end QEMU test: run `make e2e` (sets BAREMETAL_E2E=1 after building the agent OS and demo image)")
	}
	lab.RequireRoot(t)
	lab.RequireBinaries(t, "ip", lab.QEMUBinary, "qemu-img", "ipmi_sim", "ipmitool")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"build/agent-os/vmlinuz", "build/agent-os/initramfs", "build/images/demo-os.raw"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("%s missing: `make agent-os demo-image` builds it (%v)", f, err)
		}
	}
	return root
}

// build compiles the packages (relative to root) into dir/bin under the
// given names and returns that directory.
func build(t *testing.T, ctx context.Context, root, dir string, pkgs map[string]string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	for pkg, out := range pkgs {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, out), pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return bin
}

// rackUnderTest is a started rack with every server's console followed.
type rackUnderTest struct {
	*lab.Rack
	consoles map[string]*lab.Console
}

// startRack starts a rack of n servers serving the agent OS and images of
// root (shapes, if any, give servers 1, 2, ... their hardware), follows the consoles into dir, and on cleanup dumps provisiond's
// log and the consoles when the test failed, then tears the rack down.
func startRack(t *testing.T, ctx context.Context, root, dir, bin, prefix string, n int, uefi bool, shapes ...lab.Shape) *rackUnderTest {
	t.Helper()
	cfg := rackConfig(root, dir, bin, prefix, n, uefi)
	cfg.Shapes = shapes
	return startRackWith(t, ctx, dir, cfg)
}

// rackConfig is the configuration startRack starts.
func rackConfig(root, dir, bin, prefix string, n int, uefi bool) lab.RackConfig {
	return lab.RackConfig{
		Dir: filepath.Join(dir, "rack"), NSPrefix: prefix, Servers: n, UEFI: uefi,
		Provisiond: filepath.Join(bin, "provisiond"),
		AgentOSDir: filepath.Join(root, "build/agent-os"), ImagesDir: filepath.Join(root, "build/images"),
		ExtraFlags: []string{"--log-level", "debug"},
	}
}

// startRackWith is startRack with a configuration of the test's own.
func startRackWith(t *testing.T, ctx context.Context, dir string, cfg lab.RackConfig) *rackUnderTest {
	t.Helper()
	rack, err := lab.StartRack(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &rackUnderTest{Rack: rack, consoles: map[string]*lab.Console{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("provisiond log (tail):\n%s", lab.Tail([]byte(lab.ReadLog(rack.Daemon.Log)), 6000))
			for name, c := range r.consoles {
				t.Logf("console of %s (tail):\n%s", name, c.Tail(60))
			}
		}
		if err := rack.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, s := range rack.Servers {
		c, err := lab.FollowConsole(ctx, s.BMC.VM.SerialPath(), filepath.Join(dir, s.Name+".console"))
		if err != nil {
			t.Fatal(err)
		}
		r.consoles[s.Name] = c
	}
	return r
}

// admin connects to the rack's provisiond through its namespace.
func (r *rackUnderTest) admin(t *testing.T, ctx context.Context) *client.Client {
	t.Helper()
	c, err := client.New(ctx, client.Config{
		Endpoint: lab.RackGRPC, Token: r.Token, CACert: r.PKI.CACert,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) { return r.NS.Dial(ctx, "tcp", addr) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	return c
}

// since formats the time since start for the test's timeline.
func since(start time.Time) float64 { return time.Since(start).Seconds() }
