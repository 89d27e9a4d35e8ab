package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVMArgs(t *testing.T) {
	tests := map[string]struct {
		vm      VM
		order   string
		want    []string // must appear, in this order, as adjacent pairs
		notWant []string
	}{
		"bios pxe on tap": {
			vm:      VM{Name: "a", Dir: "/x", Tap: "tap0", MAC: "52:54:00:00:00:01"},
			order:   "n",
			want:    []string{"-boot", "order=n", "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"},
			notWant: []string{"if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode},
		},
		"uefi disk boot": {
			vm:    VM{Name: "b", Dir: "/y", Firmware: UEFI, Disk: "/y/d.qcow2", UserNet: "restrict=on", MAC: "52:54:00:00:00:02"},
			order: "c",
			want: []string{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode, "-drive", "if=pflash,format=raw,unit=1,file=/y/OVMF_VARS.fd",
				"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02", "-drive", "file=/y/d.qcow2,format=qcow2,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,bootindex=1"},
		},
		"uefi nvme disk, e1000e nic": {
			vm:    VM{Name: "d", Dir: "/w", Firmware: UEFI, Disk: "/w/d.qcow2", DiskDevice: NVMe, Tap: "tap1", NIC: "e1000e", MAC: "52:54:00:00:00:04", MemoryMiB: 1024},
			order: "c",
			want: []string{"-m", "1024", "-device", "e1000e,netdev=n0,mac=52:54:00:00:00:04",
				"-drive", "file=/w/d.qcow2,format=qcow2,if=none,id=d0", "-device", "nvme,serial=d,drive=d0,bootindex=1"},
			notWant: []string{"virtio-blk-pci,drive=d0,bootindex=1"},
		},
		"uefi sata disk": {
			vm:    VM{Name: "g", Dir: "/t", Firmware: UEFI, Disk: "/t/d.qcow2", DiskDevice: SATA, Tap: "tap4", MAC: "3c:ec:ef:10:20:31"},
			order: "c",
			want: []string{"-device", "ahci,id=ahci0", "-drive", "file=/t/d.qcow2,format=qcow2,if=none,id=d0",
				"-device", "ide-hd,drive=d0,bus=ahci0.0,bootindex=1"},
			notWant: []string{"virtio-blk-pci,drive=d0,bootindex=1"},
		},
		"uefi http boot, pxe off in setup": {
			vm:    VM{Name: "e", Dir: "/v", Firmware: UEFI, HTTPBoot: true, NoNICROM: true, Tap: "tap2", MAC: "52:54:00:00:00:05"},
			order: "n",
			want: []string{"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n", "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
				"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:05,romfile=,bootindex=1"},
		},
		"http boot ignored on bios": {
			vm:      VM{Name: "f", Dir: "/u", HTTPBoot: true, Tap: "tap3", MAC: "52:54:00:00:00:06"},
			order:   "n",
			notWant: []string{"name=opt/org.tianocore/IPv4PXESupport,string=n"},
		},
		"arm64 aavmf pxe": {
			vm:    VM{Name: "e", Dir: "/v", Firmware: AAVMF, Disk: "/v/d.qcow2", Tap: "tap2", MAC: "52:54:00:00:00:05", MemoryMiB: 1024},
			order: "n",
			want: []string{"-machine", "virt,accel=tcg", "-cpu", ARM64CPU, "-m", "1024",
				"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + AAVMFCode, "-drive", "if=pflash,format=raw,unit=1,file=/v/OVMF_VARS.fd",
				"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:05,romfile=,bootindex=1", "-device", "virtio-blk-pci,drive=d0"},
			notWant: []string{"-fw_cfg", "qemu64,+rdrand", "virtio-blk-pci,drive=d0,bootindex=1"},
		},
		"no nic": {
			vm:    VM{Name: "c", Dir: "/z", MemoryMiB: 128},
			order: "c",
			want:  []string{"-m", "128", "-serial", "file:/z/serial.log", "-fw_cfg", "name=etc/sercon-port,file=/z/sercon-port", "-cpu", "qemu64,+rdrand", "-nic", "none"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := tc.vm.Args(tc.order)
			pairs := map[string][]string{}
			for i := 0; i+1 < len(got); i++ {
				pairs[got[i]] = append(pairs[got[i]], got[i+1])
			}
			for i := 0; i+1 < len(tc.want); i += 2 {
				if !slices.Contains(pairs[tc.want[i]], tc.want[i+1]) {
					t.Errorf("missing %s %s in %q", tc.want[i], tc.want[i+1], got)
				}
			}
			for _, nw := range tc.notWant {
				if slices.Contains(got, nw) {
					t.Errorf("unexpected %s", nw)
				}
			}
		})
	}
}

func TestMACForStable(t *testing.T) {
	got := []string{MACFor("vm0"), MACFor("vm0"), MACFor("vm1")}
	if got[0] != got[1] || got[0] == got[2] || !regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`).MatchString(got[0]) {
		t.Errorf("MACFor: %q", got)
	}
}

func TestWaitForLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	go func() {
		time.Sleep(150 * time.Millisecond)
		if err := os.WriteFile(path, []byte("SeaBIOS (version 1.16)\r\niPXE (http://ipxe.org) 00:03.0\r\npartial"), 0o644); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line, err := WaitForLine(ctx, path, regexp.MustCompile(`^iPXE`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("iPXE (http://ipxe.org) 00:03.0", line); diff != "" {
		t.Error(diff)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := WaitForString(short, path, "partial"); err == nil {
		t.Error("matched an unterminated line")
	}
}

// TestChassisScript drives the generated script directly, with a stand-in
// emulator that records its arguments and sleeps like a running VM.
func TestChassisScript(t *testing.T) {
	dir := t.TempDir()
	standInQEMU(t, dir)
	b := &BMC{VM: VM{Name: "s", Dir: dir}, Port: 1}
	if err := os.MkdirAll(b.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	cs := filepath.Join(b.dir(), "chassis-control")
	if err := os.WriteFile(cs, []byte(b.ChassisScript()), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = KillPIDFile(b.VM.PIDFile(), 2*time.Second) })
	call := func(args ...string) string {
		out, err := exec.Command(cs, append([]string{"0x20"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("chassis-control %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"get", "power", "boot"}, "power:0\nboot:default"},
		{[]string{"set", "boot", "pxe"}, ""},
		{[]string{"set", "power", "1"}, ""},
		{[]string{"get", "power", "boot"}, "power:1\nboot:pxe"},
		{[]string{"set", "power", "0"}, ""},
		{[]string{"get", "power"}, "power:0"},
		{[]string{"set", "boot", "default"}, ""},
		{[]string{"set", "power", "1"}, ""},
	}
	for _, s := range steps {
		if diff := cmp.Diff(s.want, call(s.args...)); diff != "" {
			t.Errorf("%v (-want +got):\n%s", s.args, diff)
		}
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if !strings.Contains(string(args), "order=c") || !strings.Contains(string(args), "-daemonize") {
		t.Errorf("after bootdev default the VM started with %q, want order=c", args)
	}
	if !PIDAlive(b.VM.PIDFile()) {
		t.Error("VM not running after power on")
	}
}

// standInQEMU points QEMUBinary at a script that records its arguments in
// dir/args and honours -daemonize -pidfile by forking a sleeper.
func standInQEMU(t *testing.T, dir string) {
	fake := filepath.Join(dir, "fake-qemu")
	script := `#!/bin/sh
echo "$@" > "` + dir + `/args"
while [ $# -gt 0 ]; do [ "$1" = -pidfile ] && pidf=$2; shift; done
sleep 60 </dev/null >/dev/null 2>&1 &
echo $! > "$pidf"
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := QEMUBinary
	QEMUBinary = fake
	t.Cleanup(func() { QEMUBinary = old })
}

// TestBMCCommands drives every chassis command the BMC worker uses through a
// real ipmi_sim (with a stand-in emulator, so no VM boots) and checks what
// the chassis script did.
func TestBMCCommands(t *testing.T) {
	RequireRoot(t)
	RequireBinaries(t, "ip", "ipmi_sim", "ipmitool")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	standInQEMU(t, dir)
	ns, err := NewNetNS(ctx, "labbmc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	bmc := &BMC{VM: VM{Name: "cmds", Dir: dir}, Port: 9624, User: "root", Password: "s3cret"}
	if err := bmc.Start(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bmc.Close() })
	steps := []struct {
		args      []string
		wantPower bool
		wantOrder string // last power-on's boot order, "" for no check
	}{
		{[]string{"chassis", "bootdev", "pxe"}, false, ""},
		{[]string{"chassis", "power", "on"}, true, "order=n"},
		{[]string{"chassis", "bootdev", "disk"}, true, ""},
		// ipmi_sim turns a power cycle into "set power 0" at once and
		// "set power 1" 1-2 s later from its own timer (see the BMC doc
		// comment): right after the call the VM reads off.
		{[]string{"chassis", "power", "cycle"}, false, ""},
		{[]string{"chassis", "power", "on"}, true, "order=c"},
		{[]string{"chassis", "bootdev", "pxe"}, true, ""},
		{[]string{"chassis", "power", "reset"}, true, "order=n"},
		{[]string{"chassis", "power", "off"}, false, ""},
	}
	for _, s := range steps {
		if _, err := bmc.Ipmitool(ctx, s.args...); err != nil {
			t.Fatal(err)
		}
		status, err := bmc.Ipmitool(ctx, "chassis", "power", "status")
		if err != nil {
			t.Fatal(err)
		}
		if got := status == "Chassis Power is on"; got != s.wantPower {
			t.Errorf("after %v: %q", s.args, status)
		}
		if s.wantOrder != "" {
			after, _ := os.ReadFile(filepath.Join(dir, "args"))
			if !strings.Contains(string(after), s.wantOrder) {
				t.Errorf("after %v: emulator started with %q, want %s", s.args, after, s.wantOrder)
			}
		}
	}
	t.Logf("power log:\n%s", ReadLog(filepath.Join(bmc.dir(), "power.log")))
	t.Logf("calls:\n%s", ReadLog(filepath.Join(bmc.dir(), "calls.log")))
	t.Logf("stored boot device: %s", ReadLog(filepath.Join(bmc.dir(), "bootdev")))
}
