package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// quickWipe is how much is zeroed at each end of a disk in quick mode: it
// covers MBR and GPT (primary at the start, backup in the last 33 sectors),
// and the signatures of common filesystems, RAID and LVM.
const quickWipe = 1 << 20

// Wipe erases disks for deprovisioning.
//
// Environment:
//
//	DEST_DISKS  comma-separated devices (or DEST_DISK for one)
//	WIPE_MODE   quick (default): zero the first and last MiB of each disk;
//	            zero: zero the whole disk;
//	            discard: BLKDISCARD the whole disk, then a quick wipe (falls
//	            back to zero when the device cannot discard)
func (b *Builtins) Wipe(ctx context.Context, s Spec, out io.Writer) error {
	var disks []string
	for _, d := range strings.Split(env(s, "DEST_DISKS", env(s, "DEST_DISK", "")), ",") {
		if d = strings.TrimSpace(d); d != "" {
			disks = append(disks, d)
		}
	}
	if len(disks) == 0 {
		return errors.New("wipe: DEST_DISKS or DEST_DISK is required")
	}
	mode := env(s, "WIPE_MODE", "quick")
	switch mode {
	case "quick", "zero", "discard":
	default:
		return fmt.Errorf("wipe: WIPE_MODE %q: want quick, zero or discard", mode)
	}
	for _, d := range disks {
		if err := b.wipeOne(ctx, d, mode, out); err != nil {
			return fmt.Errorf("wipe %s (%s): %w", d, mode, err)
		}
	}
	return nil
}

func (b *Builtins) wipeOne(ctx context.Context, disk, mode string, out io.Writer) (err error) {
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// f was written: a failing close is reported like a failing write.
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	size, err := diskSize(f)
	if err != nil {
		return err
	}
	say(out, "wipe: %s, %s, mode %s\n", disk, mib(size), mode)
	switch mode {
	case "quick":
		err = zeroQuick(ctx, f, size)
	case "zero":
		err = b.zeroRange(ctx, f, 0, size, out)
	case "discard":
		r := [2]uint64{0, uint64(size)}
		if derr := ioctlPtr(f, unix.BLKDISCARD, &r); derr != nil {
			say(out, "wipe: %s cannot discard (%v); zeroing instead\n", disk, derr)
			err = b.zeroRange(ctx, f, 0, size, out)
		} else {
			say(out, "wipe: %s discarded\n", disk)
			// Reads after a discard are not zero on every device: clear the
			// signatures for certain.
			err = zeroQuick(ctx, f, size)
		}
	}
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	rereadPartitions(f, out)
	say(out, "wipe: %s done\n", disk)
	return nil
}

func zeroQuick(ctx context.Context, f *os.File, size int64) error {
	if size <= 2*quickWipe {
		return zeroAt(ctx, f, 0, size, nil)
	}
	if err := zeroAt(ctx, f, 0, quickWipe, nil); err != nil {
		return err
	}
	return zeroAt(ctx, f, size-quickWipe, quickWipe, nil)
}

func (b *Builtins) zeroRange(ctx context.Context, f *os.File, off, n int64, out io.Writer) error {
	var done atomic.Int64
	start := time.Now()
	stop := progressTicker(b.progress, func() {
		d := done.Load()
		say(out, "wipe: zeroed %s of %s (%.1f MB/s)\n", mib(d), mib(n), float64(d)/1e6/max(time.Since(start).Seconds(), 1e-3))
	})
	defer stop()
	return zeroAt(ctx, f, off, n, &done)
}

func zeroAt(ctx context.Context, f *os.File, off, n int64, done *atomic.Int64) error {
	buf := make([]byte, min(n, 4<<20))
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := min(n, int64(len(buf)))
		w, err := f.WriteAt(buf[:c], off)
		if err != nil {
			return fmt.Errorf("write zeros at %d: %w", off, err)
		}
		off += int64(w)
		n -= int64(w)
		if done != nil {
			done.Add(int64(w))
		}
	}
	return nil
}

// diskSize is the size of a block device (BLKGETSIZE64) or regular file.
func diskSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return fi.Size(), nil
	}
	var size uint64
	if err := ioctlPtr(f, unix.BLKGETSIZE64, &size); err != nil {
		return 0, fmt.Errorf("get size: %w", err)
	}
	return int64(size), nil
}
