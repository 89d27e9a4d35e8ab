// Package testkit holds what the project's tests share: small pieces
// that every package's tests would otherwise copy. It links no testing
// code into what imports it.
package testkit

import (
	"bytes"
	"fmt"
	"net"
	"sync"
)

// Buffer is a bytes.Buffer that goroutines may write and read at once: a
// log destination for a daemon or server under test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Len is the number of bytes written so far.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

// FreeUDPPort returns a UDP port of 127.0.0.1 that was free a moment ago.
func FreeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free UDP port: %w", err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	// The port is only free for the caller once this socket is closed.
	if err := c.Close(); err != nil {
		return 0, fmt.Errorf("find a free UDP port: %w", err)
	}
	return port, nil
}

// FreeTCPAddr returns a TCP address of 127.0.0.1 whose port was free a
// moment ago.
func FreeTCPAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free TCP port: %w", err)
	}
	addr := l.Addr().String()
	// The port is only free for the caller once the listener is closed.
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("find a free TCP port: %w", err)
	}
	return addr, nil
}

// Fataler is the part of testing.TB that FreeTCP uses.
type Fataler interface {
	Helper()
	Fatal(args ...any)
}

// FreeTCP is FreeTCPAddr for a test: it fails t on an error.
func FreeTCP(t Fataler) string {
	t.Helper()
	addr, err := FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
