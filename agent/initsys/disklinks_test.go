package initsys

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fakeSys writes the sysfs files LinkDisks reads under root/block.
func fakeSys(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(root, "block", rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// identifyPage is an ATA Information VPD page (0x89) whose IDENTIFY data
// holds model, serial and, when wwn is not 0, a valid WWN.
func identifyPage(model, serial string, wwn uint64) []byte {
	page := make([]byte, 60+512)
	page[1] = 0x89
	id := page[60:]
	put := func(w0, w1 int, s string) {
		b := []byte(s)
		for len(b) < (w1-w0)*2 {
			b = append(b, ' ')
		}
		for i := 0; i < (w1-w0)*2; i += 2 {
			id[2*w0+i], id[2*w0+i+1] = b[i+1], b[i]
		}
	}
	put(10, 20, "  "+serial) // drives pad serials on either side
	put(27, 47, model)
	if wwn != 0 {
		binary.LittleEndian.PutUint16(id[2*87:], 0x4100)
		for w := 111; w >= 108; w-- {
			binary.LittleEndian.PutUint16(id[2*w:], uint16(wwn))
			wwn >>= 16
		}
	}
	return page
}

func links(t *testing.T, dev string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dev, DiskLinkDir))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dev, DiskLinkDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = target
	}
	return got
}

func TestLinkDisks(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	fakeSys(t, sys, map[string]string{
		// QEMU's virtio-blk with serial=node-1, two partitions.
		"vda/serial": "node-1", "vda/vda1/partition": "1", "vda/vda3/partition": "3",
		"vdb/size": "0", // no serial: no link
		// QEMU's NVMe controller: model padded with blanks as the kernel shows it.
		"nvme0n1/device/model": "QEMU NVMe Ctrl                          \n", "nvme0n1/device/serial": "node-2  \n",
		"nvme0n1/wwid":                "nvme.1b36-6e6f64652d32-51454d55204e564d65204374726c-00000001\n",
		"nvme0n1/nvme0n1p3/partition": "3",
		// A SAS disk.
		"sdb/device/wwid": "naa.5000c500a1b2c3d4\n",
		// Not disks anyone names by id.
		"loop0/size": "0", "sr0/size": "0",
	})
	fakeSys(t, sys, map[string]string{"sda/device/vpd_pg89": string(identifyPage("Samsung SSD 870 EVO 1TB", "S6PUNX0R123456A", 0x5002538f4123abcd)), "sda/sda2/partition": "2"})
	// A stale link of a disk that went away, and one pointing wrong.
	if err := os.MkdirAll(filepath.Join(dev, DiskLinkDir), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Symlink("../../vdz", filepath.Join(dev, DiskLinkDir, "virtio-gone"))
	_ = os.Symlink("../../vdb", filepath.Join(dev, DiskLinkDir, "virtio-node-1"))

	n, err := LinkDisks(slog.New(slog.DiscardHandler), sys, dev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"virtio-node-1": "../../vda", "virtio-node-1-part1": "../../vda1", "virtio-node-1-part3": "../../vda3",
		"nvme-QEMU_NVMe_Ctrl_node-2": "../../nvme0n1", "nvme-QEMU_NVMe_Ctrl_node-2-part3": "../../nvme0n1p3",
		"nvme-nvme.1b36-6e6f64652d32-51454d55204e564d65204374726c-00000001":       "../../nvme0n1",
		"nvme-nvme.1b36-6e6f64652d32-51454d55204e564d65204374726c-00000001-part3": "../../nvme0n1p3",
		"ata-Samsung_SSD_870_EVO_1TB_S6PUNX0R123456A":                             "../../sda", "ata-Samsung_SSD_870_EVO_1TB_S6PUNX0R123456A-part2": "../../sda2",
		"wwn-0x5002538f4123abcd": "../../sda", "wwn-0x5002538f4123abcd-part2": "../../sda2",
		"wwn-0x5000c500a1b2c3d4": "../../sdb", "scsi-35000c500a1b2c3d4": "../../sdb",
	}
	if got := links(t, dev); !reflect.DeepEqual(got, want) {
		t.Errorf("links:\n got %v\nwant %v", got, want)
	}
	if n != len(want) {
		t.Errorf("LinkDisks returned %d, want %d", n, len(want))
	}

	// A partition table rewritten: vda3 gone, vda2 new. A second run follows.
	if err := os.RemoveAll(filepath.Join(sys, "block/vda/vda3")); err != nil {
		t.Fatal(err)
	}
	fakeSys(t, sys, map[string]string{"vda/vda2/partition": "2"})
	if _, err := LinkDisks(slog.New(slog.DiscardHandler), sys, dev); err != nil {
		t.Fatal(err)
	}
	got := links(t, dev)
	if _, ok := got["virtio-node-1-part3"]; ok {
		t.Error("the link of a removed partition stayed")
	}
	if got["virtio-node-1-part2"] != "../../vda2" {
		t.Errorf("new partition: virtio-node-1-part2 -> %q", got["virtio-node-1-part2"])
	}
}

func TestLinkDisksNoSysfs(t *testing.T) {
	if _, err := LinkDisks(slog.New(slog.DiscardHandler), filepath.Join(t.TempDir(), "none"), t.TempDir()); err == nil {
		t.Error("no error without /sys/block")
	}
}

func TestATAIdentity(t *testing.T) {
	model, serial, wwn, ok := ataIdentity(identifyPage("ST4000NM0035-1V4107", "ZC1ABCDE", 0))
	if !ok || model != "ST4000NM0035-1V4107" || serial != "ZC1ABCDE" || wwn != 0 {
		t.Errorf("got %q %q %x %v", model, serial, wwn, ok)
	}
	for name, page := range map[string][]byte{"short": make([]byte, 100), "other page": make([]byte, 600)} {
		if _, _, _, ok := ataIdentity(page); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
