package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
)

// WriteFile writes a file onto a partition.
//
// Environment (Tinkerbell's writefile):
//
//	DEST_DISK  the partition, e.g. /dev/sda1
//	FS_TYPE    its filesystem (ext4, xfs, vfat, ...); tried in turn when empty
//	DEST_PATH  absolute path of the file inside that filesystem
//	CONTENTS   the file's contents
//	UID, GID   owner (default 0)
//	MODE       octal file mode (default 0644)
//	DIRMODE    octal mode of directories it creates (default 0755)
//
// The file is written to a temporary name, synced and renamed into place.
// All paths are resolved inside the mounted filesystem: a symlink on the
// target cannot send the write into the agent's own root.
func (b *Builtins) WriteFile(ctx context.Context, s Spec, out io.Writer) error {
	dev := env(s, "DEST_DISK", "")
	if dev == "" {
		return errors.New("writefile: DEST_DISK is required")
	}
	w, err := parseWriteSpec(s)
	if err != nil {
		return fmt.Errorf("writefile: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, unmount, err := mountTemp(dev, env(s, "FS_TYPE", ""), 0)
	if err != nil {
		return fmt.Errorf("writefile: %w", err)
	}
	werr := w.writeInto(dir)
	uerr := unmount()
	if werr != nil {
		return fmt.Errorf("writefile: %s on %s: %w", w.path, dev, werr)
	}
	if uerr != nil {
		return fmt.Errorf("writefile: %w", uerr)
	}
	say(out, "writefile: wrote %d bytes to %s on %s (mode %04o, owner %d:%d)\n", len(w.contents), w.path, dev, w.mode, w.uid, w.gid)
	return nil
}

type writeSpec struct {
	path          string
	contents      string
	uid, gid      int
	mode, dirMode fs.FileMode
}

func parseWriteSpec(s Spec) (writeSpec, error) {
	w := writeSpec{contents: s.Env["CONTENTS"]}
	p := env(s, "DEST_PATH", "")
	if !strings.HasPrefix(p, "/") {
		return w, fmt.Errorf("DEST_PATH %q must be an absolute path", p)
	}
	w.path = strings.TrimPrefix(path.Clean(p), "/")
	if w.path == "" {
		return w, fmt.Errorf("DEST_PATH %q names no file", p)
	}
	var err error
	for _, f := range []struct {
		key, def string
		dst      *int
		base     int
	}{{"UID", "0", &w.uid, 10}, {"GID", "0", &w.gid, 10}} {
		v, perr := strconv.ParseUint(env(s, f.key, f.def), f.base, 31)
		if perr != nil {
			return w, fmt.Errorf("%s %q is not a number", f.key, env(s, f.key, ""))
		}
		*f.dst = int(v)
	}
	if w.mode, err = parseMode(env(s, "MODE", "0644")); err != nil {
		return w, fmt.Errorf("MODE: %w", err)
	}
	if w.dirMode, err = parseMode(env(s, "DIRMODE", "0755")); err != nil {
		return w, fmt.Errorf("DIRMODE: %w", err)
	}
	return w, nil
}

func parseMode(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("%q is not an octal mode", s)
	}
	m := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// writeInto writes the file below dir, creating missing directories.
func (w writeSpec) writeInto(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	// Closing the Root releases a directory handle; the file written
	// through it is closed and checked below.
	defer func() { _ = root.Close() }()
	parts := strings.Split(w.path, "/")
	for i := 1; i < len(parts); i++ {
		d := strings.Join(parts[:i], "/")
		switch err := root.Mkdir(d, w.dirMode); {
		case err == nil:
			if err := root.Chmod(d, w.dirMode); err != nil { // umask
				return err
			}
			if err := root.Chown(d, w.uid, w.gid); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
	}
	tmp := w.path + ".agent-tmp"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, w.mode.Perm())
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, w.contents)
	if err == nil {
		err = f.Chown(w.uid, w.gid)
	}
	if err == nil {
		err = f.Chmod(w.mode) // after chown, which clears setuid bits
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = root.Remove(tmp) // best effort: err says why the write failed
		return err
	}
	return root.Rename(tmp, w.path)
}
