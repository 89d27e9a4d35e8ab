package actions

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWipe(t *testing.T) {
	const size = 5 << 20
	tests := map[string]struct {
		mode string
		// zeroed reports whether byte i must be zero afterwards.
		zeroed func(i int) bool
	}{
		"quick":   {"quick", func(i int) bool { return i < quickWipe || i >= size-quickWipe }},
		"zero":    {"zero", func(int) bool { return true }},
		"discard": {"discard", func(int) bool { return true }}, // a file cannot discard: falls back to zero
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			disks := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
			for _, d := range disks {
				if err := os.WriteFile(d, bytes.Repeat([]byte{0xaa}, size), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			err := New(Deps{ProgressEvery: time.Millisecond}).Wipe(context.Background(), Spec{Env: map[string]string{
				"DEST_DISKS": disks[0] + ", " + disks[1], "WIPE_MODE": tc.mode}}, &out)
			if err != nil {
				t.Fatalf("Wipe: %v\n%s", err, out.String())
			}
			for _, d := range disks {
				b, _ := os.ReadFile(d)
				if len(b) != size {
					t.Fatalf("%s changed size to %d", d, len(b))
				}
				for i, c := range b {
					if want := tc.zeroed(i); (c == 0) != want {
						t.Fatalf("%s byte %d = %#x, want zeroed=%t", d, i, c, want)
					}
				}
			}
			if !strings.Contains(out.String(), "done") {
				t.Errorf("output: %s", out.String())
			}
		})
	}
}

func TestWipeSmallDiskAndErrors(t *testing.T) {
	d := filepath.Join(t.TempDir(), "small")
	if err := os.WriteFile(d, bytes.Repeat([]byte{1}, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := New(Deps{}).Wipe(context.Background(), Spec{Env: map[string]string{"DEST_DISK": d}}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(d); !bytes.Equal(b, make([]byte, 1000)) {
		t.Fatal("small disk not zeroed whole")
	}
	for env, want := range map[string]string{
		"":                      "DEST_DISKS or DEST_DISK is required",
		"WIPE_MODE=secure":      "want quick, zero or discard",
		"DEST_DISK=/nonexist/x": "no such file",
	} {
		e := map[string]string{}
		if k, v, ok := strings.Cut(env, "="); ok {
			e[k] = v
		}
		if e["DEST_DISK"] == "" && env != "" {
			e["DEST_DISK"] = d
		}
		err := New(Deps{}).Wipe(context.Background(), Spec{Env: e}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env %q: err = %v, want %q", env, err, want)
		}
	}
}

// sparseFile creates path as a sparse file of size bytes.
func sparseFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWipeZeroHonoursContext(t *testing.T) {
	d := filepath.Join(t.TempDir(), "big")
	sparseFile(t, d, 8<<30)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := New(Deps{}).Wipe(ctx, Spec{Env: map[string]string{"DEST_DISK": d, "WIPE_MODE": "zero"}}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("zeroing 8 GiB finished in 200ms?")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %v to stop", time.Since(start))
	}
}

func TestExec(t *testing.T) {
	tests := map[string]struct {
		spec    Spec
		timeout time.Duration
		wantOut string
		wantErr string
	}{
		"output and env": {
			spec:    Spec{Command: []string{"/bin/sh", "-c", `echo out $GREETING; echo err >&2`}, Env: map[string]string{"GREETING": "hello"}},
			wantOut: "out hello\nerr\n",
		},
		"CMD_LINE via interpreter": {
			spec:    Spec{Env: map[string]string{"CMD_LINE": "echo a b | tr a-z A-Z"}},
			wantOut: "A B\n",
		},
		"failure keeps output": {
			spec:    Spec{Command: []string{"/bin/sh", "-c", "echo about to fail; exit 3"}},
			wantOut: "about to fail\n", wantErr: "exit status 3",
		},
		"timeout kills the group": {
			spec:    Spec{Command: []string{"/bin/sh", "-c", "echo start; sleep 30 & sleep 30; echo never"}},
			timeout: 300 * time.Millisecond,
			wantOut: "start\n", wantErr: "deadline exceeded",
		},
		"no command":       {spec: Spec{}, wantErr: "no command"},
		"not found":        {spec: Spec{Command: []string{"no-such-binary-xyz"}}, wantErr: "not found"},
		"chroot no device": {spec: Spec{Command: []string{"true"}, Env: map[string]string{"CHROOT": "y"}}, wantErr: "BLOCK_DEVICE is required"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			var out bytes.Buffer
			start := time.Now()
			err := New(Deps{}).Exec(ctx, tc.spec, &out)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantOut, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestWriteInto(t *testing.T) {
	dir := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	s := Spec{Env: map[string]string{"DEST_PATH": "/etc/netplan/../hostname.d/name", "CONTENTS": "node-1\n",
		"MODE": "0600", "DIRMODE": "0750", "UID": strconv.Itoa(uid), "GID": strconv.Itoa(gid)}}
	w, err := parseWriteSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.writeInto(dir); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "etc/hostname.d/name")
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "node-1\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
	fi, _ := os.Stat(p)
	di, _ := os.Stat(filepath.Dir(p))
	if diff := cmp.Diff([]string{"-rw-------", "drwxr-x---"}, []string{fi.Mode().String(), di.Mode().String()}); diff != "" {
		t.Errorf("modes (-want +got):\n%s", diff)
	}
	// A symlink on the target filesystem must not lead outside it.
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	w2, _ := parseWriteSpec(Spec{Env: map[string]string{"DEST_PATH": "/escape/pwned", "CONTENTS": "x"}})
	if err := w2.writeInto(dir); err == nil {
		t.Error("write through a symlink out of the filesystem succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Error("file written outside the mounted filesystem")
	}
	for env, want := range map[string]string{"DEST_PATH=relative": "absolute", "MODE=999": "octal", "UID=-1": "not a number", "DEST_PATH=/": "names no file"} {
		k, v, _ := strings.Cut(env, "=")
		e := map[string]string{"DEST_PATH": "/f", k: v}
		if _, err := parseWriteSpec(Spec{Env: e}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", env, err, want)
		}
	}
}

// TestWriteFileLoop writes onto a real ext4 filesystem on a loop device.
func TestWriteFileLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach a loop device and mount")
	}
	for _, bin := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	sparseFile(t, img, 16<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("losetup cannot attach a loop device here: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})

	var log bytes.Buffer
	err = New(Deps{}).WriteFile(context.Background(), Spec{Env: map[string]string{
		"DEST_DISK": dev, "FS_TYPE": "ext4", "DEST_PATH": "/etc/hostname", "CONTENTS": "node-7\n",
		"UID": "1000", "GID": "1001", "MODE": "0640", "DIRMODE": "0700"}}, &log)
	if err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	// Read it back with a second mount.
	dir, unmount, err := mountTemp(dev, "ext4", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	})
	b, err := os.ReadFile(filepath.Join(dir, "etc/hostname"))
	if err != nil || string(b) != "node-7\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "etc/hostname"))
	di, _ := os.Stat(filepath.Join(dir, "etc"))
	st := fi.Sys().(*syscall.Stat_t)
	if diff := cmp.Diff([]string{"-rw-r-----", "drwx------", "1000:1001"}, []string{fi.Mode().String(), di.Mode().String(), fmt.Sprintf("%d:%d", st.Uid, st.Gid)}); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
