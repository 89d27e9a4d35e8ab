package actions

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// Image2Disk streams an image over HTTP(S) to a block device or a file.
//
// Environment (Tinkerbell's image2disk, plus SHA256):
//
//	IMG_URL     http:// or https:// URL of the image
//	DEST_DISK   block device or file to write to
//	COMPRESSED  false (default) | true (detect by magic) | gz | bz2 | xz | zst
//	SHA256      optional hex digest of the bytes served at IMG_URL (the
//	            compressed file when compressed), verified in the same pass;
//	            on a mismatch the first and last MiB of what was written
//	            are zeroed, so that the unverified bytes cannot boot
//	RETRIES     download resumptions after a broken connection (default 3)
//
// The image is never buffered whole: it goes from the socket through the
// hash and the decompressor to the disk. A broken download resumes with an
// HTTP Range request when the server supports it.
func (b *Builtins) Image2Disk(ctx context.Context, s Spec, out io.Writer) (err error) {
	url := env(s, "IMG_URL", "")
	dest := env(s, "DEST_DISK", "")
	if url == "" || dest == "" {
		return errors.New("image2disk: IMG_URL and DEST_DISK are required")
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return fmt.Errorf("image2disk: IMG_URL %q is not an http(s) URL", url)
	}
	want, err := parseSHA256(env(s, "SHA256", ""))
	if err != nil {
		return fmt.Errorf("image2disk: %w", err)
	}
	retries, err := strconv.Atoi(env(s, "RETRIES", "3"))
	if err != nil || retries < 0 {
		return fmt.Errorf("image2disk: RETRIES %q is not a non-negative number", env(s, "RETRIES", ""))
	}
	mode := strings.ToLower(env(s, "COMPRESSED", "false"))

	body := &resumableBody{ctx: ctx, client: b.http, url: url, retries: retries, out: out}
	// Closing the download only releases the connection: nothing read from
	// it depends on the close succeeding.
	defer func() { _ = body.Close() }()
	if err := body.open(); err != nil {
		return fmt.Errorf("image2disk: fetch %s: %w", url, err)
	}

	var h hash.Hash
	var src io.Reader = body
	if want != nil {
		h = sha256.New()
		src = io.TeeReader(body, h)
	}
	br := bufio.NewReaderSize(src, 1<<20)
	dec, kind, err := decompressor(br, mode)
	if err != nil {
		return fmt.Errorf("image2disk: %w", err)
	}
	// The decompressor only reads; its Close frees buffers and cannot lose
	// bytes already written.
	defer func() { _ = dec.Close() }()

	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("image2disk: open %s: %w", dest, err)
	}
	// Every path that reports success has fsynced f; a failing close is
	// still reported, as the bytes' fate is then unknown.
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("image2disk: close %s: %w", dest, cerr)
		}
	}()

	say(out, "image2disk: %s -> %s (%s", url, dest, kind)
	if body.size > 0 {
		say(out, ", %s", mib(body.size))
	}
	if want != nil {
		say(out, ", sha256 verified")
	}
	say(out, ")\n")

	var written atomic.Int64
	start := time.Now()
	line := func() {
		n, el := written.Load(), time.Since(start).Seconds()
		msg := fmt.Sprintf("image2disk: wrote %s (%.1f MB/s)", mib(n), float64(n)/1e6/max(el, 1e-3))
		if body.size > 0 {
			msg += fmt.Sprintf(", downloaded %.0f%%", 100*float64(body.read.Load())/float64(body.size))
		}
		say(out, "%s\n", msg)
	}
	stop := progressTicker(b.progress, line)
	src2 := &tagReader{r: ctxReader{ctx, dec}}
	_, err = io.CopyBuffer(&countingWriter{w: f, n: &written}, src2, make([]byte, 4<<20))
	stop()
	if err != nil {
		if src2.err != nil {
			return fmt.Errorf("image2disk: read %s image from %s after %s: %w", kind, url, mib(written.Load()), err)
		}
		return fmt.Errorf("image2disk: write %s after %s: %w", dest, mib(written.Load()), err)
	}
	// The decompressor may stop before the end of the download (trailing
	// padding, a second stream): hash every byte that was served.
	if _, err := io.Copy(io.Discard, ctxReader{ctx, br}); err != nil {
		return fmt.Errorf("image2disk: read rest of %s: %w", url, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("image2disk: fsync %s: %w", dest, err)
	}
	line()
	if want != nil {
		if got := h.Sum(nil); !bytes.Equal(got, want) {
			err := fmt.Errorf("image2disk: sha256 mismatch for %s: got %x, want %x", url, got, want)
			// The bytes on the disk are not the image asked for (a corrupt
			// or tampered download, or a wrong digest), yet they carry its
			// partition table and boot code: left there, the disk would
			// boot them, or pass for a finished install. Zero both ends of
			// what was written, as a quick wipe does, even when the
			// action's timeout has just run out.
			n := written.Load()
			if zerr := zeroQuick(context.WithoutCancel(ctx), f, n); zerr != nil {
				return fmt.Errorf("%w; erasing the %s written to %s failed too: %v", err, mib(n), dest, zerr)
			}
			if zerr := f.Sync(); zerr != nil {
				return fmt.Errorf("%w; fsync of %s after erasing what was written failed: %v", err, dest, zerr)
			}
			say(out, "image2disk: sha256 mismatch: erased the partition tables and boot code of the %s written to %s\n", mib(n), dest)
			return fmt.Errorf("%w (%s on %s are not the image; their first and last MiB were zeroed so that they cannot boot)", err, mib(n), dest)
		}
		say(out, "image2disk: sha256 %x ok\n", want)
	}
	rereadPartitions(f, out)
	return nil
}

func parseSHA256(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("SHA256 %q is not a hex sha256 digest", s)
	}
	return b, nil
}

var magics = []struct {
	kind  string
	magic []byte
}{
	{"gz", []byte{0x1f, 0x8b}},
	{"zst", []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{"bz2", []byte("BZh")},
}

// decompressor wraps r according to COMPRESSED. With "true" it sniffs the
// magic number of the stream.
func decompressor(r *bufio.Reader, mode string) (io.ReadCloser, string, error) {
	switch mode {
	case "", "false", "0", "no", "raw", "none":
		return io.NopCloser(r), "raw", nil
	case "true", "1", "yes", "auto":
		head, _ := r.Peek(6)
		mode = ""
		for _, m := range magics {
			if bytes.HasPrefix(head, m.magic) {
				mode = m.kind
				break
			}
		}
		if mode == "" {
			return nil, "", fmt.Errorf("COMPRESSED=true but the stream starts with %x, which is none of gzip, zstd, xz, bzip2", head)
		}
	}
	switch mode {
	case "gz", "gzip":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, "", fmt.Errorf("open gzip stream: %w", err)
		}
		return z, "gzip", nil
	case "zst", "zstd":
		z, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, "", fmt.Errorf("open zstd stream: %w", err)
		}
		return z.IOReadCloser(), "zstd", nil
	case "xz":
		z, err := xz.NewReader(r) // r is buffered: ulikunitz/xz is ~20x slower without
		if err != nil {
			return nil, "", fmt.Errorf("open xz stream: %w", err)
		}
		return io.NopCloser(z), "xz", nil
	case "bz2", "bzip2":
		return io.NopCloser(bzip2.NewReader(r)), "bzip2", nil
	}
	return nil, "", fmt.Errorf("COMPRESSED=%q: want true, false, gz, bz2, xz or zst", mode)
}

// resumableBody is the body of a GET that, when the connection breaks,
// continues with a Range request from where it stopped.
type resumableBody struct {
	ctx     context.Context
	client  *http.Client
	url     string
	retries int
	out     io.Writer

	resp      *http.Response
	size      int64 // total size, -1 when unknown
	validator string
	ranges    bool
	read      atomic.Int64
}

func (b *resumableBody) open() error {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return err
	}
	off := b.read.Load()
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		if b.validator != "" {
			req.Header.Set("If-Range", b.validator)
		}
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	switch {
	case off == 0 && resp.StatusCode == http.StatusOK:
		b.size = resp.ContentLength
		b.ranges = resp.Header.Get("Accept-Ranges") == "bytes"
		b.validator = resp.Header.Get("ETag")
		if b.validator == "" {
			b.validator = resp.Header.Get("Last-Modified")
		}
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
	default:
		_ = resp.Body.Close() // an answer we refuse: only the connection is freed
		if off > 0 {
			return fmt.Errorf("resume at byte %d: server answered %s (image changed or no range support)", off, resp.Status)
		}
		return fmt.Errorf("server answered %s", resp.Status)
	}
	b.resp = resp
	return nil
}

func (b *resumableBody) Read(p []byte) (int, error) {
	for {
		n, err := b.resp.Body.Read(p)
		b.read.Add(int64(n))
		if err == nil || err == io.EOF && (b.size < 0 || b.read.Load() >= b.size) {
			return n, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if n > 0 {
			return n, nil // hand over what we have; the error comes back next time
		}
		if b.ctx.Err() != nil || b.retries <= 0 || !b.ranges {
			return 0, fmt.Errorf("download broke at byte %d: %w", b.read.Load(), err)
		}
		b.retries--
		say(b.out, "image2disk: download broke at byte %d (%v); resuming\n", b.read.Load(), err)
		_ = b.resp.Body.Close() // already broken; the resume opens a new one
		b.resp = nil
		select {
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		case <-time.After(time.Second):
		}
		if oerr := b.open(); oerr != nil {
			return 0, fmt.Errorf("download broke at byte %d (%v); resume: %w", b.read.Load(), err, oerr)
		}
	}
}

func (b *resumableBody) Close() error {
	if b.resp != nil {
		return b.resp.Body.Close()
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// tagReader remembers whether an error came from reading.
type tagReader struct {
	r   io.Reader
	err error
}

func (t *tagReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// rereadPartitions asks the kernel to re-read a block device's partition
// table after it was written. Regular files are left alone.
func rereadPartitions(f *os.File, out io.Writer) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		say(out, "re-read partition table of %s: %v (the kernel may see the new partitions only after a reboot)\n", f.Name(), err)
	}
}
