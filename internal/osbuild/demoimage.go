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
}

const (
	sectorSize     = 512
	partStartLBA   = 2048 // 1 MiB, the usual alignment
	mbrDiskID      = 0x42444d4f
	fatVolumeID    = "42444d4f"
	partTypeFAT16L = 0x0e // FAT16, LBA addressed
)

// SyslinuxConfig returns the syslinux.cfg of the demo image.
func SyslinuxConfig(appendLine string) string {
	return fmt.Sprintf(`SERIAL 0 115200
DEFAULT demo
PROMPT 0
TIMEOUT 0
LABEL demo
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND %s
`, strings.TrimSpace("console=ttyS0,115200 loglevel=4 panic=10 "+appendLine))
}

// DemoImageTools are the programs BuildDemoImage runs (Debian packages
// dosfstools, mtools, syslinux); none needs root.
var DemoImageTools = []string{"mkfs.vfat", "mcopy", "syslinux"}

// BuildDemoImage writes a bootable raw disk: syslinux's MBR, one active FAT16
// partition at 1 MiB holding syslinux, the kernel and an initramfs whose
// /init is demoinit.
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
	initrd, err := Initramfs{Init: cfg.Init, Kernel: cfg.Kernel, Modules: DemoModules}.Bytes(ctx)
	if err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "demoimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	files := []struct {
		name string
		data []byte
	}{
		{"syslinux.cfg", []byte(SyslinuxConfig(cfg.Append))},
		{"vmlinuz", cfg.Kernel.Vmlinuz},
		{"initrd.img", initrd},
	}
	payload := 0
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // FAT cannot hold 1970
	var paths []string
	for _, f := range files {
		p := filepath.Join(tmp, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(p, epoch, epoch); err != nil {
			return err
		}
		paths = append(paths, p)
		payload += len(f.data)
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
	if err := run("mcopy", append([]string{"-i", part, "-m", "-o"}, append(paths, "::/")...)...); err != nil {
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
		"vmlinuz", len(cfg.Kernel.Vmlinuz), "initrd", len(initrd))
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
