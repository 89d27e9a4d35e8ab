package osbuild

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// DemoModules are what the demo OS ships: the virtio stack plus the NIC and
// disk drivers of QEMU's other common device models.
var DemoModules = append(append([]string(nil), VirtioModules...), "e1000", "e1000e", "ahci", "nvme")

// DemoImageConfig says how to build the demo OS disk image.
type DemoImageConfig struct {
	Kernel   *Kernel // with DemoModules loaded
	Init     []byte  // static internal/demoinit binary
	Append   string  // extra kernel command line, e.g. "bm.http=http://10.0.2.100"
	Out      string  // raw disk image to write
	Syslinux string  // directory with mbr/mbr.bin (default /usr/lib/syslinux)
	// SystemdBoot is the UEFI loader copied to \EFI\BOOT\BOOTX64.EFI
	// (default SystemdBootEFI).
	SystemdBoot string
}

const (
	sectorSize     = 512
	partStartLBA   = 2048 // 1 MiB, the usual alignment
	mbrDiskID      = 0x42444d4f
	fatVolumeID    = "42444d4f"
	partTypeFAT16L = 0x0e // FAT16, LBA addressed
)

// SystemdBootEFI is where Debian's systemd-boot-efi package puts the x86-64
// systemd-boot binary.
const SystemdBootEFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// demoCmdline is the kernel command line both loaders pass.
func demoCmdline(appendLine string) string {
	return strings.TrimSpace("console=ttyS0,115200 loglevel=4 panic=10 " + appendLine)
}

// SyslinuxConfig returns the syslinux.cfg of the demo image (BIOS boot).
func SyslinuxConfig(appendLine string) string {
	return fmt.Sprintf(`SERIAL 0 115200
DEFAULT demo
PROMPT 0
TIMEOUT 0
LABEL demo
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND %s
`, demoCmdline(appendLine))
}

// SystemdBootLoaderConfig returns /loader/loader.conf of the demo image
// (UEFI boot): no menu, straight into the one entry. "default" is a glob
// because systemd 252 names the entry "demo.conf" and later releases "demo".
func SystemdBootLoaderConfig() string {
	return "timeout 0\ndefault demo*\neditor no\n"
}

// SystemdBootEntry returns /loader/entries/demo.conf: the same kernel,
// initramfs and command line as SyslinuxConfig. Paths are from the root of
// the partition systemd-boot was loaded from.
func SystemdBootEntry(appendLine string) string {
	return fmt.Sprintf("title DEMO-OS\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n", demoCmdline(appendLine))
}

// DemoImageTools are the programs BuildDemoImage runs (Debian packages
// dosfstools, mtools, syslinux); none needs root. It also reads syslinux's
// mbr.bin and SystemdBootEFI (package systemd-boot-efi).
var DemoImageTools = []string{"mkfs.vfat", "mcopy", "syslinux"}

// BuildDemoImage writes a raw disk that boots under both legacy BIOS and
// UEFI: syslinux's MBR and one active FAT16 partition at 1 MiB holding the
// kernel, an initramfs whose /init is demoinit, and two loaders that share
// them:
//
//   - BIOS: mbr.bin boots the active partition, whose boot sector and
//     ldlinux.sys are syslinux's; it reads /syslinux.cfg.
//   - UEFI: \EFI\BOOT\BOOTX64.EFI, the path firmware falls back to on a disk
//     with no boot entry of its own, is systemd-boot. It reads
//     /loader/loader.conf and /loader/entries/demo.conf and starts the kernel
//     through its EFI stub (Debian's kernel has one), offering it the
//     initramfs through the LINUX_EFI_INITRD_MEDIA device path.
//
// The partition stays MBR type 0x0e (FAT16 LBA) rather than GPT: OVMF's
// boot manager looks for the fallback path on every FAT file system of the
// disk, whatever the partition type, as most firmware does for FAT-typed USB
// sticks. Measured with OVMF 2022.11 (Debian's 2 MiB and 4 MiB builds):
// types 0x0e and 0xef (the UEFI system partition type) both boot under
// OVMF and SeaBIOS; 0x0e is kept because the type then says what the
// partition holds to every BIOS-era tool. One partition with one copy of the
// kernel keeps the image small and both paths boot the same bytes.
//
// systemd-boot was chosen over GRUB (grub-mkstandalone needs grub-common and
// writes a multi-megabyte image) and syslinux.efi (package syslinux-efi,
// unchanged upstream since 2019): it is one ~140 KiB file from Debian's
// systemd-boot-efi, with no build step and plain-text configuration. Secure
// Boot is not supported: neither loader nor kernel goes through shim.
//
// A missing systemd-boot binary fails the build rather than producing a
// BIOS-only image: provisiond would install that image on UEFI machines,
// which would then fall through to the next boot option, far from the cause.
func BuildDemoImage(ctx context.Context, log *slog.Logger, cfg DemoImageConfig) error {
	for _, t := range DemoImageTools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found (apt-get install dosfstools mtools syslinux): %w", t, err)
		}
	}
	if cfg.Kernel == nil || len(cfg.Init) == 0 || cfg.Out == "" {
		return errors.New("demo image: kernel, init and output are required")
	}
	sysl := cfg.Syslinux
	if sysl == "" {
		sysl = "/usr/lib/syslinux"
	}
	mbr, err := os.ReadFile(filepath.Join(sysl, "mbr", "mbr.bin"))
	if err != nil {
		return fmt.Errorf("read syslinux MBR: %w", err)
	}
	if len(mbr) > 440 {
		return fmt.Errorf("syslinux mbr.bin is %d bytes, want at most 440", len(mbr))
	}
	sdboot := cfg.SystemdBoot
	if sdboot == "" {
		sdboot = SystemdBootEFI
	}
	efiLoader, err := os.ReadFile(sdboot)
	if err != nil {
		return fmt.Errorf("read UEFI loader (apt-get install --no-install-recommends systemd-boot-efi): %w", err)
	}
	initrd, err := Initramfs{Init: cfg.Init, Kernel: cfg.Kernel, Modules: DemoModules}.Bytes(ctx)
	if err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "demoimage-")
	if err != nil {
		return err
	}
	// The image is written (or failed) by the time this runs; a scratch
	// tree left in the temp dir does not change that result.
	defer func() { _ = os.RemoveAll(tmp) }()
	// The partition's tree is laid out under root and copied in one
	// recursive mcopy -m, which keeps the mtimes of files and directories
	// alike: every one is set to epoch so the image is reproducible.
	root := filepath.Join(tmp, "root")
	files := []struct {
		name string
		data []byte
	}{
		{"syslinux.cfg", []byte(SyslinuxConfig(cfg.Append))},
		{"vmlinuz", cfg.Kernel.Vmlinuz},
		{"initrd.img", initrd},
		{"EFI/BOOT/BOOTX64.EFI", efiLoader},
		{"loader/loader.conf", []byte(SystemdBootLoaderConfig())},
		{"loader/entries/demo.conf", []byte(SystemdBootEntry(cfg.Append))},
	}
	payload := 0
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // FAT cannot hold 1970
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
		payload += len(f.data)
	}
	var top []string
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if filepath.Dir(p) == root {
			top = append(top, p)
		}
		return os.Chtimes(p, epoch, epoch)
	})
	if err != nil {
		return fmt.Errorf("set mtimes of the demo image tree: %w", err)
	}
	// Room for the payload, syslinux (~120 KiB) and FAT overhead; at least
	// 16 MiB so FAT16 has enough clusters.
	partMiB := max(16, (payload+(4<<20))>>20)
	part := filepath.Join(tmp, "part.img")
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "SOURCE_DATE_EPOCH=946684800")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := run("mkfs.vfat", "-C", "-F", "16", "-n", "DEMOOS", "-i", fatVolumeID, "--invariant",
		"-h", fmt.Sprint(partStartLBA), part, fmt.Sprint(partMiB*1024)); err != nil {
		return err
	}
	// WalkDir lists in lexical order, so top is sorted and the directory
	// entries land in the same order every time.
	if err := run("mcopy", append([]string{"-i", part, "-s", "-m", "-o"}, append(top, "::/")...)...); err != nil {
		return err
	}
	if err := run("syslinux", "--install", part); err != nil {
		return err
	}
	partData, err := os.ReadFile(part)
	if err != nil {
		return err
	}
	disk := make([]byte, partStartLBA*sectorSize, partStartLBA*sectorSize+len(partData))
	copy(disk, mbr)
	writeMBRPartition(disk[:sectorSize], partStartLBA, uint32(len(partData)/sectorSize))
	disk = append(disk, partData...)
	if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err != nil {
		return err
	}
	if err := WriteFileAtomic(cfg.Out, disk, 0o644); err != nil {
		return err
	}
	log.Info("demo image built", "file", cfg.Out, "bytes", len(disk), "kernel", cfg.Kernel.Version,
		"vmlinuz", len(cfg.Kernel.Vmlinuz), "initrd", len(initrd), "uefi_loader", sdboot)
	return nil
}

// writeMBRPartition fills in the disk signature, one active partition entry
// (LBA only: CHS fields hold the "beyond 8 GiB" marker) and the boot
// signature of a 512-byte MBR whose first 440 bytes are boot code.
func writeMBRPartition(mbr []byte, start, sectors uint32) {
	binary.LittleEndian.PutUint32(mbr[440:], mbrDiskID)
	e := mbr[446:462]
	e[0] = 0x80 // active: syslinux's mbr.bin boots the active partition
	copy(e[1:4], []byte{0xfe, 0xff, 0xff})
	e[4] = partTypeFAT16L
	copy(e[5:8], []byte{0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], sectors)
	mbr[510], mbr[511] = 0x55, 0xaa
}
