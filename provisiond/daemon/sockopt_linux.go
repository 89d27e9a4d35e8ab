package daemon

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// deadPeerUserTimeout sets TCP_USER_TIMEOUT (30 s) on the listener, which
// accepted connections inherit: a connection whose sent data has gone
// unacknowledged that long is dropped. Keepalive reaps only idle
// connections; GRUB also leaves ones with a response still in flight
// (TestE2EArm64 saw the next boot's initrd fetch time out on one).
func deadPeerUserTimeout(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 30000)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set TCP_USER_TIMEOUT: %w", serr)
	}
	return nil
}
