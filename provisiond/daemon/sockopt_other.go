//go:build !linux

package daemon

import "syscall"

// deadPeerUserTimeout is Linux only (TCP_USER_TIMEOUT); elsewhere
// keepalive alone reaps dead peers.
func deadPeerUserTimeout(_, _ string, _ syscall.RawConn) error { return nil }
