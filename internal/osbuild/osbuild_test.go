package osbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/klauspost/compress/zstd"

	"github.com/rackform/terraform-provider-baremetal/internal/cpio"
)

func fakeKernel() *Kernel {
	mod := func(name, p string, deps ...string) *Module {
		return &Module{Name: name, Path: p, Depends: deps, Data: []byte("ko:" + name)}
	}
	ms := []*Module{
		mod("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"),
		mod("virtio", "kernel/drivers/virtio/virtio.ko"),
		mod("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko", "virtio_ring", "virtio", "virtio_pci_modern_dev"),
		mod("virtio_pci_modern_dev", "kernel/drivers/virtio/virtio_pci_modern_dev.ko"),
		mod("failover", "kernel/net/core/failover.ko"),
		mod("net_failover", "kernel/drivers/net/net_failover.ko", "failover"),
		mod("virtio_net", "kernel/drivers/net/virtio_net.ko", "net_failover", "virtio_ring", "virtio"),
		mod("a", "kernel/a.ko", "b"),
		mod("b", "kernel/b.ko", "a"),
		mod("needs_gone", "kernel/n.ko", "gone"),
	}
	k := &Kernel{Version: "6.1.0-test", Vmlinuz: []byte("bzImage"), Modules: map[string]*Module{}, Builtin: map[string]bool{"sd_mod": true}}
	for _, m := range ms {
		k.Modules[m.Name] = m
	}
	return k
}

func TestLoadOrder(t *testing.T) {
	tests := map[string]struct {
		names   []string
		want    []string
		wantErr string
	}{
		"deps first, stable": {
			names: []string{"virtio_net", "virtio_pci"},
			want:  []string{"failover", "net_failover", "virtio", "virtio_ring", "virtio_net", "virtio_pci_modern_dev", "virtio_pci"},
		},
		"file names canonicalised": {names: []string{"net-failover.ko"}, want: []string{"failover", "net_failover"}},
		"builtin is skipped":       {names: []string{"sd_mod", "virtio"}, want: []string{"virtio"}},
		"unknown":                  {names: []string{"nope"}, wantErr: "module nope is not in kernel"},
		"missing dependency":       {names: []string{"needs_gone"}, wantErr: "needs gone, which kernel"},
		"cycle":                    {names: []string{"a"}, wantErr: "cycle"},
		"duplicates load once":     {names: []string{"virtio", "virtio"}, want: []string{"virtio"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			order, err := fakeKernel().LoadOrder(tc.names)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range order {
				got = append(got, m.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
		})
	}
}

func readArchive(t *testing.T, b []byte) map[string]cpio.Entry {
	t.Helper()
	if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	if bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]cpio.Entry{}
	r := cpio.NewReader(bytes.NewReader(b))
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name] = e
	}
}

func TestInitramfsLayout(t *testing.T) {
	for _, c := range []Compression{CompressNone, CompressGzip, CompressZstd} {
		t.Run(string(c), func(t *testing.T) {
			b, err := Initramfs{Init: []byte("ELF"), Kernel: fakeKernel(), Modules: []string{"virtio_net"}, Compression: c,
				Files: map[string][]byte{"etc/agent-os-release": []byte("test\n")}}.Bytes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := readArchive(t, b)
			checks := map[string]uint32{
				"init": cpio.TypeReg | 0o755, "dev/console": cpio.TypeChar | 0o600, "dev/null": cpio.TypeChar | 0o666,
				"proc": cpio.TypeDir | 0o755, "tmp": cpio.TypeDir | 0o1777, "etc/agent-os-release": cpio.TypeReg | 0o644,
				"lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko": cpio.TypeReg | 0o644,
			}
			for name, mode := range checks {
				if got[name].Mode != mode {
					t.Errorf("%s: mode %o, want %o", name, got[name].Mode, mode)
				}
			}
			if c := got["dev/console"]; c.RdevMajor != 5 || c.RdevMinor != 1 {
				t.Errorf("dev/console is %d:%d", c.RdevMajor, c.RdevMinor)
			}
			want := "kernel/net/core/failover.ko\nkernel/drivers/net/net_failover.ko\nkernel/drivers/virtio/virtio.ko\n" +
				"kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/net/virtio_net.ko\n"
			if diff := cmp.Diff(want, string(got["lib/modules/6.1.0-test/"+ModulesLoadFile].Data)); diff != "" {
				t.Errorf("modules.load (-want +got):\n%s", diff)
			}
			if _, ok := got["lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_pci.ko"]; ok {
				t.Error("shipped a module nobody asked for")
			}
		})
	}
}

func TestLoadKernelDir(t *testing.T) {
	// A kernel tree as `make modules_install` lays it out, with fake ELF
	// modules: only the .modinfo section matters.
	dir := t.TempDir()
	write := func(p string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-6.9.0-custom", []byte("bzImage"))
	write("lib/modules/6.9.0-custom/modules.builtin", []byte("kernel/drivers/virtio/virtio.ko\n"))
	write("lib/modules/6.9.0-custom/kernel/drivers/net/foo-nic.ko", elfWithModinfo(t, "name=foo_nic\x00depends=libfoo,virtio\x00"))
	write("lib/modules/6.9.0-custom/kernel/lib/libfoo.ko", elfWithModinfo(t, "name=libfoo\x00depends=\x00"))
	write("lib/modules/6.9.0-custom/kernel/lib/unused.ko", elfWithModinfo(t, "name=unused\x00"))
	k, err := LoadKernelDir(context.Background(), dir, []string{"foo-nic"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for name, m := range k.Modules {
		got = append(got, name+"="+m.Path+":"+strings.Join(m.Depends, ","))
		if len(m.Data) == 0 {
			t.Errorf("%s has no data", name)
		}
	}
	if k.Version != "6.9.0-custom" {
		t.Errorf("version %q", k.Version)
	}
	want := []string{"foo_nic=kernel/drivers/net/foo-nic.ko:libfoo,virtio", "libfoo=kernel/lib/libfoo.ko:"}
	if diff := cmp.Diff(want, got, cmpSortStrings); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
}

var cmpSortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// elfWithModinfo returns a minimal 64-bit little-endian ELF relocatable file
// whose only section (besides the string table) is .modinfo.
func elfWithModinfo(t *testing.T, modinfo string) []byte {
	t.Helper()
	shstr := "\x00.modinfo\x00.shstrtab\x00"
	var b bytes.Buffer
	le := func(v any) {
		switch x := v.(type) {
		case uint16:
			b.Write([]byte{byte(x), byte(x >> 8)})
		case uint32:
			b.Write([]byte{byte(x), byte(x >> 8), byte(x >> 16), byte(x >> 24)})
		case uint64:
			for i := 0; i < 8; i++ {
				b.WriteByte(byte(x >> (8 * i)))
			}
		}
	}
	dataOff := uint64(64)
	strOff := dataOff + uint64(len(modinfo))
	shOff := strOff + uint64(len(shstr))
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	le(uint16(1))  // ET_REL
	le(uint16(62)) // EM_X86_64
	le(uint32(1))
	le(uint64(0))
	le(uint64(0))
	le(shOff)
	le(uint32(0))
	le(uint16(64))
	le(uint16(0))
	le(uint16(0))
	le(uint16(64))
	le(uint16(3)) // shnum
	le(uint16(2)) // shstrndx
	b.WriteString(modinfo)
	b.WriteString(shstr)
	sh := func(name uint32, typ uint32, off, size uint64) {
		le(name)
		le(typ)
		le(uint64(0))
		le(uint64(0))
		le(off)
		le(size)
		le(uint32(0))
		le(uint32(0))
		le(uint64(1))
		le(uint64(0))
	}
	sh(0, 0, 0, 0)
	sh(1, 1, dataOff, uint64(len(modinfo))) // .modinfo PROGBITS
	sh(10, 3, strOff, uint64(len(shstr)))   // .shstrtab STRTAB
	return b.Bytes()
}
