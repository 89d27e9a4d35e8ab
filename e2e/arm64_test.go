package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// Console lines of an arm64 netboot: AAVMF's PXE, the GRUB loader
// (internal/osbuild/grub-arm64.sh), the arm64 kernel.
var (
	reAAVMFPXE = regexp.MustCompile(`Start PXE over IPv4|>>Start PXE`)
	reGRUB     = regexp.MustCompile(`provisiond: GRUB arm64 netboot`)
	reGRUBConf = regexp.MustCompile(`provisiond: boot config http://\S+/grub/`)
	reARM64    = regexp.MustCompile(`Booting Linux on physical CPU|Linux version \S+-arm64`)
)

// TestE2EArm64 installs an arm64 server with the real terraform: its BMC
// (ipmi_sim) powers on a qemu-system-aarch64 virt board (TCG) with AAVMF,
// whose PXE asks DHCP with option 93 = 11 and gets the GRUB arm64 loader
// over TFTP; GRUB reads its config URL from option 17 (root path) and boots the arm64
// agent OS over HTTP; the GOARCH=arm64 agent streams the demo image to the
// disk, which must then equal the image byte for byte; destroy boots the
// agent again and wipes it. It prints the time of every phase.
func TestE2EArm64(t *testing.T) {
	root := requireLab(t)
	lab.RequireBinaries(t, lab.QEMUBinaryARM64)
	for _, f := range []string{lab.AAVMFCode, lab.AAVMFVars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: Debian's qemu-efi-aarch64 (make deps) installs it (%v)", f, err)
		}
	}
	arm := filepath.Join(root, "build/agent-os/arm64")
	grub := filepath.Join(arm, "grubnetaa64.efi")
	for _, f := range []string{grub, filepath.Join(arm, "vmlinuz"), filepath.Join(arm, "initramfs")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: `make agent-os` builds the arm64 agent OS (%v)", f, err)
		}
	}
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	cfg := rackConfig(root, dir, bin, "arm64", 1, false)
	cfg.Shapes = []lab.Shape{{Firmware: lab.AAVMF, MemoryMiB: 1024}}
	cfg.ExtraFlags = append(cfg.ExtraFlags, "--efi-arm64-binary", grub)
	rack := startRackWith(t, ctx, dir, cfg)
	s := rack.Servers[0]
	c := rack.consoles[s.Name]
	t.Logf("%6.1fs rack up: namespace %s, %s is %s (%s)", since(start), rack.NS.Name, s.Name, s.BMC.VM.FirmwareName(), s.BMC.VM.Arch())
	admin := rack.admin(t, ctx)

	tf := newTerraform(t, ctx, rack.Rack, root, terraform, filepath.Join(bin, "terraform-provider-baremetal"), dir, "demo")
	tf.run("init", "-input=false", "-no-color")

	// 1. Install.
	mark := c.Len()
	applyStart := time.Now()
	tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs apply: %s installed in %.1fs", since(start), s.Name, since(applyStart))
	if m := tf.machines()[s.Name]; m.State != "succeeded" {
		t.Errorf("%s: output %+v, want state succeeded", s.Name, m)
	}
	arm64Phases(t, ctx, c, mark, s, applyStart, reAction)
	checkDisk(t, ctx, filepath.Join(root, "build/images/demo-os.raw"), s, true)
	hw, err := admin.ListHardware(ctx, &pb.ListHardwareRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hw.GetHardware() {
		if h.GetArch() != "aarch64" {
			t.Errorf("hardware %s: arch %q, want aarch64", h.GetHostname(), h.GetArch())
		}
		m, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: h.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range m.GetWorkflow().GetActions() {
			t.Logf("    action %s/%s: %s, took %.1fs", a.GetTask(), a.GetName(), a.GetState(),
				a.GetFinishedAt().AsTime().Sub(a.GetStartedAt().AsTime()).Seconds())
		}
	}

	// 2. Destroy: the agent boots again and wipes the disk.
	mark = c.Len()
	destroy := time.Now()
	tf.run("destroy", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs destroy took %.1fs", since(start), since(destroy))
	arm64Phases(t, ctx, c, mark, s, destroy, reWipeStart)
	if out, err := s.BMC.Ipmitool(ctx, "chassis", "power", "status"); err != nil || out != "Chassis Power is off" {
		t.Errorf("%s: power after destroy: %q %v", s.Name, out, err)
	}
	checkDisk(t, ctx, "", s, false)
	t.Logf("%6.1fs done", since(start))
}

// arm64Phases finds the phases of an arm64 netboot on the console from
// mark and logs when each came, counted from the PXE power-on.
func arm64Phases(t *testing.T, ctx context.Context, c *lab.Console, mark int, s *lab.Server, t0 time.Time, last *regexp.Regexp) {
	t.Helper()
	if on, ok := pxePowerOn(s, t0); ok {
		t0 = on
		mark = max(mark, c.IndexAt(on))
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var report []string
	for _, p := range []struct {
		name string
		re   *regexp.Regexp
	}{
		{"AAVMF PXE", reAAVMFPXE}, {"GRUB arm64", reGRUB}, {"GRUB config", reGRUBConf}, {"boot entry", reScript},
		{"arm64 kernel", reARM64}, {"agent running", reAgent}, {"first action", last},
	} {
		j, l, err := c.Wait(wctx, mark, p.re)
		if err != nil {
			t.Errorf("%s: phase %s: %v", s.Name, p.name, err)
			return
		}
		mark = j
		report = append(report, fmt.Sprintf("%s %.1fs", p.name, l.At.Sub(t0).Seconds()))
	}
	t.Logf("  %s (%s): %s", s.Name, s.BMC.VM.FirmwareName(), strings.Join(report, ", "))
}
