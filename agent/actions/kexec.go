package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// KexecLoad loads the installed kernel for kexec; the agent boots into it
// after it has reported the action (Action.Then is "kexec").
//
// Environment (Tinkerbell's kexec):
//
//	BLOCK_DEVICE  partition holding the kernel
//	FS_TYPE       its filesystem
//	KERNEL_PATH   path of the kernel inside it
//	INITRD_PATH   optional path of the initrd
//	CMD_LINE      the kernel command line
func (b *Builtins) KexecLoad(ctx context.Context, s Spec, out io.Writer) error {
	kpath := env(s, "KERNEL_PATH", "")
	if kpath == "" {
		return errors.New("kexec: KERNEL_PATH is required")
	}
	dir, unmount, err := mountTemp(env(s, "BLOCK_DEVICE", ""), env(s, "FS_TYPE", ""), unix.MS_RDONLY)
	if err != nil {
		return fmt.Errorf("kexec: %w", err)
	}
	// Mounted read-only and only read from: a failing unmount loses
	// nothing, and the kexec'd kernel starts from a fresh mount table.
	defer func() { _ = unmount() }()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("kexec: %w", err)
	}
	defer func() { _ = root.Close() }() // read-only, see unmount
	rel := func(p string) string { return strings.TrimPrefix(filepath.Clean("/"+p), "/") }
	k, err := root.Open(rel(kpath))
	if err != nil {
		return fmt.Errorf("kexec: open kernel: %w", err)
	}
	defer func() { _ = k.Close() }() // the kernel has copied it once loaded
	initrdFD, flags := -1, unix.KEXEC_FILE_NO_INITRAMFS
	if ip := env(s, "INITRD_PATH", ""); ip != "" {
		i, err := root.Open(rel(ip))
		if err != nil {
			return fmt.Errorf("kexec: open initrd: %w", err)
		}
		defer func() { _ = i.Close() }()
		initrdFD, flags = int(i.Fd()), 0
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cmdline := env(s, "CMD_LINE", "")
	if err := unix.KexecFileLoad(int(k.Fd()), initrdFD, cmdline, flags); err != nil {
		return fmt.Errorf("kexec: load %s: %w", kpath, err)
	}
	say(out, "kexec: loaded %s (cmdline %q); will boot it once this action is reported\n", kpath, cmdline)
	return nil
}
