package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// TestE2ENetbootOff boots a BIOS server whose hardware has allow_pxe off
// with its BMC's boot device set to PXE, as a server whose firmware tries
// the network first does at every power-on: it must get its reserved
// address and boot the OS on its disk, never the agent OS.
func TestE2ENetbootOff(t *testing.T) {
	root := requireLab(t)
	image := filepath.Join(root, "build/images/demo-os.raw")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond"})
	t.Logf("%6.1fs built provisiond", since(start))

	// The agent OS is served as in TestE2E, so a wrong decision would boot
	// it rather than fail for want of it.
	rack := startRack(t, ctx, root, dir, bin, "e2enb", 1, false)
	s := rack.Servers[0]
	console := rack.consoles[s.Name]
	t.Logf("%6.1fs rack up: namespace %s, provisiond serving", since(start), rack.NS.Name)

	// The server was installed earlier: the demo OS on its disk. -n writes
	// into the rack's empty disk, so it keeps its virtual size.
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", image, s.BMC.VM.Disk).CombinedOutput(); err != nil {
		t.Fatalf("write the demo OS onto %s: %v: %s", s.BMC.VM.Disk, err, out)
	}

	admin := rack.admin(t, ctx)
	hw, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Hostname:   s.Name,
		Interfaces: []*pb.Interface{{Mac: s.MAC, Ip: s.Address, Gateway: lab.RackAddress}},
		Disks:      []string{"/dev/vda"},
		Bmc: &pb.BMC{Driver: "ipmi", Address: "127.0.0.1", Port: uint32(s.BMC.Port),
			Username: s.BMC.User, Password: rack.BMCPassword},
		Netboot: &pb.Netboot{AllowPxe: false, AllowWorkflow: false},
	}})
	if err != nil {
		t.Fatalf("register %s: %v", s.Name, err)
	}
	if hw.GetNetboot().GetAllowPxe() {
		t.Fatalf("%s registered with allow_pxe on", s.Name)
	}

	// The firmware tries the network first, as after an install or on a
	// board whose boot order starts with PXE.
	for _, args := range [][]string{{"chassis", "bootdev", "pxe"}, {"chassis", "power", "on"}} {
		if _, err := s.BMC.Ipmitool(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	powerOn := time.Now()
	t.Logf("%6.1fs %s powered on, boot device pxe", since(start), s.Name)

	ip := strings.Split(s.Address, "/")[0]
	wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer wcancel()
	phases := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"iPXE opens the NIC", regexp.MustCompile(`net0: .*\(open\)|\[Link:up`)},
		{"iPXE has the reserved address", regexp.MustCompile(`net0: ` + regexp.QuoteMeta(ip) + `/255\.255\.255\.0`)},
		// SeaBIOS once iPXE gives up (no boot file), or iPXE sanbooting
		// the disk should provisiond ever hand it its local-disk script.
		{"disk boot", regexp.MustCompile(`Booting from (Hard Disk|SAN device 0x80)`)},
		{"installed OS booting", reDemoBoot},
		{"hostname from metadata", regexp.MustCompile(`DEMO-OS hostname=` + regexp.QuoteMeta(s.Name) + `$`)},
	}
	var report []string
	i := 0
	for _, p := range phases {
		j, l, err := console.Wait(wctx, i, p.re)
		if err != nil {
			t.Fatalf("%s: %s: %v", s.Name, p.name, err)
		}
		i = j
		report = append(report, fmt.Sprintf("%s %.1fs", p.name, l.At.Sub(powerOn).Seconds()))
	}
	t.Logf("  %s (bios, netboot off): %s", s.Name, strings.Join(report, ", "))

	// Nothing of the agent OS was asked for: no script booting it, no
	// kernel fetched.
	for _, re := range []*regexp.Regexp{reScript, regexp.MustCompile(`/boot/vmlinuz`), reAgent} {
		if _, l, err := firstMatch(console, re); err == nil {
			t.Errorf("%s: the console shows the agent OS: %q", s.Name, l.Text)
		}
	}

	// provisiond's side: it ACKed the reserved address to the firmware's
	// DHCP and the demo OS's, and told iPXE netboot is off rather than
	// give it a boot file; nothing asked it for the agent OS.
	plog := lab.ReadLog(rack.Daemon.Log)
	var acks, off, bootFiles, agent int
	for _, line := range strings.Split(plog, "\n") {
		if !strings.Contains(line, "mac="+s.MAC) {
			continue
		}
		switch {
		case strings.Contains(line, "msg=reply ") && strings.Contains(line, "reply=ACK") && strings.Contains(line, "yiaddr="+ip):
			acks++
		case strings.Contains(line, `msg="netboot is off: no boot file"`):
			off++
		case strings.Contains(line, `msg="boot file"`):
			bootFiles++
		case strings.Contains(line, `msg="iPXE script: boot the agent OS"`):
			agent++
		}
	}
	if acks < 2 {
		t.Errorf("provisiond logged %d DHCP ACKs of %s to %s, want 2 (iPXE, then the demo OS)", acks, ip, s.MAC)
	}
	if off == 0 {
		t.Errorf("provisiond never logged that netboot is off for %s's iPXE DHCP", s.MAC)
	}
	if bootFiles != 0 || agent != 0 {
		t.Errorf("provisiond handed %s a boot file %d times and the agent OS script %d times; netboot is off", s.MAC, bootFiles, agent)
	}
	t.Logf("  provisiond: %d DHCP ACKs of %s, %d iPXE replies without a boot file (netboot off), no agent OS script", acks, ip, off)
	t.Logf("%6.1fs done", since(start))
}

// firstMatch returns the first console line so far that matches re, or an
// error when none does.
func firstMatch(c *lab.Console, re *regexp.Regexp) (int, lab.ConsoleLine, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // look only at the lines already seen
	return c.Wait(ctx, 0, re)
}
