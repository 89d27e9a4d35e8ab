package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBMCPowersVMIntoPXE proves the harness end to end: in a namespace of its
// own, ipmitool sets the boot device to PXE and powers on a VM through
// ipmi_sim; the VM's serial console shows SeaBIOS and then iPXE starting a
// network boot on the tap device (sercon trick); power off kills QEMU.
func TestBMCPowersVMIntoPXE(t *testing.T) {
	RequireRoot(t)
	RequireBinaries(t, "ip", QEMUBinary, "ipmi_sim", "ipmitool")
	mac := regexp.QuoteMeta(MACFor("pxe0"))
	tests := map[Firmware][]*regexp.Regexp{
		BIOS: {
			regexp.MustCompile(`SeaBIOS \(version`),
			regexp.MustCompile(`iPXE \(https?://ipxe\.org\)`),
			regexp.MustCompile(`Booting from ROM`),
			regexp.MustCompile(`net0: ` + mac + ` using virtio-net`),
		},
		UEFI: {
			regexp.MustCompile(`iPXE \S+.*Open Source Network Boot Firmware`),
			regexp.MustCompile(`net0: ` + mac + ` using virtio-net`),
		},
	}
	for _, fw := range []Firmware{BIOS, UEFI} {
		t.Run(string(fw), func(t *testing.T) {
			if fw == UEFI {
				if _, err := os.Stat(OVMFCode); err != nil {
					t.Skipf("OVMF not installed (apt-get install ovmf): %v", err)
				}
			}
			testPowerIntoPXE(t, fw, tests[fw])
		})
	}
}

func testPowerIntoPXE(t *testing.T, fw Firmware, lines []*regexp.Regexp) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	mark := func(what string) { t.Logf("%-28s %6.2fs", what, time.Since(start).Seconds()) }

	ns, err := NewNetNS(ctx, "labtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := ns.AddTap(ctx, "tap0", "10.99.0.1/24"); err != nil {
		t.Fatal(err)
	}
	mark("netns+tap ready")
	bmc := &BMC{VM: VM{Name: "pxe0", Dir: t.TempDir(), Tap: "tap0", MemoryMiB: 256, Firmware: fw}, Port: 9623}
	if err := bmc.Start(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bmc.Close(); err != nil {
			t.Error(err)
		}
	})
	mark("ipmi_sim answering")

	ipmi := func(args ...string) string {
		t.Helper()
		out, err := bmc.Ipmitool(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := ipmi("chassis", "power", "status"); got != "Chassis Power is off" {
		t.Fatalf("initial power status %q", got)
	}
	ipmi("chassis", "bootdev", "pxe")
	ipmi("chassis", "power", "on")
	mark("power on sent")
	if got := ipmi("chassis", "power", "status"); got != "Chassis Power is on" {
		t.Fatalf("power status after on: %q", got)
	}
	serial := bmc.VM.SerialPath()
	for _, want := range lines {
		line, err := WaitForLine(ctx, serial, want)
		if err != nil {
			t.Fatal(err)
		}
		mark(fmt.Sprintf("serial %q", strings.TrimSpace(want.String())))
		t.Logf("  %s", strings.TrimSpace(line))
	}
	// iPXE's DHCP attempt: the line ends only when it gives up, so match
	// the unfinished line.
	if _, err := WaitForOutput(ctx, serial, regexp.MustCompile(`Configuring \(net0 [0-9a-f:]+\)\.`)); err != nil {
		t.Fatal(err)
	}
	mark("serial: iPXE sending DHCP")
	if !PIDAlive(bmc.VM.PIDFile()) {
		t.Fatal("QEMU not running")
	}
	ipmi("chassis", "power", "off")
	mark("power off sent")
	if PIDAlive(bmc.VM.PIDFile()) {
		t.Error("QEMU still running after power off")
	}
	if got := ipmi("chassis", "power", "status"); got != "Chassis Power is off" {
		t.Errorf("power status after off: %q", got)
	}
	power := ReadLog(filepath.Join(bmc.dir(), "power.log"))
	if !strings.Contains(power, "power on order=n") {
		t.Errorf("power log %q: want a PXE (order=n) power-on", power)
	}
	mark("done")
}
