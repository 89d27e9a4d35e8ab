package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
)

func logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serve starts a server on 127.0.0.1 at a random port over root.
func serve(t testing.TB, root string, opts Options) string {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Root = root
	s := New(logger(t), prometheus.NewRegistry(), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})
	addr := conn.LocalAddr().String()
	// Wait until the server answers: pin/tftp turns on the control
	// messages that give it the interface MTU (for blksize) only when
	// Serve starts; a request queued before then negotiates 512.
	for i := 0; ; i++ {
		_, _, err := fetch(addr, "readiness-probe", 0)
		if err != nil && strings.Contains(err.Error(), "not found") {
			break
		}
		if i == 50 {
			t.Fatalf("TFTP server not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

// testRoot is a root with a file, a directory, a symlink inside and one
// pointing out, and a secret beside the root.
func testRoot(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(root, "sub", "file.bin"), []byte("inside"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "secret"), []byte("outside"), 0o644))
	must(os.Symlink("../secret", filepath.Join(root, "escape")))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "abs-escape")))
	must(os.Symlink("sub/file.bin", filepath.Join(root, "inner-link")))
	return root
}

func TestCleanPath(t *testing.T) {
	tests := map[string]struct {
		want    string
		refused bool
	}{
		"undionly.kpxe":      {want: "undionly.kpxe"},
		"sub/file.bin":       {want: "sub/file.bin"},
		"sub/./file.bin":     {want: "sub/file.bin"},
		"sub/../file.bin":    {want: "file.bin"},
		"":                   {refused: true},
		"..":                 {refused: true},
		"../secret":          {refused: true},
		"sub/../../secret":   {refused: true},
		"/etc/passwd":        {refused: true},
		"\\windows\\a":       {refused: true},
		"a\x00b":             {refused: true},
		"sub/../../../x/y/z": {refused: true},
	}
	for in, tc := range tests {
		got, err := CleanPath(in)
		if tc.refused {
			if !errors.Is(err, ErrRefused) {
				t.Errorf("CleanPath(%q) = %q, %v; want ErrRefused", in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", in, got, err, tc.want)
		}
	}
}

func fetch(addr, name string, blksize int) ([]byte, int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size, _ := wt.(tftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), size, err
}

func TestReadsAndRefusals(t *testing.T) {
	addr := serve(t, testRoot(t), Options{})
	tests := map[string]struct {
		want    string
		errPart string
	}{
		"sub/file.bin":        {want: "inside"},
		"inner-link":          {want: "inside"},
		"escape":              {errPart: "refused"},
		"abs-escape":          {errPart: "refused"},
		"../secret":           {errPart: "refused"},
		"/etc/passwd":         {errPart: "refused"},
		"sub/../../secret":    {errPart: "refused"},
		"sub":                 {errPart: "not a regular file"},
		"missing.kpxe":        {errPart: "not found"},
		"sub/../sub/file.bin": {want: "inside"},
	}
	for name, tc := range tests {
		t.Run(strings.ReplaceAll(name, "/", "|"), func(t *testing.T) {
			got, size, err := fetch(addr, name, 0)
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tc.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("content (-want +got):\n%s", diff)
			}
			if size != int64(len(tc.want)) {
				t.Errorf("tsize = %d, want %d", size, len(tc.want))
			}
		})
	}
}

// TestExtraFiles serves a file outside the root under its name (the arm64
// GRUB loader), while the root and its refusals stay as they are.
func TestExtraFiles(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "grubnetaa64.efi")
	if err := os.WriteFile(outside, []byte("grub arm64"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, testRoot(t), Options{Files: map[string]string{"grubnetaa64.efi": outside, "gone.efi": outside + ".missing"}})
	for name, want := range map[string]string{"grubnetaa64.efi": "grub arm64", "sub/file.bin": "inside"} {
		got, _, err := fetch(addr, name, 0)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	for name, part := range map[string]string{"gone.efi": "not found", "../grubnetaa64.efi": "refused"} {
		if _, _, err := fetch(addr, name, 0); err == nil || !strings.Contains(err.Error(), part) {
			t.Errorf("%s: %v, want an error containing %q", name, err, part)
		}
	}
}

func TestWriteRefused(t *testing.T) {
	root := testRoot(t)
	addr := serve(t, root, Options{})
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	rf, err := c.Send("new.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("payload"))
	}
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("write: %v; want a read-only error", err)
	}
	if _, err := os.Stat(filepath.Join(root, "new.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file was written: %v", err)
	}
}

// TestBlksizeNegotiated sends a raw RRQ with blksize 1468 and tsize 0 and
// checks the OACK (RFC 2347) and the size of the first DATA block.
func TestBlksizeNegotiated(t *testing.T) {
	root := t.TempDir()
	payload := make([]byte, 5000)
	rand.Read(payload)
	if err := os.WriteFile(filepath.Join(root, "f"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, root, Options{})
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close client socket: %v", err)
		}
	}()
	srv, _ := net.ResolveUDPAddr("udp4", addr)
	rrq := []byte{0, 1}
	for _, f := range []string{"f", "octet", "blksize", "1468", "tsize", "0"} {
		rrq = append(append(rrq, f...), 0)
	}
	if _, err := conn.WriteTo(rrq, srv); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	n, from, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if op := binary.BigEndian.Uint16(buf); op != 6 {
		t.Fatalf("opcode %d, want OACK (6): %q", op, buf[:n])
	}
	opts := map[string]string{}
	fields := strings.Split(strings.TrimSuffix(string(buf[2:n]), "\x00"), "\x00")
	for i := 0; i+1 < len(fields); i += 2 {
		opts[fields[i]] = fields[i+1]
	}
	if diff := cmp.Diff(map[string]string{"blksize": "1468", "tsize": strconv.Itoa(len(payload))}, opts); diff != "" {
		t.Fatalf("OACK options (-want +got):\n%s", diff)
	}
	if _, err := conn.WriteTo([]byte{0, 4, 0, 0}, from); err != nil { // ACK block 0
		t.Fatal(err)
	}
	n, _, err = conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if op, blk := binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:]); op != 3 || blk != 1 || n-4 != 1468 {
		t.Fatalf("first DATA: opcode %d block %d, %d bytes; want 3, 1, 1468", op, blk, n-4)
	}
	if !bytes.Equal(buf[4:n], payload[:1468]) {
		t.Fatal("first block content differs")
	}
	// Abort politely (ERROR). A courtesy: unsent, the server times out.
	_, _ = conn.WriteTo([]byte{0, 5, 0, 0, 'd', 'o', 'n', 'e', 0}, from)
}

// TestTFTPHPAClient fetches the Debian ipxe package's undionly.kpxe with
// the tftp-hpa client and compares it byte for byte.
func TestTFTPHPAClient(t *testing.T) {
	bin, err := exec.LookPath("tftp")
	if err != nil {
		t.Skip("skipping: the tftp-hpa client is not installed (apt-get install tftp-hpa)")
	}
	want, err := os.ReadFile(filepath.Join(DefaultRoot, "undionly.kpxe"))
	if err != nil {
		t.Skipf("skipping: %v (apt-get install ipxe)", err)
	}
	addr := serve(t, DefaultRoot, Options{})
	host, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(t.TempDir(), "undionly.kpxe")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-4", "-m", "binary", host, port, "-c", "get", "undionly.kpxe", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tftp: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fetched %d bytes, differing from the %d of %s", len(got), len(want), DefaultRoot+"/undionly.kpxe")
	}
	// A traversal through the same client is refused.
	cmd = exec.CommandContext(ctx, bin, "-4", "-m", "binary", host, port, "-c", "get", "../../etc/passwd", filepath.Join(t.TempDir(), "p"))
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "refused") {
		t.Fatalf("traversal through tftp-hpa: %q; want a refusal", b)
	}
}

func BenchmarkThroughput(b *testing.B) {
	root := b.TempDir()
	const size = 16 << 20
	payload := make([]byte, size)
	rand.Read(payload)
	if err := os.WriteFile(filepath.Join(root, "big"), payload, 0o644); err != nil {
		b.Fatal(err)
	}
	addr := serve(b, root, Options{})
	for _, bs := range []int{512, 1468, 8192} {
		b.Run(fmt.Sprintf("blksize=%d", bs), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				got, _, err := fetch(addr, "big", bs)
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != size {
					b.Fatalf("got %d bytes", len(got))
				}
			}
		})
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "../x", "/abs", "a/../../b", "a/./b", "", "a\x00", "....//", "a/b/../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		rel, err := CleanPath(name)
		if err != nil {
			return
		}
		if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") || strings.ContainsRune(rel, 0) {
			t.Fatalf("CleanPath(%q) = %q escapes the root", name, rel)
		}
		if j := filepath.Join("/root", rel); !strings.HasPrefix(j, "/root/") && j != "/root" {
			t.Fatalf("CleanPath(%q) = %q joins to %q", name, rel, j)
		}
	})
}
