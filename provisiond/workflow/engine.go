// Package workflow is provisiond's workflow engine: it turns a machine into
// a provision workflow (or a deprovision one), drives the server through
// its BMC (PXE boot, power reset, boot from disk), hands the agent its
// actions one by one and records every step.
//
// All state lives in the store. Every transition is written, with its
// event, in one transaction before the engine acts on it, and
// Workflow.Step records how far the engine's own side got, so a restarted
// engine resumes each workflow where it was. Agent calls (NextAction,
// ReportAction, Heartbeat, AppendLog) are transactions of their own,
// authenticated by the per-workflow agent token; a driver goroutine per
// active workflow does the BMC work and enforces the boot, action,
// heartbeat and global timeouts.
//
// State machine: pending → booting → running → succeeded | failed |
// timed_out | cancelled. A deprovision with wipe "none" skips the boot
// (pending → running → succeeded).
package workflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/internal/template"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Power drives BMCs; the bmc package implements it. Calls block until the
// BMC answers or their own timeout ends. SetPower "on" and "off" are
// idempotent; "cycle" is not.
type Power interface {
	PowerState(ctx context.Context, hw store.Hardware) (string, error)
	SetPower(ctx context.Context, hw store.Hardware, action string) error
	SetBootDevice(ctx context.Context, hw store.Hardware, device string, persistent, efi bool) error
}

// Errors of the engine; adapters map them with errors.Is.
var (
	// ErrInvalid: the request is wrong in itself (bad wipe mode, a
	// template that does not render for this hardware).
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated: missing or wrong agent token.
	ErrUnauthenticated = errors.New("invalid agent token")
	// ErrPermission: the token is valid but not for this hardware or workflow.
	ErrPermission = errors.New("agent token is not valid for this request")
	// ErrNotReady: no workflow is waiting for an agent, or it is not
	// running (yet or any more).
	ErrNotReady = errors.New("workflow is not running")
	// ErrAgentLive: a live agent holds the workflow's token; no second
	// token is issued while it lives.
	ErrAgentLive = errors.New("the agent of this workflow is alive")
)

// Options tune the engine. Zero values take the defaults in brackets.
type Options struct {
	// PublicURL, ImagesURL and MetadataURL are provisiond's facts that
	// templates see as {{ .PublicURL }} and so on.
	PublicURL, ImagesURL, MetadataURL string
	// BootTimeout bounds the wait for the agent after the power-on or reset [15m].
	BootTimeout time.Duration
	// HeartbeatTimeout fails a running workflow whose agent went silent [5m].
	HeartbeatTimeout time.Duration
	// ActionGrace is how long past an action's own timeout the engine
	// waits for the agent's report before it times the action out [1m].
	ActionGrace time.Duration
	// PowerAttempts and PowerRetryDelay bound BMC retries per step [5, 5s].
	PowerAttempts   int
	PowerRetryDelay time.Duration
	// PowerStepTimeout bounds one BMC step, its retries included, from its
	// first attempt [1m]: a BMC that does not answer fails the workflow
	// within it, with what the BMC said. A refusal of the credentials, or
	// a request the BMC cannot take, fails it at once.
	PowerStepTimeout time.Duration
	// AgentSilence is how long an agent that used its token must have been
	// silent before a new token replaces it [30s; agents beat every 5s].
	AgentSilence time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.BootTimeout <= 0 {
		o.BootTimeout = 15 * time.Minute
	}
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = 5 * time.Minute
	}
	if o.ActionGrace <= 0 {
		o.ActionGrace = time.Minute
	}
	if o.PowerAttempts <= 0 {
		o.PowerAttempts = 5
	}
	if o.PowerStepTimeout <= 0 {
		o.PowerStepTimeout = time.Minute
	}
	if o.PowerRetryDelay <= 0 {
		o.PowerRetryDelay = 5 * time.Second
	}
	if o.AgentSilence <= 0 {
		o.AgentSilence = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Engine runs workflows. Create it with New, run it with Serve.
type Engine struct {
	st    *store.Store
	log   *slog.Logger
	power Power
	opts  Options
	m     metrics
	// render renders a template (template.RenderContext; tests slow it).
	render func(ctx context.Context, content string, data template.Data) (*template.Template, error)

	mu      sync.Mutex
	runCtx  context.Context // set while Serve runs
	wg      sync.WaitGroup
	drivers map[string]chan struct{} // workflow id → poke channel
	seen    map[string]time.Time     // workflow id → last agent contact (memory)
}

// New returns an engine over st. It does no I/O.
func New(st *store.Store, log *slog.Logger, reg prometheus.Registerer, power Power, opts Options) *Engine {
	opts.defaults()
	e := &Engine{
		st: st, log: log.With("component", "workflow"), power: power, opts: opts,
		m:       newMetrics(reg),
		render:  template.RenderContext,
		drivers: map[string]chan struct{}{},
		seen:    map[string]time.Time{},
	}
	if reg != nil {
		reg.MustRegister(newStateCollector(e))
	}
	return e
}

func (e *Engine) now() time.Time { return e.opts.Now().UTC() }

// Serve resumes every workflow that has not ended, drives new ones as they
// come, and blocks until ctx ends; then it waits for its drivers to stop.
func (e *Engine) Serve(ctx context.Context) error {
	e.mu.Lock()
	if e.runCtx != nil {
		e.mu.Unlock()
		return errors.New("workflow engine: Serve called twice")
	}
	e.runCtx = ctx
	e.mu.Unlock()

	all, err := store.Read(ctx, e.st, func(tx *store.Tx) ([]store.Workflow, error) { return tx.ListWorkflows() })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("workflow engine: list workflows to resume: %w", err)
	}
	resumed := 0
	for _, w := range all {
		if !store.Terminal(w.State) {
			e.start(w.ID)
			resumed++
		}
	}
	e.log.InfoContext(ctx, "workflow engine started", "resumed", resumed)
	<-ctx.Done()
	e.wg.Wait()
	e.mu.Lock()
	e.runCtx = nil
	e.mu.Unlock()
	return nil
}

// start runs a driver for workflow id unless one runs or Serve does not.
func (e *Engine) start(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.runCtx == nil || e.runCtx.Err() != nil {
		return // Serve resumes it
	}
	if _, ok := e.drivers[id]; ok {
		return
	}
	poke := make(chan struct{}, 1)
	e.drivers[id] = poke
	if _, ok := e.seen[id]; !ok {
		e.seen[id] = e.now() // an agent gets a full heartbeat period after a restart
	}
	e.wg.Add(1)
	e.m.active.Inc()
	ctx := e.runCtx
	go func() {
		defer e.wg.Done()
		defer e.m.active.Dec()
		defer func() {
			e.mu.Lock()
			delete(e.drivers, id)
			delete(e.seen, id)
			e.mu.Unlock()
		}()
		e.drive(ctx, id, poke)
	}()
}

// poke wakes the driver of workflow id.
func (e *Engine) poke(id string) {
	e.mu.Lock()
	ch, ok := e.drivers[id]
	e.mu.Unlock()
	if ok {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (e *Engine) touch(id string) {
	e.mu.Lock()
	if _, ok := e.drivers[id]; ok || e.runCtx != nil {
		e.seen[id] = e.now()
	}
	e.mu.Unlock()
}

// lastContact is when w's agent last called in: the later of the
// in-memory record and the stored heartbeat (which survives a restart).
func (e *Engine) lastContact(w store.Workflow) time.Time {
	last := w.LastHeartbeat
	if seen := e.lastSeen(w.ID); seen.After(last) {
		last = seen
	}
	return last
}

func (e *Engine) lastSeen(id string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id]
}

// putWithEvents stores w and appends events stamped with its ids.
func putWithEvents(tx *store.Tx, w store.Workflow, events ...store.Event) error {
	if err := tx.PutWorkflow(w); err != nil {
		return err
	}
	for _, ev := range events {
		ev.WorkflowID, ev.HardwareID = w.ID, w.HardwareID
		if _, err := tx.AppendEvent(ev); err != nil {
			return err
		}
	}
	return nil
}

func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[len(s)-n:], "")
}

func (e *Engine) finished(kind store.Kind, state store.State, created time.Time) {
	e.m.finished.WithLabelValues(string(kind), string(state)).Inc()
	if !created.IsZero() {
		e.m.duration.WithLabelValues(string(kind), string(state)).Observe(e.now().Sub(created).Seconds())
	}
}
