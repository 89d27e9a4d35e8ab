// Package osbuild assembles the small Linux systems the project boots: the
// agent OS (a Debian kernel plus an initramfs whose /init is the agent) and
// the demo OS disk image (the same kernel plus internal/demoinit).
//
// Everything is built without root and without a cpio binary, and the same
// inputs always give the same bytes: archive entries are sorted, mtimes are
// fixed, gzip headers carry no name or time.
package osbuild

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rackform/terraform-provider-baremetal/internal/kmod"
)

// VirtioModules are the modules a QEMU guest needs for its virtio NIC and
// disks (LAB.md pitfall 1). Their dependencies are added automatically.
var VirtioModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net", "virtio_blk", "virtio_scsi", "sd_mod",
}

// ServerModules are common NIC and storage drivers of real servers (Intel,
// Broadcom, Realtek NICs; AHCI, NVMe, LSI/Broadcom SAS/RAID). Drivers that
// need firmware blobs (not shipped in Debian's kernel package) may still fail
// to bring their device up: bring your own kernel or modules for those.
var ServerModules = []string{
	"e1000", "e1000e", "igb", "ixgbe", "i40e", "tg3", "bnxt_en", "r8169",
	"ahci", "nvme", "megaraid_sas", "mpt3sas",
}

// DefaultModules is what the agent OS ships: every NIC and the storage
// drivers of real servers and of QEMU, the filesystems an install writes
// to, and everything they need. An entry with a '/' selects every module
// below that path (relative to lib/modules/VERSION); any other entry names
// one module. The agent loads these by modalias, not all at once.
var DefaultModules = []string{
	// NICs: every Ethernet driver of the package, and virtio-net.
	"kernel/drivers/net/ethernet/", "virtio_net",
	// Storage: NVMe (and Intel VMD in front of it), SATA/AHCI and PATA,
	// SAS/RAID HBAs, virtio, SCSI disks and CD-ROMs.
	"kernel/drivers/nvme/host/", "vmd", "kernel/drivers/ata/",
	"megaraid_sas", "mpt3sas", "smartpqi", "hpsa", "aacraid", "mpi3mr", "mptsas", "mptspi", "isci", "pm80xx", "mvsas", "arcmsr",
	"virtio_scsi", "virtio_blk", "sd_mod", "sr_mod", "kernel/drivers/virtio/",
	// Filesystems an install writes to or reads a kernel from, with the
	// code pages vfat asks for and the checksums ext4, xfs and btrfs need.
	"ext4", "xfs", "btrfs", "vfat", "msdos", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1",
	"crc32c_generic", "crc32c_intel", "libcrc32c",
	// USB keyboards and sticks for a console at the server.
	"xhci_pci", "ehci_pci", "usb_storage", "uas", "usbhid", "hid_generic",
}

// amd64OnlyModules are the DefaultModules entries Debian builds for amd64
// only (Intel VMD and isci, the SSE4.2 crc32c, Areca's arcmsr).
var amd64OnlyModules = []string{"vmd", "isci", "crc32c_intel", "arcmsr"}

// DefaultModulesFor is DefaultModules for the agent OS of a GOARCH: amd64
// gets DefaultModules, arm64 the same less what exists only on amd64
// (arm64's crc32c is built in).
func DefaultModulesFor(arch string) ([]string, error) {
	switch arch {
	case "amd64":
		return DefaultModules, nil
	case "arm64":
		return slices.DeleteFunc(slices.Clone(DefaultModules), func(m string) bool { return slices.Contains(amd64OnlyModules, m) }), nil
	}
	return nil, fmt.Errorf("no default module list for architecture %q (want amd64 or arm64)", arch)
}

// Module is one kernel module read from a kernel package or tree.
type Module struct {
	Name    string   // canonical name, '-' replaced by '_'
	Path    string   // path under lib/modules/<version>/, e.g. kernel/drivers/net/virtio_net.ko
	Depends []string // canonical names of the modules it needs
	Aliases []string // modalias patterns (and fs-*, crypto-* names) it serves
	// Softdeps are the modules (resolved from .modinfo's "softdep=pre:"
	// names and aliases, e.g. ext4's crc32c) to load before it if they can
	// be: their failure does not stop it (crc32c_intel needs SSE4.2).
	Softdeps []string
	softpre  []string // the names as .modinfo gives them
	Data     []byte   // nil until selected
}

// Kernel is a kernel image and the modules built for it.
type Kernel struct {
	Version string
	Vmlinuz []byte
	Modules map[string]*Module
	// Builtin holds the canonical names of drivers compiled into the kernel
	// (from modules.builtin): asking for one of them is not an error.
	Builtin map[string]bool
}

// CanonicalModuleName maps a module file or name to the kernel's own form:
// "nvme-core.ko" → "nvme_core".
func CanonicalModuleName(s string) string { return kmod.Name(s) }

// selects reports whether the selection want (names, or path prefixes with
// a '/') takes module m.
func selects(want map[string]bool, prefixes []string, m *Module) bool {
	if want[m.Name] {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(m.Path, p) {
			return true
		}
	}
	return false
}

func splitSelection(want []string) (names []string, prefixes []string) {
	for _, w := range want {
		if strings.Contains(w, "/") {
			prefixes = append(prefixes, w)
		} else {
			names = append(names, w)
		}
	}
	return names, prefixes
}

// Selection expands want (names and path prefixes) to the names of the
// modules it takes, sorted: the list LoadOrder wants.
func (k *Kernel) Selection(want []string) []string {
	names, prefixes := splitSelection(want)
	out := append([]string(nil), names...)
	if len(prefixes) > 0 {
		for _, m := range k.Modules {
			if selects(nil, prefixes, m) {
				out = append(out, m.Name)
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// modinfo returns what a module's .modinfo section says of it: its name,
// dependencies, aliases and softdep pre: names.
func modinfo(ko []byte) (*Module, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	b, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	m := &Module{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			m.Name = CanonicalModuleName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					m.Depends = append(m.Depends, CanonicalModuleName(d))
				}
			}
		case "alias":
			if v = strings.TrimSpace(v); v != "" && !strings.ContainsAny(v, " \t\n") {
				m.Aliases = append(m.Aliases, v)
			}
		case "softdep":
			pre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						m.softpre = append(m.softpre, w)
					}
				}
			}
		}
	}
	return m, nil
}

// file is one file of a kernel source, relative to its root ("boot/vmlinuz-X").
type file struct {
	name string
	size int64
	open func() (io.Reader, error)
}

// walker calls fn for every regular file of a kernel source.
type walker func(ctx context.Context, fn func(file) error) error

// debWalker walks the data archive of a .deb through dpkg-deb(1), which every
// Debian system has; the package is never installed.
func debWalker(deb string) walker {
	return func(ctx context.Context, fn func(file) error) error {
		cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("run dpkg-deb on %s: %w", deb, err)
		}
		tr := tar.NewReader(out)
		var walkErr error
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				walkErr = fmt.Errorf("read %s: %w", deb, err)
				break
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			name := strings.TrimPrefix(path.Clean(h.Name), "/")
			if err := fn(file{name: name, size: h.Size, open: func() (io.Reader, error) { return tr, nil }}); err != nil {
				walkErr = err
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil && walkErr == nil {
			walkErr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.String())
		}
		return walkErr
	}
}

// dirWalker walks a directory laid out like an installed kernel:
// boot/vmlinuz-VERSION and lib/modules/VERSION/... (what `make install
// modules_install INSTALL_PATH=DIR/boot INSTALL_MOD_PATH=DIR` produces).
func dirWalker(dir string) walker {
	return func(ctx context.Context, fn func(file) error) error {
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !d.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return fn(file{name: filepath.ToSlash(rel), size: info.Size(), open: func() (io.Reader, error) {
				b, err := os.ReadFile(p)
				return bytes.NewReader(b), err
			}})
		})
	}
}

// LoadKernelDeb reads the kernel image and the wanted modules (plus their
// dependencies) from a Debian linux-image package file.
func LoadKernelDeb(ctx context.Context, deb string, want []string) (*Kernel, error) {
	return loadKernel(ctx, debWalker(deb), want)
}

// LoadKernelDir reads the kernel image and the wanted modules (plus their
// dependencies) from an installed-kernel tree; see dirWalker. Modules must be
// uncompressed .ko files.
func LoadKernelDir(ctx context.Context, dir string, want []string) (*Kernel, error) {
	return loadKernel(ctx, dirWalker(dir), want)
}

const maxFile = 256 << 20

func readAllLimited(f file) ([]byte, error) {
	if f.size > maxFile {
		return nil, fmt.Errorf("%s: %d bytes is too large", f.name, f.size)
	}
	r, err := f.open()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", f.name, err)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFile))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.name, err)
	}
	return b, nil
}

// loadKernel reads the source twice at most: once for the kernel image and
// every module's dependency list (keeping the bytes of the modules asked for),
// and once more for dependencies that were not asked for by name.
func loadKernel(ctx context.Context, walk walker, want []string) (*Kernel, error) {
	k := &Kernel{Modules: map[string]*Module{}, Builtin: map[string]bool{}}
	wantNames, prefixes := splitSelection(want)
	wanted := map[string]bool{}
	for _, w := range wantNames {
		wanted[CanonicalModuleName(w)] = true
	}
	err := walk(ctx, func(f file) error {
		switch {
		case strings.HasPrefix(f.name, "boot/vmlinuz-"):
			if k.Vmlinuz != nil {
				return fmt.Errorf("more than one kernel image (%s)", f.name)
			}
			b, err := readAllLimited(f)
			if err != nil {
				return err
			}
			k.Vmlinuz, k.Version = b, strings.TrimPrefix(f.name, "boot/vmlinuz-")
		case strings.HasPrefix(f.name, "lib/modules/") && strings.HasSuffix(f.name, "/modules.builtin"):
			b, err := readAllLimited(f)
			if err != nil {
				return err
			}
			for _, line := range strings.Fields(string(b)) {
				k.Builtin[CanonicalModuleName(line)] = true
			}
		case strings.HasPrefix(f.name, "lib/modules/") && strings.HasSuffix(f.name, ".ko"):
			parts := strings.SplitN(f.name, "/", 4) // lib modules VERSION rest
			b, err := readAllLimited(f)
			if err != nil {
				return err
			}
			m, err := modinfo(b)
			if err != nil {
				return fmt.Errorf("module %s: %w", f.name, err)
			}
			if m.Name == "" {
				m.Name = CanonicalModuleName(f.name)
			}
			m.Path = parts[3]
			if selects(wanted, prefixes, m) {
				m.Data = b
			}
			k.Modules[m.Name] = m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if k.Vmlinuz == nil {
		return nil, errors.New("no boot/vmlinuz-* in the kernel source")
	}
	for _, m := range k.Modules {
		if dir := strings.SplitN(m.Path, "/", 2)[0]; dir == "" {
			return nil, fmt.Errorf("module %s: bad path %q", m.Name, m.Path)
		}
	}
	k.resolveSoftdeps()
	order, err := k.LoadOrder(k.Selection(want))
	if err != nil {
		return nil, err
	}
	need := map[string]bool{}
	missing := false
	for _, m := range order {
		need[m.Name] = true
		missing = missing || m.Data == nil
	}
	if missing {
		err := walk(ctx, func(f file) error {
			if !strings.HasPrefix(f.name, "lib/modules/") || !strings.HasSuffix(f.name, ".ko") {
				return nil
			}
			rel := strings.SplitN(f.name, "/", 4)[3]
			for _, m := range order {
				if m.Path == rel && m.Data == nil {
					b, err := readAllLimited(f)
					if err != nil {
						return err
					}
					m.Data = b
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Keep only what will be shipped.
	for name, m := range k.Modules {
		if !need[name] {
			delete(k.Modules, name)
		} else if m.Data == nil {
			return nil, fmt.Errorf("module %s (%s) vanished between passes", name, m.Path)
		}
	}
	return k, nil
}

// resolveSoftdeps turns every module's softdep pre: names (module names or
// aliases such as "crc32c") into the modules of this kernel that serve them.
func (k *Kernel) resolveSoftdeps() {
	db := kmod.NewDB()
	names := make([]string, 0, len(k.Modules))
	for n, m := range k.Modules {
		names = append(names, n)
		db.Paths[n] = m.Path
	}
	sort.Strings(names)
	for _, n := range names {
		for _, a := range k.Modules[n].Aliases {
			db.Aliases = append(db.Aliases, kmod.Alias{Pattern: a, Module: n})
		}
	}
	for _, n := range names {
		m := k.Modules[n]
		m.Softdeps = nil
		for _, s := range m.softpre {
			for _, r := range db.Resolve(s) {
				if r != n && !slices.Contains(m.Softdeps, r) {
					m.Softdeps = append(m.Softdeps, r)
				}
			}
		}
	}
}

// LoadOrder returns the modules named (and everything they depend on) in an
// order where every module comes after its dependencies; ties are broken by
// name so the order is stable. Names not present as modules are an error
// unless the kernel has them built in, which we cannot tell here: the caller
// lists only modules that exist in the package.
func (k *Kernel) LoadOrder(names []string) ([]*Module, error) {
	var order []*Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		m, ok := k.Modules[name]
		if !ok && k.Builtin[name] {
			state[name] = 2
			return nil
		}
		if !ok {
			if from == "" {
				return fmt.Errorf("module %s is not in kernel %s (built in, or misspelt?)", name, k.Version)
			}
			return fmt.Errorf("module %s needs %s, which kernel %s does not ship", from, name, k.Version)
		}
		state[name] = 1
		deps := append([]string(nil), m.Depends...)
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		// Soft dependencies come before too, but one that loops back or
		// is missing is skipped: the module loads without it.
		for _, d := range m.Softdeps {
			if _, ok := k.Modules[d]; ok && state[d] == 0 {
				if err := visit(d, name); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, n := range names {
		if err := visit(CanonicalModuleName(n), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}
