package initsys

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOrderModules(t *testing.T) {
	in := []string{
		"/lib/modules/6.1/kernel/drivers/net/virtio_net.ko",
		"/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko",
		"/lib/modules/6.1/kernel/drivers/net/e1000e.ko",
		"/lib/modules/6.1/kernel/drivers/virtio/virtio_pci.ko",
		"/lib/modules/6.1/kernel/drivers/virtio/virtio.ko",
		"/lib/modules/6.1/kernel/drivers/virtio/virtio_ring.ko",
		"/lib/modules/6.1/kernel/net/core/failover.ko",
		"/lib/modules/6.1/kernel/drivers/net/net_failover.ko",
		"/lib/modules/6.1/kernel/drivers/virtio/virtio_pci_modern_dev.ko",
		"/lib/modules/6.1/kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
		"/lib/modules/6.1/kernel/drivers/ata/ahci.ko",
	}
	var names []string
	for _, p := range OrderModules(in) {
		names = append(names, modName(p))
	}
	want := []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk", "ahci", "e1000e"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := modName("/x/snd-hda-intel.ko"); got != "snd_hda_intel" {
		t.Errorf("modName = %q", got)
	}
}
