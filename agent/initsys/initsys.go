// Package initsys does what PID 1 of the agent OS must do before the worker
// runs: mount the kernel filesystems, load the drivers shipped in the
// initramfs, make sure randomness does not block, bring up the boot NIC, and
// at the end reboot or power off.
package initsys

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// MountAll mounts /proc, /sys, /dev, /run and /tmp. Already mounted
// filesystems are fine.
func MountAll(log *slog.Logger) error {
	var errs []error
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"devpts", "/dev/pts", "devpts"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.dst, err))
			continue
		}
		err := unix.Mount(m.src, m.dst, m.typ, unix.MS_NOSUID, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.typ, m.dst, err))
			continue
		}
		log.Debug("mounted", "fs", m.typ, "on", m.dst)
	}
	return errors.Join(errs...)
}

// DefaultEnv sets PATH (the kernel starts init without one) so that
// commands of exec actions and busybox's shell find the agent OS's tools.
func DefaultEnv() {
	if os.Getenv("PATH") == "" {
		_ = os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") // cannot fail for a valid name
	}
}

// FirstModules are loaded before any other module, in this order: the virtio
// stack that QEMU machines need, whose dependencies are not resolved for us.
var FirstModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_blk"}

// LoadModules is the fallback of LoadDrivers for an initramfs without a
// module index. It loads every uncompressed .ko below dir: FirstModules first,
// then the rest by name, in passes until no more load (a module whose
// dependency is not loaded yet fails and is tried again in the next pass).
// It returns how many loaded and the modules that never did.
func LoadModules(log *slog.Logger, dir string) (int, []string) {
	var paths []string
	// The callback skips what it cannot read and never fails, so neither
	// does the walk: a missing dir just means no modules.
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			paths = append(paths, p)
		}
		return nil
	})
	paths = OrderModules(paths)
	loaded := 0
	for len(paths) > 0 {
		var again []string
		var lastErr = map[string]error{}
		for _, p := range paths {
			err := loadModule(p)
			switch {
			case err == nil:
				loaded++
				log.Debug("module loaded", "module", modName(p))
			case errors.Is(err, unix.EEXIST):
			default:
				again = append(again, p)
				lastErr[p] = err
			}
		}
		if len(again) == len(paths) {
			for _, p := range again {
				log.Warn("module not loaded", "module", modName(p), "err", lastErr[p])
			}
			return loaded, again
		}
		paths = again
	}
	return loaded, nil
}

// OrderModules puts FirstModules first (in their order), then the rest
// sorted by path.
func OrderModules(paths []string) []string {
	rank := map[string]int{}
	for i, n := range FirstModules {
		rank[n] = i
	}
	out := append([]string(nil), paths...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, iok := rank[modName(out[i])]
		rj, jok := rank[modName(out[j])]
		switch {
		case iok && jok:
			return ri < rj
		case iok != jok:
			return iok
		}
		return out[i] < out[j]
	})
	return out
}

// modName is the module name of a .ko path: dashes and underscores are the
// same to the kernel.
func modName(p string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only; the kernel has read it on return
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// Power ends the agent OS: "reboot", "poweroff" or "kexec" (a kernel
// loaded by the kexec action). It syncs the disks first. On success it does
// not return.
func Power(log *slog.Logger, then string) error {
	cmd := map[string]int{
		"reboot":   unix.LINUX_REBOOT_CMD_RESTART,
		"poweroff": unix.LINUX_REBOOT_CMD_POWER_OFF,
		"kexec":    unix.LINUX_REBOOT_CMD_KEXEC,
	}
	c, ok := cmd[then]
	if !ok {
		return fmt.Errorf("unknown power action %q", then)
	}
	log.Info("syncing disks", "then", then)
	unix.Sync()
	if err := unix.Reboot(c); err != nil {
		return fmt.Errorf("%s: %w", then, err)
	}
	return nil
}
