package actions

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The kexec_file_load call itself needs a booted VM (the end-to-end
// tests); these cover everything before it.

func TestParseKexec(t *testing.T) {
	full := map[string]string{
		"BLOCK_DEVICE": "/dev/nvme0n1p2", "FS_TYPE": "ext4",
		"KERNEL_PATH": "/boot/vmlinuz", "INITRD_PATH": "/boot/initrd.img",
		"CMD_LINE": " root=UUID=0a1b ro console=ttyS0,115200 ",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range full {
			m[a] = b
		}
		if v == "-" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := map[string]struct {
		env     map[string]string
		want    kexecSpec
		wantErr string
	}{
		"hub example": {env: full, want: kexecSpec{device: "/dev/nvme0n1p2", fstype: "ext4", kernel: "/boot/vmlinuz", initrd: "/boot/initrd.img", cmdline: "root=UUID=0a1b ro console=ttyS0,115200"}},
		"no initrd":   {env: with("INITRD_PATH", "-"), want: kexecSpec{device: "/dev/nvme0n1p2", fstype: "ext4", kernel: "/boot/vmlinuz", cmdline: "root=UUID=0a1b ro console=ttyS0,115200"}},
		"no fs type":  {env: with("FS_TYPE", ""), want: kexecSpec{device: "/dev/nvme0n1p2", kernel: "/boot/vmlinuz", initrd: "/boot/initrd.img", cmdline: "root=UUID=0a1b ro console=ttyS0,115200"}},
		"no device":   {env: with("BLOCK_DEVICE", "-"), wantErr: "BLOCK_DEVICE required"},
		"no kernel":   {env: with("KERNEL_PATH", ""), wantErr: "KERNEL_PATH required"},
		"no cmdline":  {env: with("CMD_LINE", "-"), wantErr: "CMD_LINE required"},
		"nothing":     {env: nil, wantErr: "BLOCK_DEVICE, KERNEL_PATH, CMD_LINE required"},
		"kernel root": {env: with("KERNEL_PATH", "/"), wantErr: `KERNEL_PATH "/" names no file`},
		"initrd root": {env: with("INITRD_PATH", "/.."), wantErr: `INITRD_PATH "/.." names no file`},
		"nul":         {env: with("CMD_LINE", "ro\x00x"), wantErr: "NUL"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseKexec(Spec{Name: "kexec", Env: tc.env})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(kexecSpec{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadKernelPaths: kernel and initrd resolve inside the mounted
// filesystem, and a missing one fails before any kexec call.
func TestLoadKernelPaths(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "vmlinuz"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "vmlinuz"), filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ kernel, initrd, want string }{
		"missing kernel":  {"/boot/vmlinuz", "", "open kernel"},
		"dotdot stays in": {"../../" + filepath.Base(outside) + "/vmlinuz", "", "open kernel"},
		"symlink out":     {"/escape", "", "open kernel"},
	} {
		t.Run(name, func(t *testing.T) {
			err := LoadKernel(dir, tc.kernel, tc.initrd, "ro")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if err := os.MkdirAll(filepath.Join(dir, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "boot", "vmlinuz"), []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadKernel(dir, "/boot/vmlinuz", "/boot/initrd.img", "ro"); err == nil || !strings.Contains(err.Error(), "open initrd") {
		t.Fatalf("missing initrd: err = %v", err)
	}
}

func TestKexecLoadNeedsEnv(t *testing.T) {
	b := New(Deps{})
	var out strings.Builder
	err := b.KexecLoad(t.Context(), Spec{Name: "boot", Env: map[string]string{"BLOCK_DEVICE": "/dev/sda2"}}, &out)
	if err == nil || err.Error() != "kexec: KERNEL_PATH, CMD_LINE required" {
		t.Fatalf("err = %v", err)
	}
}
