package initsys

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rackform/terraform-provider-baremetal/internal/kmod"
)

// AlwaysModules are loaded after the devices' own drivers whatever the
// devices are: SCSI disks (AHCI, SAS and virtio-scsi disks appear after an
// asynchronous scan, late for a modalias round) and the filesystems the
// actions mount (ext4 and btrfs pull crc32c in as a soft dependency). The
// kernel could ask /sbin/modprobe (busybox) for a filesystem at mount time,
// but loading them here costs well under a second and does not depend on
// that path.
var AlwaysModules = []string{"sd_mod", "fs-ext4", "fs-xfs", "fs-btrfs", "fs-vfat", "nls_cp437", "nls_ascii", "nls_utf8"}

// Modules loads the modules of one kernel by name or modalias, with their
// dependencies, from the index files the agent OS build writes
// (internal/kmod). It remembers what it tried; it is not safe for
// concurrent use.
type Modules struct {
	dir   string // lib/modules/VERSION
	db    *kmod.DB
	log   *slog.Logger
	tried map[string]error // module name → nil (loaded) or why not
	soft  map[string]bool  // tried only as a soft dependency
	// load loads one .ko file; finit_module(2) unless a test replaces it.
	load func(path string) error
}

// OpenModules reads the module index under root (/lib/modules) for the
// running kernel, or for the only kernel there.
func OpenModules(log *slog.Logger, root string) (*Modules, error) {
	dir := ""
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		if d := filepath.Join(root, unix.ByteSliceToString(u.Release[:])); isFile(filepath.Join(d, kmod.DepFile)) {
			dir = d
		}
	}
	if dir == "" {
		m, _ := filepath.Glob(filepath.Join(root, "*", kmod.DepFile))
		if len(m) != 1 {
			return nil, fmt.Errorf("no module index (%s) for this kernel under %s", kmod.DepFile, root)
		}
		dir = filepath.Dir(m[0])
	}
	db := kmod.NewDB()
	for _, f := range []struct {
		name string
		read func(*os.File) error
	}{
		{kmod.DepFile, func(f *os.File) error { return db.ReadDep(f) }},
		{kmod.AliasFile, func(f *os.File) error { return db.ReadAlias(f) }},
		{kmod.SoftdepFile, func(f *os.File) error { return db.ReadSoftdep(f) }},
	} {
		fh, err := os.Open(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		err = f.read(fh)
		_ = fh.Close() // read-only
		if err != nil {
			return nil, err
		}
	}
	return &Modules{dir: dir, db: db, log: log, tried: map[string]error{}, soft: map[string]bool{}, load: loadModule}, nil
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Loaded returns the names of the modules loaded so far, sorted.
func (m *Modules) Loaded() []string {
	var out []string
	for n, err := range m.tried {
		if err == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Failed returns the modules that did not load and why, but soft
// dependencies: those are optional.
func (m *Modules) Failed() map[string]error {
	out := map[string]error{}
	for n, err := range m.tried {
		if err != nil && !m.soft[n] {
			out[n] = err
		}
	}
	return out
}

// Load loads a module (a name or an alias such as "fs-ext4" or a
// modalias) and what it needs: its soft dependencies if they load, then
// its dependencies, then itself. A module already in the kernel counts as
// loaded. It reports whether anything new loaded.
func (m *Modules) Load(s string) (bool, error) {
	names := m.db.Resolve(s)
	if len(names) == 0 {
		return false, fmt.Errorf("no module for %q", s)
	}
	var errs []error
	any := false
	for _, n := range names {
		if _, done := m.tried[n]; done {
			if err := m.tried[n]; err != nil {
				errs = append(errs, err)
			}
			continue
		}
		err := m.loadName(n)
		m.tried[n] = err
		delete(m.soft, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		any = true
	}
	return any, errors.Join(errs...)
}

func (m *Modules) loadName(n string) error {
	// Soft dependencies are best effort: crc32c_intel needs SSE4.2, and
	// crc32c_generic then serves ext4 alone.
	for _, s := range m.db.Softdeps[n] {
		for _, sn := range m.db.Resolve(s) {
			if _, done := m.tried[sn]; !done && sn != n {
				m.tried[sn] = m.loadName(sn)
				if m.tried[sn] != nil {
					m.soft[sn] = true
					m.log.Debug("optional module not loaded", "module", sn, "for", n, "err", m.tried[sn])
				}
			}
		}
	}
	deps := m.db.Deps[n]
	for i := len(deps) - 1; i >= 0; i-- {
		dn := kmod.Name(deps[i])
		if err, done := m.tried[dn]; done {
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", n, dn, err)
			}
			continue
		}
		err := m.loadPath(deps[i])
		m.tried[dn] = err
		if err != nil {
			return fmt.Errorf("%s needs %s: %w", n, dn, err)
		}
	}
	return m.loadPath(m.db.Paths[n])
}

func (m *Modules) loadPath(rel string) error {
	err := m.load(filepath.Join(m.dir, rel))
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", kmod.Name(rel), err)
	}
	m.log.Debug("module loaded", "module", kmod.Name(rel))
	return nil
}

// Modaliases returns the modalias of every device on every bus under sysfs
// (/sys): /sys/bus/*/devices/*/modalias.
func Modaliases(sysfs string) []string {
	files, _ := filepath.Glob(filepath.Join(sysfs, "bus", "*", "devices", "*", "modalias"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the device went away
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Coldplug loads the drivers of the devices present, in rounds: loading a
// bus driver (virtio_pci, ahci, xhci_pci) makes the devices behind it
// appear, with modaliases of their own. It stops when quiet rounds
// quiet apart (in pollEvery steps) find no device it has not seen.
func (m *Modules) Coldplug(sysfs string, quiet int, pollEvery time.Duration) {
	seen := map[string]bool{}
	for still := 0; still <= quiet; {
		fresh := 0
		for _, a := range Modaliases(sysfs) {
			if seen[a] {
				continue
			}
			seen[a] = true
			fresh++
			if ok, err := m.Load(a); ok {
				m.log.Debug("driver loaded", "modalias", a)
			} else if err != nil && !strings.HasPrefix(err.Error(), "no module") {
				m.log.Warn("driver not loaded", "modalias", a, "err", err)
			}
		}
		if fresh > 0 {
			still = 0
			continue
		}
		still++
		if still <= quiet {
			time.Sleep(pollEvery)
		}
	}
}

// LoadDrivers loads what the agent OS needs: the drivers of the devices
// present (by modalias) and AlwaysModules, from the index under modRoot
// (/lib/modules). An initramfs without an index (an older build) gets
// LoadModules: every module shipped. It returns the modules loaded and
// those that failed.
func LoadDrivers(log *slog.Logger, modRoot, sysfs string) (loaded []string, failed []string) {
	start := time.Now()
	m, err := OpenModules(log, modRoot)
	if err != nil {
		log.Warn("no modalias index: loading every module shipped", "err", err)
		n, bad := LoadModules(log, modRoot)
		return make([]string, n), bad
	}
	m.Coldplug(sysfs, 3, 100*time.Millisecond)
	coldplug := time.Since(start)
	for _, a := range AlwaysModules {
		if _, err := m.Load(a); err != nil {
			log.Warn("module not loaded", "module", a, "err", err)
		}
	}
	for n := range m.Failed() {
		failed = append(failed, n)
	}
	sort.Strings(failed)
	loaded = m.Loaded()
	log.Info("drivers loaded", "loaded", len(loaded), "failed", len(failed), "coldplug", coldplug.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond),
		"modules", strings.Join(loaded, ","))
	return loaded, failed
}
