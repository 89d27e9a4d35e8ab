package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OpenReport says what Open checked and how long it took.
type OpenReport struct {
	// PageCheck is the time of bbolt's consistency check (every page
	// reachable once, freelist sane).
	PageCheck time.Duration
	// Decode is the time spent decoding every record; Records counts them.
	Decode  time.Duration
	Records int
	// Sealed is how many secret fields Open sealed because the store was
	// written without a secrets key and is now opened with one.
	Sealed int
}

// checkPages runs bbolt's consistency check. A corrupt page can make
// bbolt panic rather than report; the panic becomes an error too.
func checkPages(db *bolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			if len(errs) < 10 {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %w", ErrCorrupt, errors.Join(errs...))
		}
		return nil
	})
}

// decodeAll decodes every record of every record bucket, opening sealed
// fields, so that one that does not decode is reported now, with its
// bucket and key, rather than by whoever reads it first.
func (s *Store) decodeAll() (int, error) {
	n := 0
	err := s.View(context.Background(), func(t *Tx) error {
		each := func(bucket []byte, decode func(k, v []byte) error) error {
			return t.tx.Bucket(bucket).ForEach(func(k, v []byte) error {
				n++
				if err := decode(k, v); err != nil {
					return fmt.Errorf("%w: record %q of bucket %s: %w", ErrCorrupt, k, bucket, err)
				}
				return nil
			})
		}
		plain := func(v any) func(k, raw []byte) error {
			return func(_, raw []byte) error { return json.Unmarshal(raw, v) }
		}
		checks := []struct {
			bucket []byte
			decode func(k, v []byte) error
		}{
			{bHardware, func(k, raw []byte) error {
				var h Hardware
				if err := json.Unmarshal(raw, &h); err != nil {
					return err
				}
				return s.openHardware(&h)
			}},
			{bMachines, func(k, raw []byte) error {
				var m Machine
				if err := json.Unmarshal(raw, &m); err != nil {
					return err
				}
				return s.openMachine(&m)
			}},
			{bTemplates, plain(&Template{})},
			{bWorkflows, plain(&Workflow{})},
			{bLeases, plain(&Lease{})},
			{bEvents, plain(&Event{})},
		}
		for _, c := range checks {
			if err := each(c.bucket, c.decode); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}
