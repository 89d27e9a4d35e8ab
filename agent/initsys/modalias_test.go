package initsys

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/rackform/terraform-provider-baremetal/internal/kmod"
)

// TestColdplug loads drivers in rounds from a fake sysfs: virtio_pci's
// load makes a virtio network device appear, whose driver is loaded in the
// next round; nvme and e1000e come from their PCI modaliases, ext4 by its
// fs- alias with its soft dependency, and a failing soft dependency
// (crc32c_intel without SSE4.2) does not count as a failure.
func TestColdplug(t *testing.T) {
	dir := t.TempDir()
	modDir := filepath.Join(dir, "lib/modules/6.1.0-test")
	if err := os.MkdirAll(modDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mods := []kmod.Module{
		{Name: "virtio", Path: "kernel/drivers/virtio/virtio.ko"},
		{Name: "virtio_ring", Path: "kernel/drivers/virtio/virtio_ring.ko"},
		{Name: "virtio_pci", Path: "kernel/drivers/virtio/virtio_pci.ko", Depends: []string{"virtio", "virtio_ring"},
			Aliases: []string{"pci:v00001AF4d*sv*sd*bc*sc*i*"}},
		{Name: "virtio_net", Path: "kernel/drivers/net/virtio_net.ko", Depends: []string{"virtio", "virtio_ring"}, Aliases: []string{"virtio:d00000001v*"}},
		{Name: "nvme_core", Path: "kernel/drivers/nvme/host/nvme-core.ko"},
		{Name: "nvme", Path: "kernel/drivers/nvme/host/nvme.ko", Depends: []string{"nvme_core"}, Aliases: []string{"pci:v*d*sv*sd*bc01sc08i02*"}},
		{Name: "e1000e", Path: "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", Aliases: []string{"pci:v00008086d000010D3sv*sd*bc*sc*i*"}},
		{Name: "ext4", Path: "kernel/fs/ext4/ext4.ko", Aliases: []string{"fs-ext4"}, Softpre: []string{"crc32c_generic", "crc32c_intel"}},
		{Name: "crc32c_generic", Path: "kernel/crypto/crc32c_generic.ko", Aliases: []string{"crypto-crc32c"}},
		{Name: "crc32c_intel", Path: "kernel/arch/x86/crypto/crc32c-intel.ko", Aliases: []string{"crypto-crc32c"}},
	}
	if err := kmod.Write(mods, func(n string, b []byte) error { return os.WriteFile(filepath.Join(modDir, n), b, 0o644) }); err != nil {
		t.Fatal(err)
	}
	sysfs := filepath.Join(dir, "sys")
	addDevice := func(bus, dev, alias string) {
		d := filepath.Join(sysfs, "bus", bus, "devices", dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "modalias"), []byte(alias+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	addDevice("pci", "0000:00:02.0", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	addDevice("pci", "0000:00:03.0", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02")
	addDevice("pci", "0000:00:04.0", "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00")
	addDevice("pci", "0000:00:05.0", "pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00") // no driver

	m, err := OpenModules(slog.New(slog.NewTextHandler(io.Discard, nil)), filepath.Join(dir, "lib/modules"))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	m.load = func(p string) error {
		n := kmod.Name(p)
		if n == "crc32c_intel" {
			return unix.ENODEV
		}
		if n == "virtio_pci" {
			addDevice("virtio", "virtio0", "virtio:d00000001v00001AF4")
		}
		order = append(order, n)
		return nil
	}
	m.Coldplug(sysfs, 1, time.Millisecond)
	if _, err := m.Load("fs-ext4"); err != nil {
		t.Fatal(err)
	}
	want := []string{"virtio", "virtio_ring", "virtio_pci", "nvme_core", "nvme", "e1000e", "virtio_net", "crc32c_generic", "ext4"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if f := m.Failed(); len(f) != 0 {
		t.Errorf("failed: %v", f)
	}
	if _, err := m.Load("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00"); err == nil || !strings.Contains(err.Error(), "no module") {
		t.Errorf("device without a driver: err = %v", err)
	}
}
