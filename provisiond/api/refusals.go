package api

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusal log limits: per reason, the first refusalBurst refusals of each
// refusalInterval are logged one by one; the rest are counted and logged
// as one summary line when the interval ends.
const (
	refusalBurst    = 5
	refusalInterval = 10 * time.Second
)

// Refusals logs refused calls without letting a flood of them flood the
// log: every refusal counts in provisiond_refused_calls_total{service,
// reason}, but per reason only the first few of each interval are logged,
// and the others are summed up in one line ("N more refused agent calls
// in the last 10s") when the interval ends. A client looping on a junk
// token thus costs a counter increment per call and a handful of lines
// per interval. It is safe for concurrent use.
//
// Reasons become a metric label: pass a fixed word ("invalid_token"),
// never anything the caller sent; details go in the attributes.
type Refusals struct {
	log      *slog.Logger
	what     string // "agent" in "refused agent call"
	counter  *prometheus.CounterVec
	service  string
	burst    int
	interval time.Duration

	mu      sync.Mutex
	windows map[string]*refusalWindow // reason → current interval
}

type refusalWindow struct {
	start      time.Time
	logged     int
	suppressed int
	timer      *time.Timer // set while a summary is due
}

// NewRefusals returns the refusal logger of service ("agent" or "admin").
// Its counter is registered with reg (nil: not registered); several
// services may share one reg.
func NewRefusals(log *slog.Logger, reg prometheus.Registerer, service string) *Refusals {
	return newRefusals(log, reg, service, refusalBurst, refusalInterval)
}

func newRefusals(log *slog.Logger, reg prometheus.Registerer, service string, burst int, interval time.Duration) *Refusals {
	return &Refusals{
		log: log, what: service, counter: refusedCounter(reg), service: service,
		burst: burst, interval: interval, windows: map[string]*refusalWindow{},
	}
}

// refusedCounter returns the registry's provisiond_refused_calls_total,
// registering it on first use.
func refusedCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "provisiond_refused_calls_total",
		Help: "gRPC calls refused for want of a valid credential, by service (agent, admin) and reason.",
	}, []string{"service", "reason"})
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if prev, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return prev
			}
		}
		// A clash with a foreign collector of that name is a wiring bug;
		// counting into an unregistered vector keeps the service up.
		return c
	}
	return c
}

// Refuse counts one refused call and logs it unless this reason has
// already been logged refusalBurst times in the current interval. attrs
// are slog key-value pairs (method, peer, why); never a token.
func (r *Refusals) Refuse(ctx context.Context, reason string, attrs ...any) {
	r.counter.WithLabelValues(r.service, reason).Inc()
	now := time.Now()
	r.mu.Lock()
	w := r.windows[reason]
	if w == nil || now.Sub(w.start) >= r.interval {
		if w != nil && w.suppressed > 0 {
			// The timer has not fired yet; say it now, in order.
			w.timer.Stop()
			r.summary(reason, w)
		}
		w = &refusalWindow{start: now}
		r.windows[reason] = w
	}
	if w.logged < r.burst {
		w.logged++
		r.mu.Unlock()
		r.log.WarnContext(ctx, "refused "+r.what+" call", append([]any{"reason", reason}, attrs...)...)
		return
	}
	w.suppressed++
	if w.timer == nil {
		w.timer = time.AfterFunc(r.interval-now.Sub(w.start), func() { r.flush(reason, w) })
	}
	r.mu.Unlock()
}

// flush logs the summary of window w when its interval ends.
func (r *Refusals) flush(reason string, w *refusalWindow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.suppressed > 0 {
		r.summary(reason, w)
	}
	if r.windows[reason] == w {
		// Quiet since: the next refusal starts a fresh window.
		delete(r.windows, reason)
	}
}

// summary logs and clears w's suppressed count; r.mu is held.
func (r *Refusals) summary(reason string, w *refusalWindow) {
	r.log.Warn(fmt.Sprintf("%d more refused %s calls in the last %s (%s)", w.suppressed, r.what, r.interval, reason),
		"reason", reason, "suppressed", w.suppressed)
	w.suppressed = 0
}
