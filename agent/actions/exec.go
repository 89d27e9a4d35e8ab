package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exec runs the action's command with its environment, in the agent OS or
// chrooted into a partition of the installed disk (Tinkerbell's cexec).
//
// Environment:
//
//	CHROOT               non-empty (and not false/0/n): run chrooted
//	BLOCK_DEVICE         the partition to chroot into
//	FS_TYPE              its filesystem
//	CMD_LINE             used when the action has no command: run through
//	DEFAULT_INTERPRETER  (default "/bin/sh -c")
//
// In a chroot /dev, /proc and /sys are bind-mounted. The command runs in its
// own process group, killed as a whole when the context ends. Should the
// agent itself die (possible in plain mode; as PID 1 it never exits), the
// kernel kills the command too, so no orphan goes on writing to a disk
// whose workflow provisiond has already failed; processes the command
// started itself are out of that reach.
func (b *Builtins) Exec(ctx context.Context, s Spec, out io.Writer) error {
	argv := s.Command
	if len(argv) == 0 {
		if cl := env(s, "CMD_LINE", ""); cl != "" {
			argv = append(strings.Fields(env(s, "DEFAULT_INTERPRETER", b.shell)), cl)
		}
	}
	if len(argv) == 0 {
		return errors.New("exec: the action has no command and no CMD_LINE")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = mergeEnv(os.Environ(), s.Env)
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: the agent never starts commands from a goroutine locked to
	// an OS thread that then exits, the one case where Go would fire it early.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	if c := strings.ToLower(env(s, "CHROOT", "")); c != "" && c != "false" && c != "0" && c != "n" && c != "no" {
		root, cleanup, err := prepareChroot(env(s, "BLOCK_DEVICE", ""), env(s, "FS_TYPE", ""))
		if err != nil {
			return fmt.Errorf("exec: chroot: %w", err)
		}
		// The command's result stands whatever the cleanup does; a
		// filesystem left mounted is still worth telling the operator.
		defer func() {
			if cerr := cleanup(); cerr != nil {
				say(out, "exec: chroot cleanup: %v\n", cerr)
			}
		}()
		p, err := lookPathIn(root, argv[0], s.Env["PATH"])
		if err != nil {
			return fmt.Errorf("exec: %w", err)
		}
		cmd.Path, cmd.Err = p, nil
		cmd.Dir = "/"
		cmd.SysProcAttr.Chroot = root
		say(out, "exec: chroot %s (%s)\n", root, env(s, "BLOCK_DEVICE", ""))
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("exec %s: %w (%v)", argv[0], context.Cause(ctx), err)
	}
	if err != nil {
		return fmt.Errorf("exec %s: %w", argv[0], err)
	}
	return nil
}

// mergeEnv overlays extra onto base (KEY=VALUE entries).
func mergeEnv(base []string, extra map[string]string) []string {
	out := make([]string, 0, len(base)+len(extra))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := extra[k]; !ok {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+extra[k])
	}
	return out
}

func prepareChroot(dev, fstype string) (string, func() error, error) {
	if dev == "" {
		return "", nil, errors.New("BLOCK_DEVICE is required with CHROOT")
	}
	root, unmount, err := mountTemp(dev, fstype, 0)
	if err != nil {
		return "", nil, err
	}
	var binds []string
	cleanup := func() error {
		var errs []error
		for i := len(binds) - 1; i >= 0; i-- {
			if err := unix.Unmount(binds[i], unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", binds[i], err))
			}
		}
		return errors.Join(append(errs, unmount())...)
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		t := filepath.Join(root, d)
		if err := os.MkdirAll(t, 0o755); err != nil {
			return "", nil, errors.Join(err, cleanup())
		}
		if err := unix.Mount(d, t, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return "", nil, errors.Join(fmt.Errorf("bind %s: %w", d, err), cleanup())
		}
		binds = append(binds, t)
	}
	return root, cleanup, nil
}

// lookPathIn resolves a command name the way a shell inside root would.
func lookPathIn(root, name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if pathEnv == "" {
		pathEnv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, d := range filepath.SplitList(pathEnv) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in the chroot's PATH %s", name, pathEnv)
}
