package osbuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
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
	in := Initramfs{Init: init, Kernel: k, Modules: k.Selection(cfg.Modules), Compression: cfg.Compression}
	if cfg.BusyboxPath != "" {
		if in.Busybox, in.Applets, err = ReadBusybox(ctx, cfg.BusyboxPath); err != nil {
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

// ReadBusybox reads a static busybox binary and asks it for its applets
// (`busybox --list`), so it must run on the build machine's architecture.
func ReadBusybox(ctx context.Context, p string) ([]byte, []string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("read busybox: %w", err)
	}
	out, err := exec.CommandContext(ctx, p, "--list").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("busybox --list (%s must be a busybox for this machine's architecture): %w", p, err)
	}
	applets := strings.Fields(string(out))
	if !slices.Contains(applets, "sh") {
		return nil, nil, fmt.Errorf("busybox %s has no sh applet", p)
	}
	sort.Strings(applets)
	return b, applets, nil
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
