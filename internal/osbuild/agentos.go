package osbuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// AgentOSConfig says what BuildAgentOS builds from.
type AgentOSConfig struct {
	KernelDeb   string // a linux-image .deb, or
	KernelDir   string // an installed-kernel tree
	InitPath    string // the static agent binary
	OutDir      string // receives vmlinuz and initramfs
	Modules     []string
	Compression Compression
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
	initrd, err := Initramfs{Init: init, Kernel: k, Modules: cfg.Modules, Compression: cfg.Compression}.Bytes(ctx)
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
	log.Info("agent OS built", "kernel", k.Version, "modules", len(k.Modules))
	return nil
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
