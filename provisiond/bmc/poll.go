package bmc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Serve polls the power state of every server with a BMC (driver ipmi or
// redfish) every Options.PollInterval, writes it to the hardware record
// (Power and PowerSeenAt only) and exports it as the
// provisiond_bmc_power_state gauge. A round ends before the next one
// starts. A BMC whose credentials were refused is left alone for
// Options.AuthBackoff unless its credentials change. Serve blocks until ctx
// ends and then returns nil.
func (m *Manager) Serve(ctx context.Context) error {
	if m.opts.PollInterval < 0 {
		m.log.Info("power poll off")
		<-ctx.Done()
		return nil
	}
	m.log.Info("power poll on", "interval", m.opts.PollInterval, "workers", m.opts.Workers, "timeout", m.opts.Timeout)
	t := time.NewTicker(m.opts.PollInterval)
	defer t.Stop()
	for {
		if err := m.pollOnce(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("power poll", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// pollOnce runs one poll round.
func (m *Manager) pollOnce(ctx context.Context) error {
	start := time.Now()
	hws, err := store.Read(ctx, m.st, func(tx *store.Tx) ([]store.Hardware, error) { return tx.ListHardware() })
	if err != nil {
		return fmt.Errorf("list hardware: %w", err)
	}
	seen := make(map[string]bool, len(hws))
	var g errgroup.Group
	g.SetLimit(m.opts.Workers)
	var polled, skipped int
	for _, hw := range hws {
		if d := driverOf(hw); d != DriverIPMI && d != DriverRedfish {
			continue
		}
		seen[hw.ID] = true
		if at, blocked := m.authBlocked(hw.BMC); blocked {
			skipped++
			m.log.Debug("power poll skips BMC that refused these credentials", "hardware_id", hw.ID, "bmc", bmcKey(hw.BMC), "refused_at", at, "retry_after", at.Add(m.opts.AuthBackoff))
			continue
		}
		polled++
		g.Go(func() error {
			// No retries: the next round is the retry.
			st, err := m.powerState(ctx, hw, 0, slog.LevelDebug)
			if err != nil && ctx.Err() != nil {
				return nil
			}
			m.record(ctx, hw.ID, st)
			return nil
		})
	}
	_ = g.Wait()

	m.mu.Lock()
	for id := range m.polled {
		if !seen[id] {
			m.metrics.power.DeletePartialMatch(map[string]string{"hardware_id": id})
			delete(m.polled, id)
		}
	}
	m.mu.Unlock()
	took := time.Since(start)
	m.metrics.pollDuration.Set(took.Seconds())
	m.log.Debug("power poll done", "polled", polled, "skipped", skipped, "duration", took.Round(time.Millisecond))
	return nil
}

// record writes the state to the hardware record, touching only Power and
// PowerSeenAt (the record is re-read inside the transaction, so concurrent
// edits are kept), and sets the gauge. Hardware deleted meanwhile is
// skipped.
func (m *Manager) record(ctx context.Context, id string, st PowerState) {
	m.mu.Lock()
	m.polled[id] = true
	m.mu.Unlock()
	for _, s := range []PowerState{PowerOn, PowerOff, PowerUnknown} {
		v := 0.0
		if s == st {
			v = 1
		}
		m.metrics.power.WithLabelValues(id, string(s)).Set(v)
	}
	if m.st == nil {
		return
	}
	now := time.Now().UTC()
	// Batch: a poll round writes one record per server; group commit
	// shares the fsyncs. The function is idempotent as Batch requires.
	err := m.st.Batch(ctx, func(tx *store.Tx) error {
		hw, err := tx.Hardware(id)
		if err != nil {
			return err
		}
		hw.Power, hw.PowerSeenAt = string(st), now
		return tx.UpdateHardware(hw)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
		m.log.Warn("record power state", "hardware_id", id, "err", err)
	}
}
