package lab

import "strconv"

// AAVMF is arm64 UEFI: QEMU's virt board under qemu-system-aarch64 (TCG)
// with EDK2's AAVMF firmware (Debian packages qemu-system-arm and
// qemu-efi-aarch64). Its own PXE (no iPXE ROM: Debian's are x86 only) asks
// DHCP with option 93 = 11 and loads the boot file over TFTP, as an arm64
// server's UEFI does.
const AAVMF Firmware = "aavmf"

// Debian's qemu-efi-aarch64 firmware (64 MiB flash images) and emulator.
var (
	AAVMFCode       = "/usr/share/AAVMF/AAVMF_CODE.fd"
	AAVMFVars       = "/usr/share/AAVMF/AAVMF_VARS.fd"
	QEMUBinaryARM64 = "qemu-system-aarch64"
	// ARM64CPU is the emulated CPU: a Cortex-A57 is the cheapest to
	// emulate that Debian's arm64 kernel runs on.
	ARM64CPU = "cortex-a57"
)

// Binary is the emulator the VM runs on.
func (vm VM) Binary() string {
	if vm.Firmware == AAVMF {
		return QEMUBinaryARM64
	}
	return QEMUBinary
}

// Arch is the VM's CPU architecture as provisiond's hardware names it:
// "aarch64" for AAVMF, else "x86_64".
func (vm VM) Arch() string {
	if vm.Firmware == AAVMF {
		return "aarch64"
	}
	return "x86_64"
}

// varsTemplate is the pristine UEFI variable store of the VM's firmware,
// or "" for BIOS.
func (vm VM) varsTemplate() string {
	switch vm.Firmware {
	case UEFI:
		return OVMFVars
	case AAVMF:
		return AAVMFVars
	}
	return ""
}

// argsARM64 is Args for an AAVMF VM: virt board, PL011 serial console
// (ttyAMA0), virtio-net and virtio-blk on PCI, bootindex for the order.
func (vm VM) argsARM64(bootOrder string) []string {
	a := []string{
		"-name", vm.Name,
		"-machine", "virt,accel=tcg",
		"-cpu", ARM64CPU,
		"-m", strconv.Itoa(vm.mem()),
		"-display", "none",
		"-serial", "file:" + vm.SerialPath(),
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + AAVMFCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vm.varsFile(),
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
		// romfile=: QEMU's NIC ROMs are x86 code; AAVMF drives virtio-net itself.
		dev := nic + ",netdev=n0,mac=" + vm.mac() + ",romfile="
		if bootOrder == "n" {
			dev += ",bootindex=1"
		}
		a = append(a, "-device", dev)
	} else {
		a = append(a, "-nic", "none")
	}
	a = append(a, vm.diskArgs(bootOrder)...)
	return append(a, vm.ExtraArgs...)
}
