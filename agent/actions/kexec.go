package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
)

// KexecLoad loads the installed kernel for kexec; the agent boots into it
// once provisiond has acknowledged the action's success (Action.Then is
// "kexec"), and provisiond, seeing the workflow end in kexec, switches
// netboot off and the boot device to disk but does not reset the machine.
//
// Environment (Tinkerbell's kexec; see actionspec):
//
//	BLOCK_DEVICE  partition holding the kernel (mounted read-only)
//	FS_TYPE       its filesystem; tried in turn when empty
//	KERNEL_PATH   path of the kernel inside it
//	INITRD_PATH   optional path of the initrd
//	CMD_LINE      the kernel command line
//
// A kernel that cannot be loaded fails the action with the reason, so the
// workflow fails and the machine stays in the agent OS, netboot on.
func (b *Builtins) KexecLoad(ctx context.Context, s Spec, out io.Writer) error {
	k, err := parseKexec(s)
	if err != nil {
		return fmt.Errorf("kexec: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, unmount, err := mountTemp(k.device, k.fstype, unix.MS_RDONLY)
	if err != nil {
		return fmt.Errorf("kexec: %w", err)
	}
	// Mounted read-only and only read from: a failing unmount loses
	// nothing, and the kexec'd kernel starts from a fresh mount table.
	defer func() { _ = unmount() }()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := LoadKernel(dir, k.kernel, k.initrd, k.cmdline); err != nil {
		return fmt.Errorf("kexec: %s on %s: %w", k.kernel, k.device, err)
	}
	say(out, "kexec: loaded %s", k.kernel)
	if k.initrd != "" {
		say(out, " and %s", k.initrd)
	}
	say(out, " from %s (cmdline %q); will boot it once provisiond has this report\n", k.device, k.cmdline)
	return nil
}

// kexecSpec is a kexec action's environment, checked.
type kexecSpec struct {
	device, fstype, kernel, initrd, cmdline string
}

// parseKexec reads a kexec action's environment. Paths are kept as
// written; LoadKernel resolves them inside the mounted filesystem.
func parseKexec(s Spec) (kexecSpec, error) {
	k := kexecSpec{
		device:  env(s, "BLOCK_DEVICE", ""),
		fstype:  env(s, "FS_TYPE", ""),
		kernel:  env(s, "KERNEL_PATH", ""),
		initrd:  env(s, "INITRD_PATH", ""),
		cmdline: strings.TrimSpace(env(s, "CMD_LINE", "")),
	}
	spec, _ := actionspec.Get(actionspec.Kexec)
	var missing []string
	for _, v := range spec.Missing(s.Env) {
		missing = append(missing, v.Name)
	}
	if len(missing) > 0 {
		return k, fmt.Errorf("%s required", strings.Join(missing, ", "))
	}
	for _, p := range []struct{ key, val string }{{"KERNEL_PATH", k.kernel}, {"INITRD_PATH", k.initrd}} {
		if p.val != "" && relPath(p.val) == "" {
			return k, fmt.Errorf("%s %q names no file", p.key, p.val)
		}
	}
	if strings.ContainsRune(k.cmdline, 0) {
		return k, errors.New("CMD_LINE contains a NUL byte")
	}
	return k, nil
}

// relPath turns a path inside a filesystem into one relative to its root
// ("" for the root itself).
func relPath(p string) string {
	return strings.TrimPrefix(filepath.Clean("/"+p), "/")
}

// LoadKernel loads kernel (and initrd, unless empty) from the directory
// dir, both paths resolved inside it, with kexec_file_load(2), so that a
// later reboot(LINUX_REBOOT_CMD_KEXEC) boots it with cmdline. It needs
// CAP_SYS_BOOT and a kernel with CONFIG_KEXEC_FILE; an end-to-end test can
// call it on any directory holding a kernel.
func LoadKernel(dir, kernel, initrd, cmdline string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }() // read only
	k, err := root.Open(relPath(kernel))
	if err != nil {
		return fmt.Errorf("open kernel: %w", err)
	}
	defer func() { _ = k.Close() }() // the kernel has its own copy once loaded
	initrdFD, flags := -1, unix.KEXEC_FILE_NO_INITRAMFS
	if initrd != "" {
		i, err := root.Open(relPath(initrd))
		if err != nil {
			return fmt.Errorf("open initrd: %w", err)
		}
		defer func() { _ = i.Close() }()
		initrdFD, flags = int(i.Fd()), 0
	}
	if err := unix.KexecFileLoad(int(k.Fd()), initrdFD, cmdline, flags); err != nil {
		return fmt.Errorf("kexec_file_load: %w%s", err, kexecHint(err))
	}
	return nil
}

// kexecHint says what a kexec_file_load error usually means.
func kexecHint(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	switch errno {
	case unix.ENOSYS:
		return " (the agent OS kernel was built without CONFIG_KEXEC_FILE)"
	case unix.EPERM:
		return " (kexec is disabled: kernel.kexec_load_disabled, or lockdown under Secure Boot)"
	case unix.ENOEXEC:
		return " (not a kernel image this kernel can load: wrong architecture or format, e.g. a compressed arm64 Image or an EFI zboot image)"
	case unix.EKEYREJECTED, unix.EBADMSG:
		return " (the kernel's signature was refused: Secure Boot or CONFIG_KEXEC_SIG_FORCE needs a signed kernel)"
	case unix.EBUSY:
		return " (another kexec kernel is being loaded)"
	case unix.ENOMEM:
		return " (kernel or initrd too large for the memory kexec can use)"
	}
	return ""
}
