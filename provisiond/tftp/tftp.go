// Package tftp is provisiond's read-only TFTP server. It serves the iPXE
// binaries that PXE ROMs chainload (LAB.md: everything after iPXE goes over
// HTTP, which is much faster), with the blksize (RFC 2348) and tsize
// (RFC 2349) options. Writes are refused, and so is every path that is not
// a plain relative name inside the root: "..", absolute paths, and symlinks
// that point out of it (os.Root enforces the last).
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"strings"

	"os"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultRoot is where Debian's ipxe package puts its binaries.
const DefaultRoot = "/usr/lib/ipxe"

// Options configure a Server.
type Options struct {
	// Root is the directory served; default DefaultRoot.
	Root string
	// Files maps extra names to files outside Root (the arm64 GRUB loader,
	// provisiond --efi-arm64-binary); they are served before Root.
	Files map[string]string
	// Listen is the UDP address; default ":69".
	Listen string
	// MaxBlockSize caps the negotiated blksize; 0 means the library's
	// default (the interface MTU less headers).
	MaxBlockSize int
}

// Server is the TFTP server.
type Server struct {
	log  *slog.Logger
	opts Options

	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
}

// New returns a server; it does no I/O.
func New(log *slog.Logger, reg prometheus.Registerer, opts Options) *Server {
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	if opts.Listen == "" {
		opts.Listen = ":69"
	}
	s := &Server{
		log:  log.With("component", "tftp"),
		opts: opts,
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provisiond_tftp_transfers_total", Help: "TFTP requests, by result (ok, refused, not_found, failed).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "provisiond_tftp_sent_bytes_total", Help: "Bytes sent by TFTP.",
		}),
	}
	if reg != nil {
		reg.MustRegister(s.transfers, s.bytes)
	}
	return s
}

// ErrRefused marks a request refused by policy (write, path escape).
var ErrRefused = errors.New("refused")

// CleanPath checks a requested file name and returns it relative to the
// root. It refuses empty names, absolute paths, any ".." element, NUL and
// backslashes (a Windows client's separator, never a file name here).
func CleanPath(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\x00\\") {
		return "", fmt.Errorf("path %q: %w", name, ErrRefused)
	}
	if !filepath.IsLocal(name) {
		return "", fmt.Errorf("path %q is outside the root: %w", name, ErrRefused)
	}
	return filepath.Clean(name), nil
}

// Serve listens on Options.Listen and serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	conn, err := net.ListenPacket("udp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("tftp: listen on %s: %w", s.opts.Listen, err)
	}
	return s.ServeConn(ctx, conn)
}

// ServeConn serves on conn until ctx ends; it closes conn.
func (s *Server) ServeConn(ctx context.Context, conn net.PacketConn) error {
	root, err := os.OpenRoot(s.opts.Root)
	if err != nil {
		_ = conn.Close() // never served: the open error is the news
		return fmt.Errorf("tftp: open root %s: %w", s.opts.Root, err)
	}
	defer func() { _ = root.Close() }() // a directory handle, only read through
	srv := tftp.NewServer(func(name string, rf io.ReaderFrom) error { return s.read(root, name, rf) }, s.write)
	srv.SetHook(hook{s})
	if s.opts.MaxBlockSize > 0 {
		srv.SetBlockSize(s.opts.MaxBlockSize)
	}
	s.log.Info("serving TFTP", "addr", conn.LocalAddr().String(), "root", s.opts.Root)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(conn) }()
	select {
	case <-ctx.Done():
		srv.Shutdown() // waits for transfers in flight, bounded by their timeouts
		// Whatever Serve says once shut down is about the closing, not a
		// failure to serve.
		if err := <-errc; err != nil {
			s.log.Debug("TFTP serve ended", "err", err)
		}
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("tftp: serve: %w", err)
	}
}

func remote(rf any) string {
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		a := ot.RemoteAddr()
		return a.String()
	}
	if it, ok := rf.(tftp.IncomingTransfer); ok {
		a := it.RemoteAddr()
		return a.String()
	}
	return ""
}

func (s *Server) read(root *os.Root, name string, rf io.ReaderFrom) error {
	log := s.log.With("file", name, "remote", remote(rf))
	rel, err := CleanPath(name)
	if err != nil {
		s.transfers.WithLabelValues("refused").Inc()
		log.Warn("TFTP read refused", "err", err)
		return err
	}
	var f *os.File
	if p, ok := s.opts.Files[rel]; ok {
		f, err = os.Open(p)
	} else {
		f, err = root.Open(rel)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.transfers.WithLabelValues("not_found").Inc()
			log.Info("TFTP file not found")
			return fmt.Errorf("%s: not found", rel)
		}
		// os.Root reports a symlink or ".." leading out of the root as an
		// error too: refuse without saying more.
		s.transfers.WithLabelValues("refused").Inc()
		log.Warn("TFTP read refused", "err", err)
		return fmt.Errorf("%s: %w", rel, ErrRefused)
	}
	defer func() { _ = f.Close() }() // read-only
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		s.transfers.WithLabelValues("refused").Inc()
		log.Warn("TFTP read refused: not a regular file")
		return fmt.Errorf("%s: not a regular file: %w", rel, ErrRefused)
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(st.Size()) // tsize, RFC 2349
	}
	n, err := rf.ReadFrom(f)
	s.bytes.Add(float64(n))
	if err != nil && n == 0 && strings.Contains(err.Error(), "code=8") {
		// Error code 8 (RFC 2347: option negotiation refused) before any
		// data is how UEFI PXE (EDK2) asks for tsize and then hangs up: a
		// size probe, followed at once by the real transfer.
		s.transfers.WithLabelValues("size_probe").Inc()
		log.Debug("TFTP size probe", "size", st.Size())
		return nil
	}
	if err != nil {
		s.transfers.WithLabelValues("failed").Inc()
		log.Warn("TFTP transfer failed", "bytes", n, "err", err)
		return err
	}
	s.transfers.WithLabelValues("ok").Inc()
	log.Info("TFTP transfer done", "bytes", n)
	return nil
}

func (s *Server) write(name string, wt io.WriterTo) error {
	s.transfers.WithLabelValues("refused").Inc()
	s.log.Warn("TFTP write refused: the server is read-only", "file", name, "remote", remote(wt))
	return fmt.Errorf("write %q: read-only server: %w", name, ErrRefused)
}

// hook logs the negotiated options of every transfer.
type hook struct{ s *Server }

func (h hook) OnSuccess(st tftp.TransferStats) {
	h.s.log.Debug("TFTP transfer stats", "file", st.Filename, "remote", st.RemoteAddr.String(), "options", fmt.Sprint(st.Opts),
		"datagrams", st.DatagramsSent, "duration", st.Duration)
}

func (h hook) OnFailure(st tftp.TransferStats, err error) {
	h.s.log.Debug("TFTP transfer failed", "file", st.Filename, "remote", st.RemoteAddr.String(), "options", fmt.Sprint(st.Opts), "err", err)
}
