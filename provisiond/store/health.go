package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Health of the store's writes. A disk that is full, read-only or failing
// makes commits fail while reads still work; /healthz must say so, and
// the log must say it once, not once per DHCP packet.
const (
	// healthWindow: after a failed write Health fails for this long, even
	// if a small write succeeds meanwhile (a full disk can take a write
	// that fits a free page and refuse the next one that needs more).
	healthWindow = time.Minute
	// probeEvery: Health writes a probe record at most this often, and
	// not at all while real writes succeed.
	probeEvery = 10 * time.Second
	// logEvery: at most one log line per this period about failed writes;
	// it counts the ones it did not log.
	logEvery = time.Minute
)

var probeKey = []byte("health_probe")

type health struct {
	mu        sync.Mutex
	lastErr   error
	lastErrAt time.Time
	lastOKAt  time.Time
	unlogged  int // failed writes since the last log line
	loggedAt  time.Time
	failing   bool // the last write failed
	probeAt   time.Time
	probeErr  error
}

// storageFailed records a write (or a read) that failed for the storage's
// sake, not because its function returned an error.
func (s *Store) storageFailed(err error) {
	h := &s.health
	now := s.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr, h.lastErrAt, h.failing = err, now, true
	h.unlogged++
	if h.loggedAt.IsZero() || now.Sub(h.loggedAt) >= logEvery {
		s.log.Error("store write failed; /healthz reports it", "path", s.path, "err", err, "failed_writes", h.unlogged)
		h.unlogged, h.loggedAt = 0, now
	}
}

// storageOK records a committed write.
func (s *Store) storageOK() {
	h := &s.health
	now := s.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastOKAt = now
	if h.failing {
		h.failing = false
		s.log.Info("store writes succeed again", "path", s.path, "failed_writes_not_logged", h.unlogged)
		h.unlogged = 0
	}
}

// Health returns nil if the store takes writes: no write failed in the
// last minute, and a write succeeded in the last ten seconds or a probe
// write does now. It writes at most one probe per ten seconds, so it is
// cheap enough for a load balancer's health check; it blocks on that
// write (one fsync) when it makes one.
func (s *Store) Health(ctx context.Context) error {
	h := &s.health
	now := s.now()
	h.mu.Lock()
	if h.lastErr != nil && now.Sub(h.lastErrAt) < healthWindow {
		err := fmt.Errorf("store %s: a write failed %s ago: %w", s.path, now.Sub(h.lastErrAt).Round(time.Second), h.lastErr)
		h.mu.Unlock()
		return err
	}
	if now.Sub(h.lastOKAt) < probeEvery {
		h.mu.Unlock()
		return nil
	}
	if now.Sub(h.probeAt) < probeEvery {
		err := h.probeErr
		h.mu.Unlock()
		return err
	}
	h.probeAt = now
	h.mu.Unlock()

	err := s.Update(ctx, func(tx *Tx) error {
		return tx.tx.Bucket(bMeta).Put(probeKey, []byte(now.UTC().Format(time.RFC3339Nano)))
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		err = fmt.Errorf("store %s: probe write: %w", s.path, err)
	}
	h.mu.Lock()
	h.probeErr = err
	h.mu.Unlock()
	return err
}
