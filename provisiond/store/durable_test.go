package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func TestDurable(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	durable := func() bool {
		t.Helper()
		d, err := Read(ctx, s, func(tx *Tx) (bool, error) { return tx.Durable(), nil })
		must(t, err)
		return d
	}
	if !durable() {
		t.Fatal("a freshly opened store is not durable")
	}
	must(t, s.Update(ctx, func(tx *Tx) error {
		if tx.Durable() {
			t.Error("Durable in a write transaction")
		}
		return tx.PutLease(Lease{MAC: "02:00:00:00:00:01", IP: "10.0.0.1"})
	}))
	if !durable() {
		t.Error("not durable after Update returned")
	}
	// A commit that is visible but whose Update has not returned: what a
	// reader sees between bbolt's meta page write and its fsync. Made
	// here by committing around the Store's wrappers.
	must(t, s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bLeases).Put([]byte("x"), []byte("{}")) }))
	if durable() {
		t.Error("Durable reports a commit whose Update has not returned")
	}
	must(t, s.Batch(ctx, func(tx *Tx) error { return tx.PutLease(Lease{MAC: "02:00:00:00:00:02", IP: "10.0.0.2"}) }))
	if !durable() {
		t.Error("not durable after Batch returned")
	}
	// Reopened: all on disk.
	must(t, s.Close())
	s2, err := Open(path, Options{NoSync: true})
	must(t, err)
	defer func() { _ = s2.Close() }() // test cleanup
	d, err := Read(ctx, s2, func(tx *Tx) (bool, error) { return tx.Durable(), nil })
	must(t, err)
	if !d {
		t.Error("not durable after reopening")
	}
}

func TestHardwareByMACRaw(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	want := hw("a", "AA:BB:CC:00:00:01", "10.0.0.1/24")
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.CreateHardware(want) }))
	want.Interfaces[0].MAC = "aa:bb:cc:00:00:01" // stored normalized
	for _, mac := range []string{"aa:bb:cc:00:00:01", "AA:BB:CC:00:00:01", "aa-bb-cc-00-00-01"} {
		raw, err := Read(ctx, s, func(tx *Tx) ([]byte, error) {
			raw, err := tx.HardwareByMACRaw(mac)
			return append([]byte(nil), raw...), err
		})
		must(t, err)
		got, err := DecodeHardware(raw)
		must(t, err)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: hardware (-want +got):\n%s", mac, diff)
		}
	}
	for _, mac := range []string{"aa:bb:cc:00:00:02", "nope", "AA:BB:CC:00:00:0G"} {
		err := s.View(ctx, func(tx *Tx) error { _, err := tx.HardwareByMACRaw(mac); return err })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", mac, err)
		}
	}
	if _, err := DecodeHardware([]byte("{")); err == nil {
		t.Error("DecodeHardware of garbage: no error")
	}
}

func TestIsNormalMAC(t *testing.T) {
	for mac, want := range map[string]bool{
		"aa:bb:cc:00:00:01":  true,
		"AA:bb:cc:00:00:01":  false,
		"aa-bb-cc-00-00-01":  false,
		"aa:bb:cc:00:00:0g":  false,
		"aa:bb:cc:00:00:01:": false,
		"aa:bb:cc:00:00":     false,
		"":                   false,
	} {
		if got := isNormalMAC(mac); got != want {
			t.Errorf("isNormalMAC(%q) = %v, want %v", mac, got, want)
		}
		if want {
			if n, err := NormalizeMAC(mac); err != nil || n != mac {
				t.Errorf("NormalizeMAC(%q) = %q, %v: isNormalMAC disagrees", mac, n, err)
			}
		}
	}
}

func TestLeaseRaw(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	want := Lease{MAC: "aa:bb:cc:00:00:01", IP: "10.0.0.1", HardwareID: "a", Hostname: "a", Expires: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.PutLease(want) }))
	for _, mac := range []string{"aa:bb:cc:00:00:01", "AA-BB-CC-00-00-01"} {
		raw, err := Read(ctx, s, func(tx *Tx) ([]byte, error) {
			raw, err := tx.LeaseRaw(mac)
			return append([]byte(nil), raw...), err
		})
		must(t, err)
		got, err := DecodeLease(raw)
		must(t, err)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: lease (-want +got):\n%s", mac, diff)
		}
	}
	for _, mac := range []string{"aa:bb:cc:00:00:02", "nope"} {
		err := s.View(ctx, func(tx *Tx) error { _, err := tx.LeaseRaw(mac); return err })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", mac, err)
		}
	}
	if _, err := DecodeLease([]byte("[")); err == nil {
		t.Error("DecodeLease of garbage: no error")
	}
}
