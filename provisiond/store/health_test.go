package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type lockedBuffer = testkit.Buffer

// TestHealthFollowsWrites uses the injection seam: commits fail as on a
// full disk. Errors of the transaction's own function do not count.
func TestHealthFollowsWrites(t *testing.T) {
	ctx := context.Background()
	logs := &lockedBuffer{}
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true, Log: slog.New(slog.NewTextHandler(logs, nil))})
	must(t, err)
	defer func() { _ = s.Close() }() // test cleanup
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }

	must(t, s.Health(ctx))
	// A refused write (its function's error) is not a storage failure.
	if err := s.Update(ctx, func(tx *Tx) error { return tx.CreateHardware(Hardware{}) }); err == nil {
		t.Fatal("empty id accepted")
	}
	must(t, s.Health(ctx))

	s.failWrites = func() error { return syscall.ENOSPC }
	for i := range 20 {
		err := s.Batch(ctx, func(tx *Tx) error {
			return tx.CreateHardware(hw(fmt.Sprint("h", i), fmt.Sprintf("aa:bb:cc:00:00:%02x", i), ""))
		})
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write %d: %v, want ENOSPC", i, err)
		}
	}
	if err := s.Health(ctx); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("Health = %v, want ENOSPC naming the file", err)
	}
	if n := strings.Count(logs.String(), "store write failed"); n != 1 {
		t.Fatalf("%d log lines for 20 failed writes, want 1:\n%s", n, logs)
	}

	// A minute on, the window is over, but the probe write fails too.
	now = now.Add(healthWindow + time.Second)
	if err := s.Health(ctx); !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "probe") {
		t.Fatalf("Health = %v, want the probe's ENOSPC", err)
	}
	if n := strings.Count(logs.String(), "store write failed"); n != 2 {
		t.Fatalf("%d log lines a minute later, want 2:\n%s", n, logs)
	}

	// The disk has room again.
	s.failWrites = nil
	now = now.Add(healthWindow + time.Second)
	must(t, s.Health(ctx))
	if !strings.Contains(logs.String(), "store writes succeed again") {
		t.Fatalf("no recovery line:\n%s", logs)
	}
}

// TestHealthOnFullTmpfs fills a real 1 MiB tmpfs (root only).
func TestHealthOnFullTmpfs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a 1 MiB tmpfs needs root; TestHealthFollowsWrites covers it through the injection seam")
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	ctx := context.Background()
	s, err := Open(filepath.Join(mnt, "provisiond.db"), Options{})
	must(t, err)
	defer func() { _ = s.Close() }() // test cleanup
	must(t, s.Health(ctx))
	blob := strings.Repeat("x", 64<<10)
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		werr = s.Update(ctx, func(tx *Tx) error {
			return tx.CreateTemplate(Template{ID: fmt.Sprint("t", i), Name: fmt.Sprint("n", i), Content: blob})
		})
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("last write: %v, want ENOSPC", werr)
	}
	if err := s.Health(ctx); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Health = %v, want ENOSPC", err)
	}
}
