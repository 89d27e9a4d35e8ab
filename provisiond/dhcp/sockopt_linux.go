package dhcp

import (
	"net"
	"syscall"
)

// setReadBuffer asks for a receive buffer of size bytes on conn, with
// SO_RCVBUFFORCE (which needs CAP_NET_ADMIN, as binding port 67 on an
// interface does) and else SO_RCVBUF (capped by net.core.rmem_max), and
// returns what the kernel granted (Linux doubles the request for its
// bookkeeping), or 0 if conn is not a socket.
func setReadBuffer(conn net.PacketConn, size int) int {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	_ = rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size) != nil {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		}
		got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	return got
}
