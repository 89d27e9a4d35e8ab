package osbuild

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// demoFakeKernel is a kernel whose DemoModules are all built in, so the
// initramfs needs no module files and the image builds in well under a second.
func demoFakeKernel() *Kernel {
	k := &Kernel{Version: "6.1.0-test", Vmlinuz: []byte("bzImage"), Modules: map[string]*Module{}, Builtin: map[string]bool{}}
	for _, m := range DemoModules {
		k.Builtin[CanonicalModuleName(m)] = true
	}
	return k
}

func requireDemoImageTools(t *testing.T) {
	t.Helper()
	for _, bin := range append([]string{"mtype"}, DemoImageTools...) {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (Debian: dosfstools mtools syslinux): %v", bin, err)
		}
	}
	if _, err := os.Stat("/usr/lib/syslinux/mbr/mbr.bin"); err != nil {
		t.Skipf("no syslinux MBR (Debian: syslinux): %v", err)
	}
}

// TestDemoImageLayout checks the hybrid layout without booting: the MBR's one
// active FAT16 partition holds syslinux for BIOS and systemd-boot at the UEFI
// default path, and both loaders get the same kernel command line.
func TestDemoImageLayout(t *testing.T) {
	requireDemoImageTools(t)
	dir := t.TempDir()
	loader := filepath.Join(dir, "systemd-bootx64.efi")
	if err := os.WriteFile(loader, []byte("MZ fake systemd-boot"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "demo.raw")
	err := BuildDemoImage(context.Background(), testLogger(t), DemoImageConfig{Kernel: demoFakeKernel(), Init: []byte("ELF"),
		Append: "bm.http=http://10.0.2.100", Out: img, SystemdBoot: loader})
	if err != nil {
		t.Fatal(err)
	}
	disk, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	e := disk[446:462]
	if e[0] != 0x80 || e[4] != partTypeFAT16L || binary.LittleEndian.Uint32(e[8:]) != partStartLBA || disk[510] != 0x55 || disk[511] != 0xaa {
		t.Errorf("MBR partition entry % x, signature % x", e, disk[510:512])
	}
	// Read files back from the FAT partition at 1 MiB.
	mtype := func(name string) string {
		cmd := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", img, partStartLBA*sectorSize), "::"+name)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("mtype %s: %v: %s", name, err, stderr.Bytes())
		}
		return string(out)
	}
	cmdline := "console=ttyS0,115200 loglevel=4 panic=10 bm.http=http://10.0.2.100"
	want := map[string]string{
		"/EFI/BOOT/BOOTX64.EFI":     "MZ fake systemd-boot",
		"/loader/loader.conf":       "timeout 0\ndefault demo*\neditor no\n",
		"/loader/entries/demo.conf": "title DEMO-OS\nlinux /vmlinuz\ninitrd /initrd.img\noptions " + cmdline + "\n",
		"/vmlinuz":                  "bzImage",
	}
	for name, w := range want {
		if diff := cmp.Diff(w, mtype(name)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	if cfg := mtype("/syslinux.cfg"); !strings.Contains(cfg, "  APPEND "+cmdline+"\n") {
		t.Errorf("syslinux.cfg does not pass %q:\n%s", cmdline, cfg)
	}
	if mtype("/ldlinux.sys") == "" {
		t.Error("syslinux not installed on the partition")
	}
}

// TestDemoImageNeedsUEFILoader: without systemd-boot the build fails and says
// which package to install, rather than writing an image UEFI machines cannot
// boot.
func TestDemoImageNeedsUEFILoader(t *testing.T) {
	requireDemoImageTools(t)
	out := filepath.Join(t.TempDir(), "demo.raw")
	err := BuildDemoImage(context.Background(), testLogger(t), DemoImageConfig{Kernel: demoFakeKernel(), Init: []byte("ELF"),
		Out: out, SystemdBoot: filepath.Join(t.TempDir(), "missing.efi")})
	if err == nil || !strings.Contains(err.Error(), "apt-get install --no-install-recommends systemd-boot-efi") {
		t.Fatalf("error %v, want one naming systemd-boot-efi", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("an image was written anyway (stat: %v)", err)
	}
}
