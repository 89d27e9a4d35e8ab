// Package cpio writes and reads "newc" (SVR4, no CRC) cpio archives, the
// format the Linux kernel unpacks as an initramfs.
//
// Tree builds an archive deterministically: entries are sorted by name,
// parent directories are created implicitly, inode numbers are assigned in
// output order and every mtime is the same fixed value, so the same inputs
// always give the same bytes.
package cpio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
)

// File type bits of Entry.Mode (as in <sys/stat.h>).
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeReg     = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
	TypeFIFO    = 0o010000
)

const (
	magic      = "070701"
	headerLen  = 110
	trailer    = "TRAILER!!!"
	maxNameLen = 4096
	// maxFileSize bounds what the Reader accepts for one entry (the format's
	// size field is 32 bits anyway).
	maxFileSize = 1<<32 - 1
)

// Entry is one archive member. Name is relative ("bin/sh", no leading "/").
// Data holds a regular file's contents or a symlink's target.
type Entry struct {
	Name      string
	Mode      uint32 // type bits | permission bits
	UID, GID  uint32
	MTime     uint32
	Data      []byte
	RdevMajor uint32
	RdevMinor uint32
}

// Writer writes entries in the order given. Use Tree for deterministic
// archives; Writer is the low-level encoder.
type Writer struct {
	w      *bufio.Writer
	ino    uint32
	closed bool
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10)}
}

func pad4(n int) int { return (4 - n%4) % 4 }

var zeros [4]byte

// WriteEntry appends e.
func (w *Writer) WriteEntry(e Entry) error {
	if w.closed {
		return errors.New("cpio: write after close")
	}
	if err := validName(e.Name); err != nil {
		return err
	}
	t := e.Mode & TypeMask
	if t == 0 {
		return fmt.Errorf("cpio: %s: mode %o has no file type", e.Name, e.Mode)
	}
	if len(e.Data) > 0 && t != TypeReg && t != TypeSymlink {
		return fmt.Errorf("cpio: %s: only regular files and symlinks carry data", e.Name)
	}
	if int64(len(e.Data)) > maxFileSize {
		return fmt.Errorf("cpio: %s: %d bytes is too large", e.Name, len(e.Data))
	}
	w.ino++
	nlink := uint32(1)
	if t == TypeDir {
		nlink = 2
	}
	return w.write(e, w.ino, nlink)
}

func (w *Writer) write(e Entry, ino, nlink uint32) error {
	fields := [13]uint32{ino, e.Mode, e.UID, e.GID, nlink, e.MTime, uint32(len(e.Data)),
		0, 0, e.RdevMajor, e.RdevMinor, uint32(len(e.Name) + 1), 0}
	var hdr [headerLen]byte
	copy(hdr[:], magic)
	for i, f := range fields {
		const hex = "0123456789ABCDEF"
		for j := 0; j < 8; j++ {
			hdr[6+i*8+j] = hex[(f>>(28-4*j))&0xf]
		}
	}
	// A bufio.Writer's error is sticky: once a write fails every later one
	// returns the same error, so checking the last write covers them all.
	_, _ = w.w.Write(hdr[:])
	_, _ = w.w.WriteString(e.Name)
	_ = w.w.WriteByte(0)
	_, _ = w.w.Write(zeros[:pad4(headerLen+len(e.Name)+1)])
	_, _ = w.w.Write(e.Data)
	if _, err := w.w.Write(zeros[:pad4(len(e.Data))]); err != nil {
		return fmt.Errorf("cpio: write %s: %w", e.Name, err)
	}
	return nil
}

// Close writes the trailer and flushes. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.write(Entry{Name: trailer}, 0, 1); err != nil {
		return err
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("cpio: flush: %w", err)
	}
	return nil
}

func validName(name string) error {
	switch {
	case name == "" || name == "." || name == trailer:
		return fmt.Errorf("cpio: invalid name %q", name)
	case len(name) >= maxNameLen:
		return fmt.Errorf("cpio: name of %d bytes is too long", len(name))
	case strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../"):
		return fmt.Errorf("cpio: name %q must be a clean relative path", name)
	}
	return nil
}

// Tree collects entries and writes them sorted by name with implicit parent
// directories (mode 0755) and a fixed mtime.
type Tree struct {
	// MTime is stamped on every entry (default 0, the epoch).
	MTime   uint32
	entries map[string]Entry
}

// NewTree returns an empty Tree.
func NewTree() *Tree { return &Tree{entries: map[string]Entry{}} }

func (t *Tree) add(e Entry) error {
	e.Name = strings.TrimPrefix(e.Name, "/")
	if err := validName(e.Name); err != nil {
		return err
	}
	if old, ok := t.entries[e.Name]; ok && (old.Mode&TypeMask != TypeDir || e.Mode&TypeMask != TypeDir) {
		return fmt.Errorf("cpio: duplicate entry %s", e.Name)
	}
	for dir := path.Dir(e.Name); dir != "."; dir = path.Dir(dir) {
		old, ok := t.entries[dir]
		if ok && old.Mode&TypeMask != TypeDir {
			return fmt.Errorf("cpio: %s: parent %s is not a directory", e.Name, dir)
		}
		if !ok {
			t.entries[dir] = Entry{Name: dir, Mode: TypeDir | 0o755}
		}
	}
	t.entries[e.Name] = e
	return nil
}

// AddFile adds a regular file with permission bits perm.
func (t *Tree) AddFile(name string, perm uint32, data []byte) error {
	return t.add(Entry{Name: name, Mode: TypeReg | perm&0o7777, Data: data})
}

// AddDir adds a directory with permission bits perm.
func (t *Tree) AddDir(name string, perm uint32) error {
	return t.add(Entry{Name: name, Mode: TypeDir | perm&0o7777})
}

// AddSymlink adds a symbolic link name → target.
func (t *Tree) AddSymlink(name, target string) error {
	return t.add(Entry{Name: name, Mode: TypeSymlink | 0o777, Data: []byte(target)})
}

// AddCharDev adds a character device node, e.g. ("dev/console", 0600, 5, 1).
func (t *Tree) AddCharDev(name string, perm, major, minor uint32) error {
	return t.add(Entry{Name: name, Mode: TypeChar | perm&0o7777, RdevMajor: major, RdevMinor: minor})
}

// Names returns the entry names in the order WriteTo writes them.
func (t *Tree) Names() []string {
	names := make([]string, 0, len(t.entries))
	for n := range t.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// WriteTo writes the archive, trailer included, to w.
func (t *Tree) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	aw := NewWriter(cw)
	for _, n := range t.Names() {
		e := t.entries[n]
		e.MTime = t.MTime
		if err := aw.WriteEntry(e); err != nil {
			return cw.n, err
		}
	}
	err := aw.Close()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Reader reads a newc archive entry by entry.
type Reader struct {
	r   *bufio.Reader
	off int64
}

// NewReader returns a Reader for r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// ErrFormat reports a malformed archive.
var ErrFormat = errors.New("cpio: malformed newc archive")

func (r *Reader) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w at offset %d: %v", ErrFormat, r.off, err)
	}
	r.off += int64(n)
	return b, nil
}

// Next returns the next entry, or io.EOF after the trailer.
func (r *Reader) Next() (Entry, error) {
	hdr, err := r.read(headerLen)
	if err != nil {
		return Entry{}, err
	}
	if string(hdr[:6]) != magic {
		return Entry{}, fmt.Errorf("%w: bad magic %q at offset %d", ErrFormat, hdr[:6], r.off-headerLen)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+i*8:14+i*8]), 16, 32)
		if err != nil {
			return Entry{}, fmt.Errorf("%w: header field %d: %v", ErrFormat, i, err)
		}
		f[i] = uint32(v)
	}
	nameSize, fileSize := int(f[11]), int64(f[6])
	if nameSize < 1 || nameSize > maxNameLen {
		return Entry{}, fmt.Errorf("%w: name size %d", ErrFormat, nameSize)
	}
	name, err := r.read(nameSize + pad4(headerLen+nameSize))
	if err != nil {
		return Entry{}, err
	}
	if name[nameSize-1] != 0 {
		return Entry{}, fmt.Errorf("%w: name not NUL-terminated", ErrFormat)
	}
	e := Entry{Name: string(name[:nameSize-1]), Mode: f[1], UID: f[2], GID: f[3], MTime: f[5],
		RdevMajor: f[9], RdevMinor: f[10]}
	if e.Name == trailer {
		return Entry{}, io.EOF
	}
	// Read the data in bounded chunks so a lying size field cannot make us
	// allocate 4 GiB up front.
	var data []byte
	for remaining := fileSize; remaining > 0; {
		n := min(remaining, 1<<20)
		b, err := r.read(int(n))
		if err != nil {
			return Entry{}, err
		}
		data = append(data, b...)
		remaining -= n
	}
	if _, err := r.read(pad4(int(fileSize % 4))); err != nil {
		return Entry{}, err
	}
	e.Data = data
	return e, nil
}
