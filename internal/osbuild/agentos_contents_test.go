package osbuild

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackform/terraform-provider-baremetal/internal/cpio"
	"github.com/rackform/terraform-provider-baremetal/internal/kmod"
)

// busyboxBin finds a static busybox: $BUSYBOX, else the one `make agent-os`
// extracted into build/cache.
func busyboxBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BUSYBOX"); p != "" {
		return p
	}
	m, _ := filepath.Glob("../../build/cache/busybox-static_*_amd64.busybox")
	if len(m) == 0 {
		t.Skip("no busybox: run `make agent-os` (downloads busybox-static into build/cache) or set BUSYBOX")
	}
	slices.Sort(m)
	return m[len(m)-1]
}

// TestAgentOSInitramfsContents builds the agent OS initramfs from the real
// kernel package and busybox-static with DefaultModules and checks, without
// QEMU, what an install needs is there: the filesystem modules, the drivers
// of real servers, busybox and its applet links, and a module index whose
// aliases resolve the modaliases of real devices to their drivers.
func TestAgentOSInitramfsContents(t *testing.T) {
	deb, bb := kernelDeb(t), busyboxBin(t)
	ctx := context.Background()
	k, err := LoadKernelDeb(ctx, deb, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	busybox, applets, err := ReadBusybox(ctx, bb)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Initramfs{Init: []byte("ELF"), Kernel: k, Modules: k.Selection(DefaultModules), Busybox: busybox, Applets: applets,
		Firmware: map[string][]byte{"intel/ice/ddp/ice.pkg": []byte("blob")}, Compression: CompressZstd}.Bytes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := readArchive(t, b)
	base := "lib/modules/" + k.Version + "/"
	t.Logf("initramfs %d bytes (zstd), %d modules, %d busybox applets", len(b), len(k.Modules), len(applets))

	for _, p := range []string{
		"kernel/fs/ext4/ext4.ko", "kernel/fs/xfs/xfs.ko", "kernel/fs/btrfs/btrfs.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/fat.ko",
		"kernel/fs/nls/nls_cp437.ko", "kernel/fs/nls/nls_ascii.ko", "kernel/crypto/crc32c_generic.ko", "kernel/lib/libcrc32c.ko",
		"kernel/drivers/nvme/host/nvme.ko", "kernel/drivers/ata/ahci.ko", "kernel/drivers/scsi/megaraid/megaraid_sas.ko",
		"kernel/drivers/scsi/mpt3sas/mpt3sas.ko", "kernel/drivers/net/ethernet/intel/ixgbe/ixgbe.ko",
		"kernel/drivers/net/ethernet/intel/i40e/i40e.ko", "kernel/drivers/net/ethernet/intel/ice/ice.ko",
		"kernel/drivers/net/ethernet/mellanox/mlx5/core/mlx5_core.ko", "kernel/drivers/net/ethernet/broadcom/bnxt/bnxt_en.ko",
		"kernel/drivers/net/ethernet/intel/igb/igb.ko", "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
		"kernel/drivers/net/ethernet/broadcom/tg3.ko", "kernel/drivers/net/virtio_net.ko", "kernel/drivers/block/virtio_blk.ko",
		kmod.DepFile, kmod.AliasFile, kmod.SoftdepFile, ModulesLoadFile,
	} {
		if e, ok := got[base+p]; !ok || e.Mode&cpio.TypeMask != cpio.TypeReg {
			t.Errorf("%s missing", base+p)
		}
	}
	if e := got["bin/busybox"]; e.Mode != cpio.TypeReg|0o755 || !bytes.Equal(e.Data, busybox) {
		t.Errorf("bin/busybox: mode %o, %d bytes", e.Mode, len(e.Data))
	}
	for name, target := range map[string]string{
		"bin/sh": "busybox", "bin/mount": "busybox", "bin/chroot": "busybox", "bin/modprobe": "busybox", "bin/sed": "busybox",
		"bin/awk": "busybox", "bin/dd": "busybox", "bin/fdisk": "busybox", "sbin": "bin", "usr/bin": "../bin", "usr/sbin": "../bin",
	} {
		if e := got[name]; e.Mode&cpio.TypeMask != cpio.TypeSymlink || string(e.Data) != target {
			t.Errorf("%s: mode %o -> %q, want a link to %s", name, e.Mode, e.Data, target)
		}
	}
	if _, ok := got["bin/init"]; ok {
		t.Error("bin/init is a busybox link: the agent is init")
	}
	if e := got["lib/firmware/intel/ice/ddp/ice.pkg"]; string(e.Data) != "blob" {
		t.Errorf("firmware not in lib/firmware: %q", e.Data)
	}

	db := kmod.NewDB()
	for _, err := range []error{
		db.ReadDep(bytes.NewReader(got[base+kmod.DepFile].Data)),
		db.ReadAlias(bytes.NewReader(got[base+kmod.AliasFile].Data)),
		db.ReadSoftdep(bytes.NewReader(got[base+kmod.SoftdepFile].Data)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for p := range db.Paths {
		for _, d := range append([]string{db.Paths[p]}, db.Deps[p]...) {
			if _, ok := got[base+d]; !ok {
				t.Errorf("modules.dep names %s, which is not shipped", d)
			}
		}
	}
	// Modaliases as the devices of QEMU 7.2 and of real servers report them
	// in /sys/bus/*/devices/*/modalias.
	tests := map[string]struct {
		modalias string
		want     []string
	}{
		"e1000e (QEMU 82574L)":   {"pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00", []string{"e1000e"}},
		"nvme (QEMU NVMe)":       {"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", []string{"nvme"}},
		"virtio-net device":      {"virtio:d00000001v00001AF4", []string{"virtio_net"}},
		"virtio-pci transport":   {"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}},
		"AHCI by class":          {"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", []string{"ahci"}},
		"X710 (i40e)":            {"pci:v00008086d00001572sv00008086sd00000000bc02sc00i00", []string{"i40e"}},
		"ConnectX-5 (mlx5_core)": {"pci:v000015B3d00001017sv000015B3sd00000007bc02sc00i00", []string{"mlx5_core"}},
		"SCSI disk":              {"scsi:t-0x00", []string{"sd_mod"}},
		"filesystem by name":     {"fs-xfs", []string{"xfs"}},
		"crypto by name":         {"crypto-crc32c", []string{"crc32c_generic", "crc32c_intel"}},
		"unknown device":         {"pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := db.Resolve(tc.modalias)
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Resolve(%q) (-want +got):\n%s", tc.modalias, diff)
			}
		})
	}
	if diff := cmp.Diff([]string{"crc32c_generic", "crc32c_intel"}, db.Softdeps["ext4"]); diff != "" {
		t.Errorf("ext4 soft dependencies (-want +got):\n%s", diff)
	}
}
