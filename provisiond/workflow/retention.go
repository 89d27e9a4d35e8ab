package workflow

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// RetentionOptions tune the retention service. Zero values take the
// defaults in brackets.
type RetentionOptions struct {
	// MaxAge is how long a workflow is kept after it ended, with its
	// events; events of no workflow are kept as long. Required (> 0).
	MaxAge time.Duration
	// Interval is the time between passes [1h, or MaxAge/4 when shorter].
	Interval time.Duration
	// Batch bounds the keys one transaction deletes [store.DefaultPruneBatch].
	Batch int
	// Now is the clock [time.Now].
	Now func() time.Time
}

// Retention deletes workflows that ended more than MaxAge ago, and their
// events, by store.Prune: never a machine's current workflow, never one
// that is still running. Create it with NewRetention, run it with Serve.
type Retention struct {
	st      *store.Store
	log     *slog.Logger
	opts    RetentionOptions
	deleted *prometheus.CounterVec
}

// NewRetention returns the retention service. It does no I/O.
func NewRetention(st *store.Store, log *slog.Logger, reg prometheus.Registerer, opts RetentionOptions) *Retention {
	if opts.Interval <= 0 {
		opts.Interval = min(time.Hour, max(opts.MaxAge/4, time.Second))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Retention{
		st: st, log: log.With("component", "retention"), opts: opts,
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "retention", Name: "deleted_total",
			Help: "Records deleted by retention, by kind (workflow, event).",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(r.deleted)
	}
	return r
}

// Serve runs a pass now and then every Interval until ctx ends. A failed
// pass is logged and retried at the next interval: old records cost disk,
// not correctness.
func (r *Retention) Serve(ctx context.Context) error {
	if r.opts.MaxAge <= 0 {
		return fmt.Errorf("retention: max age %s: want > 0 (0 turns retention off: do not run it)", r.opts.MaxAge)
	}
	r.log.InfoContext(ctx, "retention started", "max_age", r.opts.MaxAge.String(), "interval", r.opts.Interval.String())
	tick := time.NewTicker(r.opts.Interval)
	defer tick.Stop()
	for {
		if _, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "retention pass failed; next one in an interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Prune runs one pass: it deletes what ended more than MaxAge ago.
func (r *Retention) Prune(ctx context.Context) (store.Pruned, error) {
	start := time.Now()
	cutoff := r.opts.Now().UTC().Add(-r.opts.MaxAge)
	p, err := r.st.Prune(ctx, cutoff, r.opts.Batch)
	r.deleted.WithLabelValues("workflow").Add(float64(p.Workflows))
	r.deleted.WithLabelValues("event").Add(float64(p.Events))
	if err != nil {
		return p, fmt.Errorf("retention: prune before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	if p.Workflows > 0 || p.Events > 0 {
		r.log.InfoContext(ctx, "retention pass", "workflows", p.Workflows, "events", p.Events,
			"before", cutoff.Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond).String())
	}
	return p, nil
}
