package osbuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
)

// AgentOSConfig says what BuildAgentOS builds from.
type AgentOSConfig struct {
	KernelDeb   string   // a linux-image .deb, or
	KernelDir   string   // an installed-kernel tree
	InitPath    string   // the static agent binary
	OutDir      string   // receives vmlinuz and initramfs
	Modules     []string // names and path prefixes, see DefaultModules
	Compression Compression
	// BusyboxPath is a static busybox binary (Debian's busybox-static) to
	// install with its applet links; empty for none (no shell: exec and
	// cexec of CMD_LINE fail).
	BusyboxPath string
	// FirmwareDir is copied into lib/firmware (NIC and HBA firmware blobs,
	// laid out as in linux-firmware); empty for none.
	FirmwareDir string
	// Arch, when set (a GOARCH: amd64, arm64), is the architecture the
	// init, busybox and kernel modules must be built for: a mix-up fails
	// the build instead of the boot.
	Arch string
}

// LoadKernel reads the kernel named by cfg (deb or dir).
func (cfg AgentOSConfig) LoadKernel(ctx context.Context) (*Kernel, error) {
	switch {
	case cfg.KernelDeb != "" && cfg.KernelDir != "":
		return nil, errors.New("both a kernel package and a kernel directory given")
	case cfg.KernelDeb != "":
		return LoadKernelDeb(ctx, cfg.KernelDeb, cfg.Modules)
	case cfg.KernelDir != "":
		return LoadKernelDir(ctx, cfg.KernelDir, cfg.Modules)
	}
	return nil, errors.New("no kernel package or directory given")
}

// BuildAgentOS writes OutDir/vmlinuz and OutDir/initramfs, each replaced
// atomically.
func BuildAgentOS(ctx context.Context, log *slog.Logger, cfg AgentOSConfig) error {
	k, err := cfg.LoadKernel(ctx)
	if err != nil {
		return fmt.Errorf("load kernel: %w", err)
	}
	init, err := os.ReadFile(cfg.InitPath)
	if err != nil {
		return fmt.Errorf("read init: %w", err)
	}
	if err := checkArch(cfg.Arch, "init "+cfg.InitPath, init); err != nil {
		return err
	}
	for _, m := range k.Modules {
		if err := checkArch(cfg.Arch, "kernel module "+m.Path, m.Data); err != nil {
			return err
		}
		break // one is enough: a package is built for one architecture
	}
	in := Initramfs{Init: init, Kernel: k, Modules: k.Selection(cfg.Modules), Compression: cfg.Compression}
	if cfg.BusyboxPath != "" {
		if in.Busybox, in.Applets, err = ReadBusybox(ctx, cfg.BusyboxPath); err != nil {
			return err
		}
		if err := checkArch(cfg.Arch, "busybox "+cfg.BusyboxPath, in.Busybox); err != nil {
			return err
		}
	}
	if cfg.FirmwareDir != "" {
		if in.Firmware, err = ReadTree(cfg.FirmwareDir); err != nil {
			return fmt.Errorf("firmware: %w", err)
		}
	}
	initrd, err := in.Bytes(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg.OutDir, err)
	}
	for name, data := range map[string][]byte{"vmlinuz": k.Vmlinuz, "initramfs": initrd} {
		if err := WriteFileAtomic(filepath.Join(cfg.OutDir, name), data, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		log.Info("wrote", "file", filepath.Join(cfg.OutDir, name), "bytes", len(data), "sha256", hex.EncodeToString(sum[:]))
	}
	log.Info("agent OS built", "kernel", k.Version, "modules", len(k.Modules), "busybox_applets", len(in.Applets), "firmware_files", len(in.Firmware))
	return nil
}

// ReadBusybox reads a static busybox binary and its applets. For a binary
// of the build machine's architecture it asks `busybox --list`; for another
// (an arm64 agent OS built on amd64) it reads busybox's own applet name
// table from the binary, which is what --list prints.
func ReadBusybox(ctx context.Context, p string) ([]byte, []string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("read busybox: %w", err)
	}
	var applets []string
	if foreign, err := foreignELF(b); err != nil {
		return nil, nil, fmt.Errorf("busybox %s: %w", p, err)
	} else if foreign {
		if applets, err = busyboxAppletTable(b); err != nil {
			return nil, nil, fmt.Errorf("busybox %s: %w", p, err)
		}
	} else {
		out, err := exec.CommandContext(ctx, p, "--list").Output()
		if err != nil {
			return nil, nil, fmt.Errorf("busybox --list (%s): %w", p, err)
		}
		applets = strings.Fields(string(out))
	}
	if !slices.Contains(applets, "sh") {
		return nil, nil, fmt.Errorf("busybox %s has no sh applet", p)
	}
	sort.Strings(applets)
	return b, applets, nil
}

// elfMachines maps GOARCH to the ELF machine of its executables.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "riscv64": elf.EM_RISCV}

// checkArch fails when arch is set and the ELF file b (what) is built for
// another machine.
func checkArch(arch, what string, b []byte) error {
	if arch == "" {
		return nil
	}
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("unknown architecture %q", arch)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: not an ELF file: %w", what, err)
	}
	if f.Machine != want {
		return fmt.Errorf("%s is built for %s, not %s", what, f.Machine, arch)
	}
	return nil
}

// foreignELF reports whether the ELF executable b is for another machine
// than the one this runs on.
func foreignELF(b []byte) (bool, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false, fmt.Errorf("not an ELF executable: %w", err)
	}
	m, ok := elfMachines[runtime.GOARCH]
	return !ok || f.Machine != m, nil
}

// busyboxAppletTable reads busybox's applet_names: the NUL-separated,
// sorted names starting "[", "[[", ending at an empty name.
func busyboxAppletTable(b []byte) ([]string, error) {
	i := bytes.Index(b, []byte("\x00[\x00[[\x00"))
	if i < 0 {
		return nil, errors.New("no applet name table found (not a busybox?)")
	}
	end := bytes.Index(b[i+1:], []byte{0, 0})
	if end < 0 {
		return nil, errors.New("applet name table has no end")
	}
	names := strings.Split(string(b[i+1:i+1+end]), "\x00")
	for j, n := range names {
		if n == "" || strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r > '~' || r == '/' }) {
			return nil, fmt.Errorf("applet name table entry %d (%q) is not a name", j, n)
		}
		if j > 0 && names[j-1] >= n {
			return nil, fmt.Errorf("applet name table is not sorted at %q", n)
		}
	}
	return names, nil
}

// ReadTree reads every regular file below dir: relative slash path →
// contents. Symbolic links are followed (linux-firmware uses them).
func ReadTree(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	return files, err
}

// WriteFileAtomic writes data to a temporary file beside name and renames it
// into place, so a server reading name never sees half a file.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	// Once renamed there is nothing left to remove; before that a stray
	// dot-file is harmless next to the error that is returned.
	defer func() { _ = os.Remove(f.Name()) }()
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the write failed already: that is the error to report
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close() // as above
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("rename into %s: %w", name, err)
	}
	return nil
}
