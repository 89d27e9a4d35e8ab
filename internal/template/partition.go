package template

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// FormatPartition names partition n of disk dev the way the Linux kernel
// does. It is the formatPartition function of templates, which Tinkerbell
// templates call as {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}:
//
//	/dev/sda 1                      → /dev/sda1
//	/dev/vda 2, /dev/xvda 2         → /dev/vda2, /dev/xvda2
//	/dev/nvme0n1 1                  → /dev/nvme0n1p1 (a name that ends in a digit
//	/dev/mmcblk0 1, /dev/loop0 1    → /dev/mmcblk0p1, /dev/loop0p1  takes "p")
//	/dev/md0 1, /dev/nbd0 1         → /dev/md0p1, /dev/nbd0p1
//	/dev/disk/by-id/wwn-0x5000 1    → /dev/disk/by-id/wwn-0x5000-part1 (udev's links)
//
// Tinkerbell's own function knows only /dev/nvme* and /dev/sd*, and
// returns any other disk unchanged, so that a template written for
// /dev/sda would write a partition's contents over the whole of /dev/vda;
// here every disk gets its partition's name. n may be a number or a
// string of digits (a machine parameter), and must be 1 or more: Linux
// numbers partitions from 1.
func FormatPartition(dev string, n any) (string, error) {
	num, err := partitionNumber(n)
	if err != nil {
		return "", fmt.Errorf("formatPartition %q: %w", dev, err)
	}
	dev = strings.TrimSpace(dev)
	if dev == "" {
		return "", errors.New("formatPartition: the disk is empty")
	}
	if strings.HasSuffix(dev, "/") {
		return "", fmt.Errorf("formatPartition %q: not a disk", dev)
	}
	if strings.HasPrefix(dev, "/dev/disk/by-") {
		return fmt.Sprintf("%s-part%d", dev, num), nil
	}
	if last := dev[len(dev)-1]; last >= '0' && last <= '9' {
		return fmt.Sprintf("%sp%d", dev, num), nil
	}
	return fmt.Sprintf("%s%d", dev, num), nil
}

func partitionNumber(n any) (int, error) {
	var v int64
	switch n := n.(type) {
	case int:
		v = int64(n)
	case int64:
		v = n
	case uint64:
		if n > 1<<20 {
			return 0, fmt.Errorf("partition %d is out of range", n)
		}
		v = int64(n)
	case string:
		p, err := strconv.ParseInt(strings.TrimSpace(n), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("partition %q is not a number", n)
		}
		v = p
	default:
		return 0, fmt.Errorf("partition %v (%T) is not a number", n, n)
	}
	if v < 1 || v > 1<<20 {
		return 0, fmt.Errorf("partition %d is out of range: partitions are numbered from 1", v)
	}
	return int(v), nil
}
