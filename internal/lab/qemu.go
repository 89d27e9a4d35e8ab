package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Firmware of a VM.
type Firmware string

const (
	BIOS Firmware = "bios" // SeaBIOS with QEMU's iPXE NIC ROM
	UEFI Firmware = "uefi" // OVMF (Debian package ovmf)
)

// Default firmware files of Debian's ovmf package (4 MiB flash layout).
var (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// QEMUBinary is the emulator that VMs run.
var QEMUBinary = "qemu-system-x86_64"

// VM describes one QEMU machine (TCG, no KVM, no display). Dir holds its
// generated files: the sercon fw_cfg file, a private copy of the UEFI
// variable store, the pidfile.
type VM struct {
	Name      string
	Dir       string
	Firmware  Firmware // default BIOS
	MemoryMiB int      // default 512
	// Network: Tap (a tap device in the namespace QEMU runs in) or, when
	// empty, UserNet (QEMU's own slirp netdev options, e.g.
	// "restrict=on,guestfwd=..."); neither means no NIC.
	Tap     string
	UserNet string
	MAC     string // default derived from Name
	NIC     string // device model, default virtio-net-pci
	// NoNICROM leaves the NIC without QEMU's iPXE option ROM, so the
	// firmware's own network stack boots it: with OVMF that is EDK2's PXE,
	// which asks DHCP for a boot file and fetches it by TFTP as a real
	// server's UEFI does.
	NoNICROM bool
	// HTTPBoot (UEFI only) is firmware setup with PXE disabled and UEFI
	// HTTP boot enabled: OVMF's IPv4 and IPv6 PXE boot options are turned
	// off by fw_cfg (opt/org.tianocore/IPv4PXESupport and IPv6PXESupport,
	// edk2's OvmfPkg/RUNTIME_CONFIG.md), so the NIC's first boot option is
	// "UEFI HTTPv4": a DHCP request with option 60 "HTTPClient" and the
	// boot file fetched by URL, no TFTP. Needs NoNICROM (EDK2's own
	// network stack) to mean anything.
	HTTPBoot bool
	// Disk is an image file attached as a virtio disk (or, DiskDevice
	// NVMe, an NVMe controller with one namespace); DiskFormat defaults to
	// qcow2. Snapshot discards writes (a read-only base image).
	Disk       string
	DiskFormat string
	DiskDevice DiskDevice
	DiskByID   bool // the disk gets a serial (the VM name) and GuestDisk is its /dev/disk/by-id link
	Snapshot   bool
	SerialLog  string // default Dir/serial.log
	ExtraArgs  []string
}

// DiskDevice is the controller a VM's disk sits on.
type DiskDevice string

const (
	VirtioBlk DiskDevice = "virtio-blk" // virtio-blk-pci: /dev/vda (the default)
	NVMe      DiskDevice = "nvme"       // QEMU's nvme controller: /dev/nvme0n1
	SATA      DiskDevice = "sata"       // a SATA disk on an AHCI controller: /dev/sda
)

// GuestDisk is the name the guest's kernel gives the disk, or with
// DiskByID its /dev/disk/by-id link as udev (and the agent OS) name it:
// the disk's serial is the VM's name.
func (vm VM) GuestDisk() string {
	switch {
	case vm.DiskDevice == NVMe && vm.DiskByID:
		return "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_" + vm.Name
	case vm.DiskDevice == NVMe:
		return "/dev/nvme0n1"
	case vm.DiskDevice == SATA: // DiskByID is not made for it
		return "/dev/sda"
	case vm.DiskByID:
		return "/dev/disk/by-id/virtio-" + vm.Name
	}
	return "/dev/vda"
}

// FirmwareName is "bios" or "uefi".
func (vm VM) FirmwareName() string {
	if vm.Firmware == "" {
		return string(BIOS)
	}
	return string(vm.Firmware)
}

func (vm VM) mem() int {
	if vm.MemoryMiB > 0 {
		return vm.MemoryMiB
	}
	return 512
}

// MACFor derives a stable locally administered MAC from a name.
func MACFor(name string) string {
	h := uint32(2166136261)
	for _, c := range []byte(name) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(h>>16), byte(h>>8), byte(h))
}

func (vm VM) mac() string {
	if vm.MAC != "" {
		return vm.MAC
	}
	return MACFor(vm.Name)
}

// SerialPath is where the VM's serial console is written.
func (vm VM) SerialPath() string {
	if vm.SerialLog != "" {
		return vm.SerialLog
	}
	return filepath.Join(vm.Dir, "serial.log")
}

// PIDFile is where a daemonized QEMU writes its PID.
func (vm VM) PIDFile() string { return filepath.Join(vm.Dir, "qemu.pid") }

func (vm VM) serconFile() string { return filepath.Join(vm.Dir, "sercon-port") }
func (vm VM) varsFile() string   { return filepath.Join(vm.Dir, "OVMF_VARS.fd") }

// Prepare creates Dir and the files the command line refers to: the sercon
// fw_cfg file (LAB.md pitfall 5: SeaBIOS and iPXE mirror their VGA text to
// the serial port at I/O port 0x3f8 when etc/sercon-port holds it) and, for
// UEFI, a writable copy of the OVMF variable store.
func (vm VM) Prepare() error {
	if vm.Dir == "" {
		return errors.New("vm: Dir is required")
	}
	if err := os.MkdirAll(vm.Dir, 0o755); err != nil {
		return fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	if err := os.WriteFile(vm.serconFile(), []byte{0xf8, 0x03}, 0o644); err != nil {
		return fmt.Errorf("vm %s: write sercon file: %w", vm.Name, err)
	}
	if tmpl := vm.varsTemplate(); tmpl != "" {
		if _, err := os.Stat(vm.varsFile()); err == nil {
			return nil // keep the variables across power cycles, as a real board does
		}
		b, err := os.ReadFile(tmpl)
		if err != nil {
			return fmt.Errorf("vm %s: UEFI variables (apt-get install ovmf, or qemu-efi-aarch64 for arm64): %w", vm.Name, err)
		}
		if err := os.WriteFile(vm.varsFile(), b, 0o644); err != nil {
			return fmt.Errorf("vm %s: %w", vm.Name, err)
		}
	}
	return nil
}

// Args returns QEMU's arguments (without the binary) for booting with the
// given boot order: "n" network, "c" disk. It does no I/O; call Prepare once
// before starting QEMU.
func (vm VM) Args(bootOrder string) []string {
	if vm.Firmware == AAVMF {
		return vm.argsARM64(bootOrder)
	}
	a := []string{
		"-name", vm.Name,
		"-machine", "pc,accel=tcg",
		// RDRAND: without it getrandom blocks and Go DHCP clients hang (pitfall 2).
		"-cpu", "qemu64,+rdrand",
		"-m", strconv.Itoa(vm.mem()),
		"-display", "none", "-vga", "none",
		// No -no-reboot: a guest that reboots (iPXE giving up, a kernel
		// panic with panic=N) comes back as a real server would.
		"-serial", "file:" + vm.SerialPath(),
		"-fw_cfg", "name=etc/sercon-port,file=" + vm.serconFile(),
		"-boot", "order=" + bootOrder,
	}
	if vm.Firmware == UEFI {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vm.varsFile())
		if vm.HTTPBoot {
			// A setup setting, so on every boot whatever the order.
			a = append(a,
				"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
				"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
		}
	}
	nic := vm.NIC
	if nic == "" {
		nic = "virtio-net-pci"
	}
	switch {
	case vm.Tap != "":
		a = append(a, "-netdev", "tap,id=n0,ifname="+vm.Tap+",script=no,downscript=no")
	case vm.UserNet != "":
		a = append(a, "-netdev", "user,id=n0,"+vm.UserNet)
	}
	if vm.Tap != "" || vm.UserNet != "" {
		dev := nic + ",netdev=n0,mac=" + vm.mac()
		if vm.NoNICROM {
			dev += ",romfile="
		}
		if bootOrder == "n" {
			dev += ",bootindex=1" // pitfall 7: the pc machine does not net-boot otherwise
		}
		a = append(a, "-device", dev)
	} else {
		a = append(a, "-nic", "none")
	}
	a = append(a, vm.diskArgs(bootOrder)...)
	return append(a, vm.ExtraArgs...)
}

// Process is a QEMU started in the foreground by Start.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs QEMU (inside ns when not nil) until Stop or ctx ends. Output
// other than the serial console goes to Dir/qemu.out.
func (vm VM) Start(ctx context.Context, ns *NetNS, bootOrder string) (*Process, error) {
	if err := vm.Prepare(); err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(ctx, vm.Binary(), vm.Args(bootOrder)...)
	} else {
		cmd = exec.CommandContext(ctx, vm.Binary(), vm.Args(bootOrder)...)
	}
	out, err := os.Create(filepath.Join(vm.Dir, "qemu.out"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = out.Close() // never written: QEMU did not start
		return nil, fmt.Errorf("start qemu for %s: %w", vm.Name, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = out.Close() // QEMU wrote through its own descriptor: ours holds nothing
		close(p.done)
	}()
	return p, nil
}

// Done is closed when QEMU has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop kills QEMU (SIGKILL by PID) and waits for it.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// KillPIDFile kills the process whose PID is in file (a daemonized QEMU),
// waits up to timeout for it to go and removes the file.
func KillPIDFile(file string, timeout time.Duration) error {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("pidfile %s: bad pid %q", file, b)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(timeout)
	for running(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still alive after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return os.Remove(file)
}

// PIDAlive reports whether the process in a pidfile is running.
func PIDAlive(file string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && pid > 1 && running(pid)
}

// running reports whether pid exists and is not a zombie (a killed process
// waiting to be reaped by a parent that may never do it).
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces, so split after the last ')'.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// WaitDone waits for ctx or the process to end.
func (p *Process) WaitDone(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return errIfDone(ctx, "qemu exit")
	}
}

// CreateDisk creates an empty qcow2 disk image of sizeMiB with qemu-img.
func CreateDisk(ctx context.Context, path string, sizeMiB int) error {
	if err := run(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, fmt.Sprintf("%dM", sizeMiB)); err != nil {
		return fmt.Errorf("create disk %s: %w", path, err)
	}
	return nil
}

// diskArgs attach the VM's disk, if it has one, on its controller: the
// same for every machine kind.
func (vm VM) diskArgs(bootOrder string) []string {
	if vm.Disk == "" {
		return nil
	}
	format := vm.DiskFormat
	if format == "" {
		format = "qcow2"
	}
	drive := "file=" + vm.Disk + ",format=" + format + ",if=none,id=d0"
	if vm.Snapshot {
		drive += ",snapshot=on"
	}
	dev := "virtio-blk-pci,drive=d0"
	if vm.DiskByID {
		dev += ",serial=" + vm.Name
	}
	var ctrl []string
	switch vm.DiskDevice {
	case NVMe:
		dev = "nvme,serial=" + vm.Name + ",drive=d0"
	case SATA:
		ctrl = []string{"-device", "ahci,id=ahci0"}
		dev = "ide-hd,drive=d0,bus=ahci0.0"
	}
	if bootOrder == "c" {
		dev += ",bootindex=1"
	}
	return append(ctrl, "-drive", drive, "-device", dev)
}
