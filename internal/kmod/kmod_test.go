package kmod

import (
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMatch(t *testing.T) {
	tests := map[string]struct {
		pattern, s string
		want       bool
	}{
		// Real patterns from .modinfo of Debian's 6.1 kernel.
		"e1000e 82574L":       {"pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00", true},
		"e1000e other device": {"pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d000010D4sv00008086sd00000000bc02sc00i00", false},
		"nvme by class":       {"pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", true},
		"nvme class mismatch": {"pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc06i01", false},
		"virtio_net":          {"virtio:d00000001v*", "virtio:d00000001v00001AF4", true},
		"virtio_blk not net":  {"virtio:d00000002v*", "virtio:d00000001v00001AF4", false},
		"usb bcdDevice range": {"usb:v0BDAp8153d[2-2]*dc*dsc*dp*ic*isc*ip*in*", "usb:v0BDAp8153d2000dc00dsc00dp00icFFiscFFip00in00", true},
		"range excludes":      {"usb:v0BDAp8153d[0-1]*", "usb:v0BDAp8153d2000", false},
		"negated set":         {"x[!ab]y", "xcy", true},
		"negated set hit":     {"x[^ab]y", "xay", false},
		"']' first in set":    {"x[]]y", "x]y", true},
		"unterminated '['":    {"x[ab", "x[ab", true},
		"escape":              {`a\*b`, "a*b", true},
		"escape literal":      {`a\*b`, "axb", false},
		"star crosses slash":  {"acpi*:PNP0A08:*", "acpi:PNP0A08:/sub", true},
		"question mark":       {"fs-ext?", "fs-ext4", true},
		"empty star":          {"fs-ext4*", "fs-ext4", true},
		"exact":               {"fs-xfs", "fs-xfs", true},
		"longer string":       {"fs-xfs", "fs-xfs2", false},
		"star backtracks":     {"*sc08i02*", "bc01sc08i01sc08i02", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Match(tc.pattern, tc.s); got != tc.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
			}
		})
	}
}

// FuzzMatch checks Match against path.Match where they must agree: ASCII
// (Match works on bytes, path.Match on runes; modaliases are ASCII), no '/',
// no "[!" (negation in fnmatch, two members in path.Match),
// and a pattern path.Match accepts.
func FuzzMatch(f *testing.F) {
	f.Add("pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02")
	f.Add("d[0-2]*x?", "d1abcxy")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if !ascii(pattern) || !ascii(s) || strings.Contains(s, "/") || strings.Contains(pattern, "/") || strings.Contains(pattern, "^") || strings.Contains(pattern, "[]") || strings.Contains(pattern, "[!") {
			return
		}
		want, err := path.Match(pattern, s)
		if err != nil {
			return
		}
		if got := Match(pattern, s); got != want {
			t.Errorf("Match(%q, %q) = %v, path.Match says %v", pattern, s, got, want)
		}
	})
}

func TestWriteRead(t *testing.T) {
	mods := []Module{
		{Name: "ext4", Path: "kernel/fs/ext4/ext4.ko", Depends: []string{"jbd2", "mbcache", "crc16"}, Aliases: []string{"fs-ext4", "fs-ext3"}, Softpre: []string{"crc32c"}},
		{Name: "jbd2", Path: "kernel/fs/jbd2/jbd2.ko"},
		{Name: "mbcache", Path: "kernel/fs/mbcache.ko"},
		{Name: "crc16", Path: "kernel/lib/crc16.ko"},
		{Name: "crc32c_generic", Path: "kernel/crypto/crc32c_generic.ko", Aliases: []string{"crypto-crc32c", "crc32c"}},
		{Name: "a", Path: "kernel/a.ko", Depends: []string{"b"}},
		{Name: "b", Path: "kernel/b.ko", Depends: []string{"c"}},
		{Name: "c", Path: "kernel/c.ko"},
	}
	files := map[string]string{}
	if err := Write(mods, func(n string, b []byte) error { files[n] = string(b); return nil }); err != nil {
		t.Fatal(err)
	}
	wantDep := `kernel/a.ko: kernel/b.ko kernel/c.ko
kernel/b.ko: kernel/c.ko
kernel/c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
`
	if diff := cmp.Diff(wantDep, files[DepFile]); diff != "" {
		t.Errorf("modules.dep (-want +got):\n%s", diff)
	}
	db := NewDB()
	for _, err := range []error{
		db.ReadDep(strings.NewReader(files[DepFile])),
		db.ReadAlias(strings.NewReader(files[AliasFile])),
		db.ReadSoftdep(strings.NewReader(files[SoftdepFile])),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"ext4"}, db.Resolve("fs-ext4")); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"crc32c_generic"}, db.Resolve("crc32c")); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"crc32c"}, db.Softdeps["ext4"]); diff != "" {
		t.Error(diff)
	}
	if err := Write(mods[:1], func(string, []byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "not shipped") {
		t.Errorf("missing dependency: err = %v", err)
	}
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
