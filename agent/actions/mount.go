package actions

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fallbackFS are tried in order when an action names no FS_TYPE.
var fallbackFS = []string{"ext4", "xfs", "btrfs", "vfat"}

// mountTemp mounts dev on a new temporary directory. The returned function
// unmounts it and removes the directory.
func mountTemp(dev, fstype string, flags uintptr) (dir string, unmount func() error, err error) {
	if dev == "" {
		return "", nil, errors.New("no device to mount")
	}
	dir, err = os.MkdirTemp("", "agent-mnt-")
	if err != nil {
		return "", nil, fmt.Errorf("make mount point: %w", err)
	}
	types := fallbackFS
	if fstype != "" {
		types = []string{fstype}
	}
	var errs []error
	for _, t := range types {
		if err = unix.Mount(dev, dir, t, flags, ""); err == nil {
			return dir, func() error {
				uerr := unix.Unmount(dir, 0)
				if uerr != nil {
					uerr = fmt.Errorf("unmount %s: %w", dir, uerr)
				} else {
					// An empty directory under the agent's tmpfs: leaving
					// it behind costs nothing, so the unmount decides.
					_ = os.Remove(dir)
				}
				return uerr
			}, nil
		}
		errs = append(errs, fmt.Errorf("as %s: %w", t, err))
	}
	_ = os.Remove(dir) // empty, as above; the mount error is the one to report
	return "", nil, fmt.Errorf("mount %s: %w", dev, errors.Join(errs...))
}
