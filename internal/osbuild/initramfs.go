package osbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/rackform/terraform-provider-baremetal/internal/cpio"
	"github.com/rackform/terraform-provider-baremetal/internal/kmod"
)

// ModulesLoadFile is the initramfs file, under lib/modules/<version>/, that
// lists the shipped modules (paths relative to that directory), one a line,
// in the order an init must load them with finit_module(2): every module
// after its dependencies. The agent and demoinit read it.
const ModulesLoadFile = "modules.load"

// Compression of the initramfs.
type Compression string

// Debian's kernel unpacks all three (CONFIG_RD_GZIP, CONFIG_RD_ZSTD).
const (
	CompressGzip Compression = "gzip"
	CompressZstd Compression = "zstd"
	CompressNone Compression = "none"
)

// BusyboxSkip are busybox applets that get no link in the agent OS: the
// agent is init, and its power actions end the system.
var BusyboxSkip = map[string]bool{"init": true, "linuxrc": true, "busybox": true}

// Initramfs describes an initramfs: an init binary and modules of a kernel.
type Initramfs struct {
	Init    []byte   // the static executable that becomes /init
	Kernel  *Kernel  // modules come from here
	Modules []string // names to ship (their dependencies are added)
	// Files are extra regular files, path → contents (mode 0644).
	Files map[string][]byte
	// Busybox, when set, is a static busybox installed as bin/busybox with
	// a link bin/NAME for every one of Applets (but BusyboxSkip); sbin,
	// usr/bin and usr/sbin link to bin, so /bin/sh, /sbin/modprobe (which
	// the kernel runs to load modules on demand) and /usr/bin/env resolve.
	Busybox []byte
	Applets []string
	// Firmware are files for lib/firmware, relative path → contents, where
	// the kernel's firmware loader looks for them.
	Firmware    map[string][]byte
	Compression Compression // default gzip
}

// Build writes the initramfs to w. The output depends only on the inputs.
func (in Initramfs) Build(ctx context.Context, w io.Writer) error {
	if len(in.Init) == 0 {
		return fmt.Errorf("initramfs: no init binary")
	}
	tr := cpio.NewTree()
	// The kernel opens /dev/console for init's stdio before any devtmpfs is
	// mounted, so it must be in the archive.
	errs := []error{
		tr.AddDir("dev", 0o755),
		tr.AddCharDev("dev/console", 0o600, 5, 1),
		tr.AddCharDev("dev/null", 0o666, 1, 3),
		tr.AddDir("tmp", 0o1777),
	}
	for _, d := range []string{"proc", "sys", "run", "etc", "mnt"} {
		errs = append(errs, tr.AddDir(d, 0o755))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("initramfs: skeleton: %w", err)
	}
	if err := tr.AddFile("init", 0o755, in.Init); err != nil {
		return fmt.Errorf("initramfs: add init: %w", err)
	}
	if in.Kernel != nil {
		order, err := in.Kernel.LoadOrder(in.Modules)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		base := path.Join("lib/modules", in.Kernel.Version)
		var list strings.Builder
		for _, m := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if m.Data == nil {
				return fmt.Errorf("initramfs: module %s was not loaded from the kernel source", m.Name)
			}
			if err := tr.AddFile(path.Join(base, m.Path), 0o644, m.Data); err != nil {
				return fmt.Errorf("initramfs: add module %s: %w", m.Name, err)
			}
			list.WriteString(m.Path + "\n")
		}
		if err := tr.AddFile(path.Join(base, ModulesLoadFile), 0o644, []byte(list.String())); err != nil {
			return fmt.Errorf("initramfs: add %s: %w", ModulesLoadFile, err)
		}
		idx := make([]kmod.Module, 0, len(order))
		for _, m := range order {
			idx = append(idx, kmod.Module{Name: m.Name, Path: m.Path, Depends: m.Depends, Aliases: m.Aliases, Softpre: m.Softdeps})
		}
		err = kmod.Write(idx, func(name string, data []byte) error { return tr.AddFile(path.Join(base, name), 0o644, data) })
		if err != nil {
			return fmt.Errorf("initramfs: module index: %w", err)
		}
	}
	if in.Busybox != nil {
		if err := addBusybox(tr, in.Busybox, in.Applets); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	for name, data := range in.Firmware {
		if err := tr.AddFile(path.Join("lib/firmware", path.Clean("/" + name)[1:]), 0o644, data); err != nil {
			return fmt.Errorf("initramfs: add firmware %s: %w", name, err)
		}
	}
	for name, data := range in.Files {
		if err := tr.AddFile(name, 0o644, data); err != nil {
			return fmt.Errorf("initramfs: add %s: %w", name, err)
		}
	}
	switch in.Compression {
	case CompressNone:
		_, err := tr.WriteTo(w)
		return err
	case CompressZstd:
		// One encoder goroutine: the frames do not depend on scheduling.
		// The kernel's unzstd needs a single frame with a known window.
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return err
		}
		if _, err := tr.WriteTo(zw); err != nil {
			return fmt.Errorf("initramfs: write archive: %w", err)
		}
		return zw.Close()
	case CompressGzip, "":
		// No name and a zero mtime in the gzip header: reproducible bytes.
		zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		if _, err := tr.WriteTo(zw); err != nil {
			return fmt.Errorf("initramfs: write archive: %w", err)
		}
		return zw.Close()
	default:
		return fmt.Errorf("initramfs: unknown compression %q", in.Compression)
	}
}

// Bytes builds the initramfs in memory.
func (in Initramfs) Bytes(ctx context.Context) ([]byte, error) {
	var buf bytes.Buffer
	err := in.Build(ctx, &buf)
	return buf.Bytes(), err
}

// addBusybox installs busybox as bin/busybox, its applet links, and the
// sbin, usr/bin and usr/sbin links to bin.
func addBusybox(tr *cpio.Tree, bb []byte, applets []string) error {
	errs := []error{
		tr.AddDir("bin", 0o755),
		tr.AddFile("bin/busybox", 0o755, bb),
		tr.AddSymlink("sbin", "bin"),
		tr.AddDir("usr", 0o755),
		tr.AddSymlink("usr/bin", "../bin"),
		tr.AddSymlink("usr/sbin", "../bin"),
	}
	seen := map[string]bool{}
	for _, a := range applets {
		if BusyboxSkip[a] || seen[a] {
			continue
		}
		seen[a] = true
		if a == "" || strings.ContainsAny(a, "/ ") || a == "." || a == ".." {
			errs = append(errs, fmt.Errorf("busybox applet %q: bad name", a))
			continue
		}
		errs = append(errs, tr.AddSymlink("bin/"+a, "busybox"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	return nil
}
