package initsys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
)

// The agent OS runs no udev, yet templates name disks the way operators know
// them on real hardware: /dev/disk/by-id/nvme-<model>_<serial>,
// wwn-0x<wwn>, and a partition as <link>-part<N> (formatPartition). LinkDisks
// makes those links from sysfs with the names systemd-udev's
// 60-persistent-storage.rules give them (Debian 12's udev 252), for the
// buses whose identity sysfs carries:
//
//	virtio-blk   virtio-<serial>                      (/sys/block/vdX/serial)
//	NVMe         nvme-<model>_<serial>, nvme-<wwid>   (device/model, device/serial, wwid)
//	ATA (libata) ata-<model>_<serial>, wwn-0x<wwn>     (IDENTIFY data in device/vpd_pg89)
//	SCSI/SAS     wwn-0x<naa>, scsi-3<naa>             (device/wwid "naa.")
//
// Not made: by-path, by-uuid, by-label and by-partuuid (templates address
// disks, not filesystems), and the SCSI names scsi_id derives from pages other
// than an NAA designator.

// DiskLinkDir is where LinkDisks puts the links, relative to the dev root.
const DiskLinkDir = "disk/by-id"

// LinkDisks makes devRoot/disk/by-id hold exactly the links the block
// devices under sysRoot/block have now: new ones are added, links of
// devices that went away removed. It is cheap and idempotent, so the agent
// runs it before every action (an earlier action may have written a
// partition table). It returns the number of links.
func LinkDisks(log *slog.Logger, sysRoot, devRoot string) (int, error) {
	want, err := diskLinks(sysRoot)
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(devRoot, DiskLinkDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("disk links: %w", err)
	}
	have, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("disk links: %w", err)
	}
	var errs []error
	for _, e := range have {
		if _, ok := want[e.Name()]; !ok {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		target := "../../" + want[name]
		p := filepath.Join(dir, name)
		if cur, err := os.Readlink(p); err == nil && cur == target {
			continue
		}
		_ = os.Remove(p) // absent or stale: replaced below
		if err := os.Symlink(target, p); err != nil {
			errs = append(errs, fmt.Errorf("disk link %s: %w", name, err))
			continue
		}
		log.Debug("disk link", "link", "/dev/"+DiskLinkDir+"/"+name, "device", want[name])
	}
	return len(want), errors.Join(errs...)
}

// diskLinks maps each link name to its device name (vda, nvme0n1p3).
func diskLinks(sysRoot string) (map[string]string, error) {
	disks, err := os.ReadDir(filepath.Join(sysRoot, "block"))
	if err != nil {
		return nil, fmt.Errorf("disk links: read %s: %w", filepath.Join(sysRoot, "block"), err)
	}
	links := map[string]string{}
	for _, d := range disks {
		name := d.Name()
		dev := filepath.Join(sysRoot, "block", name)
		ids := diskIDs(name, dev)
		if len(ids) == 0 {
			continue
		}
		parts := partitions(dev)
		for _, id := range ids {
			links[id] = name
			for n, p := range parts {
				links[fmt.Sprintf("%s-part%d", id, n)] = p
			}
		}
	}
	return links, nil
}

// diskIDs are the by-id names of one whole disk.
func diskIDs(name, dev string) []string {
	attr := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(dev, rel))
		if err != nil {
			return ""
		}
		return strings.TrimRightFunc(strings.TrimLeftFunc(string(b), unicode.IsSpace), unicode.IsSpace)
	}
	var ids []string
	add := func(prefix, id string) {
		if id = escapeID(id); id != "" {
			ids = append(ids, prefix+id)
		}
	}
	switch {
	case strings.HasPrefix(name, "vd"):
		add("virtio-", attr("serial"))
	case strings.HasPrefix(name, "nvme"):
		if model, serial := attr("device/model"), attr("device/serial"); model != "" && serial != "" {
			add("nvme-", model+"_"+serial)
		}
		add("nvme-", attr("wwid"))
	case strings.HasPrefix(name, "sd"):
		if raw, err := os.ReadFile(filepath.Join(dev, "device/vpd_pg89")); err == nil {
			if model, serial, wwn, ok := ataIdentity(raw); ok {
				if model != "" && serial != "" {
					add("ata-", collapse(model)+"_"+collapse(serial))
				}
				if wwn != 0 {
					add("wwn-", fmt.Sprintf("0x%x", wwn)) // ata_id prints it unpadded
				}
			}
			break
		}
		if naa, ok := strings.CutPrefix(attr("device/wwid"), "naa."); ok && naa != "" {
			add("wwn-0x", naa)
			add("scsi-3", naa)
		}
	}
	return ids
}

// partitions maps partition numbers of the disk at dev to their names.
func partitions(dev string) map[int]string {
	entries, err := os.ReadDir(dev)
	if err != nil {
		return nil
	}
	parts := map[int]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dev, e.Name(), "partition"))
		if err != nil {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n); err == nil && n > 0 {
			parts[n] = e.Name()
		}
	}
	return parts
}

// ataIdentity reads model, serial and WWN out of the ATA Information VPD
// page (0x89), which carries the drive's IDENTIFY DEVICE data at byte 60.
// IDENTIFY strings are byte-swapped per 16-bit word.
func ataIdentity(page []byte) (model, serial string, wwn uint64, ok bool) {
	const off = 60
	if len(page) < off+512 || page[1] != 0x89 {
		return "", "", 0, false
	}
	id := page[off : off+512]
	str := func(w0, w1 int) string {
		b := make([]byte, 0, (w1-w0)*2)
		for w := w0; w < w1; w++ {
			b = append(b, id[2*w+1], id[2*w])
		}
		return strings.TrimSpace(string(b))
	}
	serial = str(10, 20)
	model = str(27, 47)
	// Words 108-111: the WWN, valid when word 87 says so (bit 8, with bits
	// 15:14 = 01 marking the word as valid).
	if w87 := binary.LittleEndian.Uint16(id[2*87:]); w87&0xc100 == 0x4100 {
		for w := 108; w < 112; w++ {
			wwn = wwn<<16 | uint64(binary.LittleEndian.Uint16(id[2*w:]))
		}
	}
	return model, serial, wwn, true
}

// collapse replaces runs of whitespace by one '_' (ata_id's
// udev_replace_whitespace).
func collapse(s string) string {
	return strings.Join(strings.Fields(s), "_")
}

// escapeID is udev's string_escape=replace: every whitespace character and
// every character outside udev's allowed set becomes '_'.
func escapeID(s string) string {
	s = strings.TrimSpace(s)
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.IndexByte("#+-.:=@_", c) >= 0:
		default:
			b[i] = '_'
		}
	}
	return string(b)
}
