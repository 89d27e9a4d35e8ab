//go:build !linux

package dhcp

import "net"

// setReadBuffer asks for a receive buffer of size bytes on conn (SO_RCVBUF,
// capped by the system) and returns the size asked for, or 0 if conn is
// not a UDP socket or refused it.
func setReadBuffer(conn net.PacketConn, size int) int {
	udp, ok := conn.(*net.UDPConn)
	if !ok || udp.SetReadBuffer(size) != nil {
		return 0
	}
	return size
}
