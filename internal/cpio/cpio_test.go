package cpio

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readAll(t testing.TB, b []byte) []Entry {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	var out []Entry
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		out = append(out, e)
	}
}

func TestTreeRoundTrip(t *testing.T) {
	tests := map[string]struct {
		build func(*Tree) error
		want  []Entry
	}{
		"initramfs skeleton": {
			build: func(tr *Tree) error {
				return errors.Join(
					tr.AddFile("init", 0o755, []byte("#!/bin/true\n")),
					tr.AddCharDev("dev/console", 0o600, 5, 1),
					tr.AddCharDev("/dev/null", 0o666, 1, 3),
					tr.AddFile("lib/modules/6.1/kernel/a.ko", 0o644, []byte("abc")),
					tr.AddSymlink("bin", "usr/bin"),
				)
			},
			want: []Entry{
				{Name: "bin", Mode: TypeSymlink | 0o777, Data: []byte("usr/bin")},
				{Name: "dev", Mode: TypeDir | 0o755},
				{Name: "dev/console", Mode: TypeChar | 0o600, RdevMajor: 5, RdevMinor: 1},
				{Name: "dev/null", Mode: TypeChar | 0o666, RdevMajor: 1, RdevMinor: 3},
				{Name: "init", Mode: TypeReg | 0o755, Data: []byte("#!/bin/true\n")},
				{Name: "lib", Mode: TypeDir | 0o755},
				{Name: "lib/modules", Mode: TypeDir | 0o755},
				{Name: "lib/modules/6.1", Mode: TypeDir | 0o755},
				{Name: "lib/modules/6.1/kernel", Mode: TypeDir | 0o755},
				{Name: "lib/modules/6.1/kernel/a.ko", Mode: TypeReg | 0o644, Data: []byte("abc")},
			},
		},
		"explicit dir keeps its mode": {
			build: func(tr *Tree) error {
				return errors.Join(tr.AddFile("tmp/x", 0o600, nil), tr.AddDir("tmp", 0o1777))
			},
			want: []Entry{
				{Name: "tmp", Mode: TypeDir | 0o1777},
				{Name: "tmp/x", Mode: TypeReg | 0o600},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tr := NewTree()
			if err := tc.build(tr); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			n, err := tr.WriteTo(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(buf.Len()) || n%4 != 0 {
				t.Errorf("WriteTo returned %d, wrote %d (must be a multiple of 4)", n, buf.Len())
			}
			if diff := cmp.Diff(tc.want, readAll(t, buf.Bytes())); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTreeErrors(t *testing.T) {
	tests := map[string]func(*Tree) error{
		"duplicate file": func(tr *Tree) error { _ = tr.AddFile("a", 0o644, nil); return tr.AddFile("a", 0o644, nil) },
		"file as parent": func(tr *Tree) error { _ = tr.AddFile("a", 0o644, nil); return tr.AddFile("a/b", 0o644, nil) },
		"dotdot":         func(tr *Tree) error { return tr.AddFile("../etc/passwd", 0o644, nil) },
		"unclean":        func(tr *Tree) error { return tr.AddFile("a//b", 0o644, nil) },
		"trailer name":   func(tr *Tree) error { return tr.AddFile("TRAILER!!!", 0o644, nil) },
		"empty":          func(tr *Tree) error { return tr.AddDir("", 0o755) },
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			if err := fn(NewTree()); err == nil {
				t.Error("no error")
			}
		})
	}
}

// The header layout pinned against the newc specification.
func TestHeaderBytes(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteEntry(Entry{Name: "dev/console", Mode: TypeChar | 0o600, RdevMajor: 5, RdevMinor: 1, MTime: 0x5f5e100}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "00002180" + "00000000" + "00000000" + "00000001" + "05F5E100" +
		"00000000" + "00000000" + "00000000" + "00000005" + "00000001" + "0000000C" + "00000000" +
		"dev/console\x00"
	if got := buf.String()[:len(want)]; got != want {
		t.Errorf("header\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(buf.String(), "TRAILER!!!\x00") {
		t.Error("no trailer")
	}
}

func TestDeterministic(t *testing.T) {
	build := func(order []string) [32]byte {
		tr := NewTree()
		for _, n := range order {
			if err := tr.AddFile(n, 0o644, []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		if _, err := tr.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(buf.Bytes())
	}
	a := build([]string{"z/1", "a/2", "m/3/4"})
	b := build([]string{"m/3/4", "z/1", "a/2"})
	if a != b {
		t.Error("insertion order changed the archive bytes")
	}
}

// TestAgainstGNUcpio lists an archive with the real cpio tool when installed.
func TestAgainstGNUcpio(t *testing.T) {
	bin, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio binary not installed (apt-get install cpio); the Go reader round-trip covers the format")
	}
	tr := NewTree()
	_ = tr.AddFile("init", 0o755, []byte("x"))
	_ = tr.AddCharDev("dev/console", 0o600, 5, 1)
	var buf bytes.Buffer
	if _, err := tr.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-t", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	if diff := cmp.Diff("dev\ndev/console\ninit\n", string(out)); diff != "" {
		t.Errorf("cpio -t (-want +got):\n%s", diff)
	}
}

func FuzzReader(f *testing.F) {
	tr := NewTree()
	_ = tr.AddFile("a/b", 0o644, []byte("hello"))
	var buf bytes.Buffer
	_, _ = tr.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 1000; i++ {
			if _, err := r.Next(); err != nil {
				return
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("init", []byte("data"), uint32(0o755), "dev/x")
	f.Add("a/b/c", []byte{}, uint32(0o644), "a/d")
	f.Fuzz(func(t *testing.T, name1 string, data []byte, perm uint32, name2 string) {
		tr := NewTree()
		if tr.AddFile(name1, perm, data) != nil {
			return
		}
		if tr.AddCharDev(name2, 0o600, 1, 3) != nil {
			return
		}
		var buf bytes.Buffer
		if _, err := tr.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, buf.Bytes())
		if len(got) != len(tr.Names()) {
			t.Fatalf("read %d entries, wrote %d", len(got), len(tr.Names()))
		}
		for _, e := range got {
			want := tr.entries[e.Name]
			if e.Mode != want.Mode || !bytes.Equal(e.Data, want.Data) || e.RdevMajor != want.RdevMajor {
				t.Fatalf("entry %q: got %+v want %+v", e.Name, e, want)
			}
		}
	})
}
