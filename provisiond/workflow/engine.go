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
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/examples/templates"
	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
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
	return &Engine{
		st: st, log: log.With("component", "workflow"), power: power, opts: opts,
		m:       newMetrics(reg),
		render:  template.RenderContext,
		drivers: map[string]chan struct{}{},
		seen:    map[string]time.Time{},
	}
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

func (e *Engine) lastSeen(id string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id]
}

// ---------------------------------------------------------------- machines

// Provision stores a machine with its provision workflow, rendered from
// its template for its hardware, and starts it. ErrConflict if the
// hardware already holds a machine.
//
// The template renders between a read and the write transaction, never
// inside it: a render may take up to template.RenderTimeout, and bbolt
// has one writer, so rendering inside the write held up every other write
// (DHCP acks, agent reports, API calls) for as long. The write checks
// that what the render read is unchanged and renders again if not.
func (e *Engine) Provision(ctx context.Context, m store.Machine) (store.Machine, error) {
	for attempt := 1; ; attempt++ {
		w, tplName, err := e.provisionOnce(ctx, &m)
		if errors.Is(err, errInputsChanged) && attempt < renderAttempts {
			continue
		}
		if errors.Is(err, errInputsChanged) {
			err = fmt.Errorf("hardware %q or template %q changed %d times while the template rendered: %w", m.HardwareID, m.TemplateID, attempt, store.ErrConflict)
		}
		if err != nil {
			return store.Machine{}, fmt.Errorf("provision %s: %w", m.HardwareID, err)
		}
		e.m.started.WithLabelValues(string(store.KindProvision)).Inc()
		e.log.InfoContext(ctx, "provision started", "hardware", m.HardwareID, "workflow", w.ID, "template", tplName, "actions", len(w.Actions))
		e.start(w.ID)
		return m, nil
	}
}

// renderAttempts bounds how often Provision and Deprovision render again
// because their inputs changed during a render.
const renderAttempts = 3

// errInputsChanged: what a render read changed before its result was written.
var errInputsChanged = errors.New("render inputs changed")

// provisionInputs reads what a provision renders from, refusing hardware
// that holds a machine already.
func provisionInputs(tx *store.Tx, m store.Machine) (store.Hardware, store.Template, error) {
	hw, err := tx.Hardware(m.HardwareID)
	if err != nil {
		return store.Hardware{}, store.Template{}, err
	}
	tpl, err := tx.Template(m.TemplateID)
	if err != nil {
		return store.Hardware{}, store.Template{}, err
	}
	if old, err := tx.Machine(m.HardwareID); err == nil {
		return store.Hardware{}, store.Template{}, fmt.Errorf("hardware %q is already held by a machine (template %q): %w", hw.ID, old.TemplateID, store.ErrConflict)
	}
	return hw, tpl, nil
}

// provisionOnce is one read, render, write of Provision; m gets its
// workflow id and times.
func (e *Engine) provisionOnce(ctx context.Context, m *store.Machine) (store.Workflow, string, error) {
	var hw store.Hardware
	var tpl store.Template
	err := e.st.View(ctx, func(tx *store.Tx) error {
		var err error
		hw, tpl, err = provisionInputs(tx, *m)
		return err
	})
	if err != nil {
		return store.Workflow{}, "", err
	}
	if m.Wipe == "" {
		m.Wipe = template.WipeQuick
	}
	if err := checkWipe(m.Wipe); err != nil {
		return store.Workflow{}, "", err
	}
	data := e.data(hw, *m)
	rendered, err := e.render(ctx, tpl.Content, data)
	if err != nil {
		return store.Workflow{}, "", fmt.Errorf("render template %q for hardware %q: %w: %w", tpl.Name, hw.ID, ErrInvalid, err)
	}
	now := e.now()
	var w store.Workflow
	err = e.st.Batch(ctx, func(tx *store.Tx) error {
		hw2, tpl2, err := provisionInputs(tx, *m)
		if err != nil {
			return err
		}
		if tpl2.Content != tpl.Content || !reflect.DeepEqual(e.data(hw2, *m), data) {
			return errInputsChanged
		}
		w = store.Workflow{
			ID: store.NewID(), HardwareID: hw.ID, TemplateID: tpl.ID, Kind: store.KindProvision,
			State: store.StatePending, Parameters: m.Parameters, SensitiveKeys: m.SensitiveKeys, GlobalTimeout: rendered.GlobalTimeout,
			Actions: actionsOf(rendered), CreatedAt: now,
		}
		m.WorkflowID, m.CreatedAt, m.ProvisionedAt, m.OSReadyAt = w.ID, now, time.Time{}, time.Time{}
		if err := tx.PutWorkflow(w); err != nil {
			return err
		}
		if err := tx.PutMachine(*m); err != nil {
			return err
		}
		_, err = tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: hw.ID, Type: store.EventState, State: string(w.State),
			Message: fmt.Sprintf("provision workflow created from template %q: %d action(s)", tpl2.Name, len(w.Actions))})
		return err
	})
	return w, tpl.Name, err
}

// Deprovision cancels the machine's running workflow, if any, and starts a
// deprovision: boot the agent, wipe the disks (wipe overrides the
// machine's setting; "none" skips the boot), power off, delete the
// machine. A deprovision already under way is returned as is. Like
// Provision, it renders the wipe workflow outside the write transaction.
func (e *Engine) Deprovision(ctx context.Context, hardwareID, wipe string) (store.Machine, error) {
	for attempt := 1; ; attempt++ {
		m, w, cancelled, mode, err := e.deprovisionOnce(ctx, hardwareID, wipe)
		if errors.Is(err, errInputsChanged) && attempt < renderAttempts {
			continue
		}
		if errors.Is(err, errInputsChanged) {
			err = fmt.Errorf("hardware %q changed %d times while the wipe workflow rendered: %w", hardwareID, attempt, store.ErrConflict)
		}
		if err != nil {
			return store.Machine{}, fmt.Errorf("deprovision %s: %w", hardwareID, err)
		}
		if cancelled != "" {
			e.finished(store.KindProvision, store.StateCancelled, time.Time{})
			e.poke(cancelled)
		}
		if w.ID != "" {
			e.m.started.WithLabelValues(string(store.KindDeprovision)).Inc()
			e.log.InfoContext(ctx, "deprovision started", "hardware", hardwareID, "workflow", w.ID, "wipe", mode, "cancelled", cancelled)
			e.start(w.ID)
		}
		return m, nil
	}
}

// wipeMode is the wipe a deprovision does: the request's, else the
// machine's, else quick.
func wipeMode(requested string, m store.Machine) string {
	switch {
	case requested != "":
		return requested
	case m.Wipe != "":
		return m.Wipe
	}
	return template.WipeQuick
}

// deprovisionOnce is one read, render, write of Deprovision.
func (e *Engine) deprovisionOnce(ctx context.Context, hardwareID, requested string) (m store.Machine, w store.Workflow, cancelled, wipe string, err error) {
	var hw store.Hardware
	err = e.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if m, err = tx.Machine(hardwareID); err != nil {
			return err
		}
		hw, err = tx.Hardware(hardwareID)
		return err
	})
	if err != nil {
		return m, w, "", "", err
	}
	// Render now; whether the result (or its error) is needed is decided
	// in the write, where it was decided before rendering moved out.
	wipe = wipeMode(requested, m)
	data := template.Data{Hardware: templateHardware(hw), Params: map[string]string{"wipe_mode": wipe}}
	var rendered *template.Template
	var renderErr error
	if checkWipe(wipe) == nil && wipe != template.WipeNone && len(hw.Disks) > 0 {
		rendered, renderErr = e.render(ctx, WipeTemplate, data)
	}
	now := e.now()
	err = e.st.Batch(ctx, func(tx *store.Tx) error {
		cancelled, w = "", store.Workflow{}
		var err error
		if m, err = tx.Machine(hardwareID); err != nil {
			return err
		}
		hw, err := tx.Hardware(hardwareID)
		if err != nil {
			return err
		}
		if wipeMode(requested, m) != wipe || !reflect.DeepEqual(templateHardware(hw), data.Hardware) {
			return errInputsChanged
		}
		if err := checkWipe(wipe); err != nil {
			return err
		}
		if cur, err := tx.Workflow(m.WorkflowID); err == nil && !store.Terminal(cur.State) {
			if cur.Kind == store.KindDeprovision {
				return nil // already under way
			}
			cur.State, cur.FinishedAt, cur.Error = store.StateCancelled, now, "cancelled by deprovision"
			if err := tx.PutWorkflow(cur); err != nil {
				return err
			}
			if _, err := tx.AppendEvent(store.Event{WorkflowID: cur.ID, HardwareID: hardwareID, Type: store.EventState, State: string(cur.State), Message: cur.Error}); err != nil {
				return err
			}
			cancelled = cur.ID
		}
		w = store.Workflow{ID: store.NewID(), HardwareID: hardwareID, Kind: store.KindDeprovision, State: store.StatePending, Wipe: wipe, CreatedAt: now}
		if wipe != template.WipeNone {
			if len(hw.Disks) == 0 {
				return fmt.Errorf("%w: hardware %q lists no disks to wipe: add its disks, or deprovision with wipe \"none\"", ErrInvalid, hardwareID)
			}
			if renderErr != nil {
				return fmt.Errorf("render wipe workflow: %w", renderErr)
			}
			w.GlobalTimeout, w.Actions = rendered.GlobalTimeout, actionsOf(rendered)
		}
		m.WorkflowID = w.ID
		if err := tx.PutWorkflow(w); err != nil {
			return err
		}
		if err := tx.PutMachine(m); err != nil {
			return err
		}
		_, err = tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: hardwareID, Type: store.EventState, State: string(w.State),
			Message: fmt.Sprintf("deprovision workflow created: wipe %s", wipe)})
		return err
	})
	return m, w, cancelled, wipe, err
}

func checkWipe(mode string) error {
	switch mode {
	case template.WipeNone, template.WipeQuick, template.WipeZero, template.WipeDiscard:
		return nil
	}
	return fmt.Errorf("%w: wipe %q: want none, quick, zero or discard", ErrInvalid, mode)
}

// WipeTemplate is the deprovision workflow: examples/templates/wipe.yaml,
// embedded, so the example users read is what provisiond runs.
var WipeTemplate = templates.Wipe

// data is what a machine's template renders against.
func (e *Engine) data(hw store.Hardware, m store.Machine) template.Data {
	return template.Data{
		Hardware: templateHardware(hw), Params: m.Parameters, UserData: m.UserData, SSHKeys: m.SSHKeys,
		PublicURL: e.opts.PublicURL, ImagesURL: e.opts.ImagesURL, MetadataURL: e.opts.MetadataURL,
	}
}

func templateHardware(hw store.Hardware) template.Hardware {
	out := template.Hardware{ID: hw.ID, Hostname: hw.Hostname, Arch: hw.Arch, UEFI: hw.UEFI, DiskPaths: hw.Disks}
	if len(hw.Metadata) > 0 {
		_ = json.Unmarshal(hw.Metadata, &out.Metadata) // stored metadata is a validated object
	}
	for _, n := range hw.Interfaces {
		i := template.Interface{MAC: n.MAC, Gateway: n.Gateway, NameServers: n.NameServers}
		if p, err := netip.ParsePrefix(n.IP); err == nil {
			i.IP, i.Prefix = p.Addr().String(), p.String()
		} else if a, err := netip.ParseAddr(n.IP); err == nil {
			i.IP = a.String()
		}
		out.Interfaces = append(out.Interfaces, i)
	}
	return out
}

func actionsOf(t *template.Template) []store.Action {
	var out []store.Action
	for _, s := range t.Steps() {
		out = append(out, store.Action{
			Task: s.Task, Name: s.Name, Image: s.Builtin, Timeout: s.Timeout, Command: s.Command,
			Environment: s.Environment, Volumes: s.Volumes, PID: s.PID, Retries: s.Retries, State: store.StatePending,
		})
	}
	return out
}

// ---------------------------------------------------------------- agent

// MintAgentToken issues a fresh agent token for the workflow that waits
// for hardwareID's agent (the ipxe package puts it on the kernel command
// line). Only its SHA-256 is stored.
//
// A token is delivered once per boot, as Ironic's agent tokens are: while
// the agent that holds the current token is alive (it called in within
// Options.AgentSilence), MintAgentToken refuses with ErrAgentLive, so
// fetching the boot script again cannot take over or cut off a running
// agent. A token no agent has used yet (the firmware fetched the script
// twice), or whose agent has gone silent (the server rebooted), is
// replaced, with an event that says so; an action the previous agent was
// running is then handed out again.
func (e *Engine) MintAgentToken(ctx context.Context, hardwareID string) (workflowID, token string, err error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", "", fmt.Errorf("mint agent token: %w", err)
	}
	now := e.now()
	err = e.st.Batch(ctx, func(tx *store.Tx) error {
		m, err := tx.Machine(hardwareID)
		if err != nil {
			return err
		}
		w, err := tx.Workflow(m.WorkflowID)
		if err != nil {
			return err
		}
		if w.State != store.StateBooting && w.State != store.StateRunning {
			return fmt.Errorf("workflow %s of hardware %q is %s: %w", w.ID, hardwareID, w.State, ErrNotReady)
		}
		msg := "agent token issued"
		if len(w.TokenHash) > 0 && w.TokenUsed {
			last := w.LastHeartbeat
			if seen := e.lastSeen(w.ID); seen.After(last) {
				last = seen
			}
			if silent := now.Sub(last); silent < e.opts.AgentSilence {
				return fmt.Errorf("%w: workflow %s's agent called in %s ago", ErrAgentLive, w.ID, silent.Round(time.Second))
			}
			msg = fmt.Sprintf("agent token issued again: the previous agent has been silent for %s (the server booted again?) and its token no longer works",
				now.Sub(last).Round(time.Second))
		} else if len(w.TokenHash) > 0 {
			msg = "agent token issued again: no agent used the previous one (the boot script was fetched twice)"
		}
		workflowID = w.ID
		token = w.ID + "." + base64.RawURLEncoding.EncodeToString(secret[:])
		sum := sha256.Sum256([]byte(token))
		w.TokenHash, w.TokenUsed, w.LastHeartbeat = sum[:], false, now
		for i := range w.Actions {
			if a := &w.Actions[i]; a.State == store.StateRunning {
				a.State, a.Message = store.StatePending, "the agent booted again while this action ran; it runs again"
				msg += "; action " + a.Task + "/" + a.Name + " will run again"
			}
		}
		if err := tx.PutWorkflow(w); err != nil {
			return err
		}
		_, err = tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: hardwareID, Type: store.EventState, State: string(w.State), Message: msg})
		return err
	})
	if err != nil {
		return "", "", fmt.Errorf("mint agent token for %s: %w", hardwareID, err)
	}
	e.touch(workflowID)
	e.log.InfoContext(ctx, "agent token issued", "hardware", hardwareID, "workflow", workflowID)
	return workflowID, token, nil
}

// TokenGrace is how long after its workflow ended an agent token still
// answers, and only with the end: GetAction's "done" with what to do
// then (after which the token is gone), Heartbeat's "stop", and refusals
// of reports. After that, or once GetAction said "done", it is invalid.
const TokenGrace = 2 * time.Minute

// authenticate finds the workflow a token belongs to (the token starts
// with the workflow id) and checks the token against its stored hash in
// constant time. The token of an ended workflow is valid only within
// TokenGrace of the end.
func authenticate(tx *store.Tx, token string, now time.Time) (store.Workflow, error) {
	id, _, ok := strings.Cut(token, ".")
	if !ok || id == "" {
		return store.Workflow{}, ErrUnauthenticated
	}
	w, err := tx.Workflow(id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Workflow{}, ErrUnauthenticated
		}
		return store.Workflow{}, err
	}
	sum := sha256.Sum256([]byte(token))
	if len(w.TokenHash) != len(sum) || subtle.ConstantTimeCompare(sum[:], w.TokenHash) != 1 {
		return store.Workflow{}, ErrUnauthenticated
	}
	if store.Terminal(w.State) && now.Sub(w.FinishedAt) > TokenGrace {
		return store.Workflow{}, fmt.Errorf("%w: its workflow ended at %s", ErrUnauthenticated, w.FinishedAt.Format(time.RFC3339))
	}
	return w, nil
}

// CheckAgentToken reports whether token is a live agent token, in a read
// transaction: the gRPC tap refuses a junk token before reading the body.
func (e *Engine) CheckAgentToken(ctx context.Context, token string) error {
	return e.checkToken(ctx, token)
}

// checkToken authenticates token in a read transaction, so a flood of
// junk tokens costs no write batch and delays no valid caller's commit.
// The write transaction that follows authenticates again.
func (e *Engine) checkToken(ctx context.Context, token string) error {
	now := e.now()
	_, err := store.Read(ctx, e.st, func(tx *store.Tx) (store.Workflow, error) { return authenticate(tx, token, now) })
	return err
}

// Assignment is the agent's answer to NextAction.
type Assignment struct {
	WorkflowID string
	// Index is the action's position; Action is nil when there is nothing
	// to do now (the engine is still working, or the workflow is done).
	Index  int
	Action *store.Action
	// Done: the workflow has ended (or all actions succeeded); Then says
	// what the agent does.
	Done bool
	Then Then
}

// Then is what the agent does once a workflow is done. Its string value
// is what the Agent API's deprecated string field carries.
type Then string

// What the agent does when done.
const (
	// ThenNone: nothing; provisiond resets the machine through its BMC.
	ThenNone     Then = "none"
	ThenReboot   Then = "reboot"
	ThenPoweroff Then = "poweroff"
	// ThenKexec: boot the kernel that the kexec action loaded.
	ThenKexec Then = "kexec"
)

// NextAction hands the agent its next action and marks it running. The
// first call moves a booting workflow to running. An action handed out
// before and not reported is handed out again (the agent restarted).
func (e *Engine) NextAction(ctx context.Context, token, hardwareID string) (Assignment, error) {
	now := e.now()
	var out Assignment
	var started bool
	var kind store.Kind
	var created time.Time
	if err := e.checkToken(ctx, token); err != nil {
		return Assignment{}, fmt.Errorf("next action: %w", err)
	}
	err := e.st.Batch(ctx, func(tx *store.Tx) error {
		out, started = Assignment{}, false
		w, err := authenticate(tx, token, now)
		if err != nil {
			return err
		}
		created = w.CreatedAt
		if hardwareID != "" && hardwareID != w.HardwareID {
			return fmt.Errorf("%w: token of hardware %q used for %q", ErrPermission, w.HardwareID, hardwareID)
		}
		kind = w.Kind
		out.WorkflowID = w.ID
		hw, err := tx.Hardware(w.HardwareID)
		if err != nil {
			return err
		}
		if store.Terminal(w.State) {
			out.Done, out.Then = true, e.then(hw, w)
			if w.State != store.StateSucceeded {
				out.Then = ThenNone
			}
			// The agent has its last answer: the token dies now.
			w.TokenHash, w.TokenUsed = nil, false
			return tx.PutWorkflow(w)
		}
		if w.State == store.StatePending {
			return fmt.Errorf("workflow %s: %w (pending)", w.ID, ErrNotReady)
		}
		var events []store.Event
		if w.State == store.StateBooting {
			w.State, w.StartedAt, started = store.StateRunning, now, true
			events = append(events, store.Event{Type: store.EventState, State: string(w.State), Message: "agent called in"})
		}
		w.LastHeartbeat, w.TokenUsed = now, true
		next := -1
		for i, a := range w.Actions {
			if a.State != store.StateSucceeded {
				next = i
				break
			}
		}
		if next < 0 {
			out.Done, out.Then = true, e.then(hw, w)
		} else {
			a := &w.Actions[next]
			msg := "handed to the agent"
			if a.State == store.StateRunning {
				msg = "handed to the agent again: it asked for work while this action ran"
			}
			a.State, a.Attempt, a.StartedAt, a.FinishedAt, a.Message = store.StateRunning, a.Attempt+1, now, time.Time{}, ""
			events = append(events, store.Event{Type: store.EventAction, State: string(a.State), Task: a.Task, Action: a.Name,
				Message: fmt.Sprintf("%s (attempt %d of %d)", msg, a.Attempt, a.Retries+1)})
			cp := *a
			out.Index, out.Action = next, &cp
		}
		if len(events) == 0 {
			return tx.PutWorkflow(w)
		}
		return putWithEvents(tx, w, events...)
	})
	if err != nil {
		return Assignment{}, fmt.Errorf("next action: %w", err)
	}
	if started {
		e.m.boot.WithLabelValues(string(kind)).Observe(now.Sub(created).Seconds())
	}
	e.touch(out.WorkflowID)
	e.poke(out.WorkflowID)
	return out, nil
}

// then says what the agent does once all actions succeeded. With a BMC,
// provisiond switches the boot device and cycles power itself, so the
// agent does nothing; without one (driver "manual") the agent must. A
// template that ends in kexec has the agent boot the kernel it loaded,
// BMC or not (provisiond does not reset it); one that ends in poweroff
// has it power off rather than reboot.
func (e *Engine) then(hw store.Hardware, w store.Workflow) Then {
	end := ending(w)
	switch {
	case end == actionspec.Kexec:
		return ThenKexec
	case managed(hw):
		return ThenNone
	case w.Kind == store.KindDeprovision || end == actionspec.Poweroff:
		return ThenPoweroff
	}
	return ThenReboot
}

func managed(hw store.Hardware) bool { return hw.BMC.Driver != "" && hw.BMC.Driver != "manual" }

// Report is an agent's report on one action.
type Report struct {
	Index      int
	Task       string
	Action     string
	State      store.State
	Message    string
	OutputTail string
	StartedAt  time.Time
	FinishedAt time.Time
	// Attempt, when set, must be the attempt the agent was handed.
	Attempt int
}

// MaxOutputTail bounds the output tail kept per action.
const MaxOutputTail = 8 << 10

// ReportAction records an action's progress or result. A failed or timed
// out action runs again while it has retries left; otherwise the workflow
// ends with the action's error. Repeating the final report is harmless.
func (e *Engine) ReportAction(ctx context.Context, token string, r Report) error {
	now := e.now()
	var (
		ended store.State
		kind  store.Kind
	)
	var created time.Time
	var wfID, hwID, action string
	if err := e.checkToken(ctx, token); err != nil {
		return fmt.Errorf("report action %d: %w", r.Index, err)
	}
	err := e.st.Batch(ctx, func(tx *store.Tx) error {
		ended = ""
		w, err := authenticate(tx, token, now)
		if err != nil {
			return err
		}
		wfID, hwID, kind, created = w.ID, w.HardwareID, w.Kind, w.CreatedAt
		if r.State == store.StateCancelled {
			action, err = ackCancelled(tx, w, r)
			return err
		}
		if store.Terminal(w.State) || w.State != store.StateRunning {
			return fmt.Errorf("workflow %s is %s: %w", w.ID, w.State, ErrNotReady)
		}
		if r.Index < 0 || r.Index >= len(w.Actions) {
			return fmt.Errorf("%w: action index %d out of range (%d actions)", ErrInvalid, r.Index, len(w.Actions))
		}
		a := &w.Actions[r.Index]
		action = a.Task + "/" + a.Name
		if (r.Task != "" && r.Task != a.Task) || (r.Action != "" && r.Action != a.Name) {
			return fmt.Errorf("%w: action %d is %s/%s, not %s/%s", ErrInvalid, r.Index, a.Task, a.Name, r.Task, r.Action)
		}
		if r.Attempt != 0 && r.Attempt != a.Attempt {
			return fmt.Errorf("%w: report of attempt %d, but attempt %d of %s/%s is current", store.ErrConflict, r.Attempt, a.Attempt, a.Task, a.Name)
		}
		if a.State != store.StateRunning {
			if a.State == r.State {
				return nil // a repeated report
			}
			return fmt.Errorf("%w: action %s/%s is %s, not running", store.ErrConflict, a.Task, a.Name, a.State)
		}
		w.LastHeartbeat = now
		if r.Message != "" {
			a.Message = bound(r.Message, 1024)
		}
		if r.OutputTail != "" {
			a.OutputTail = tail(r.OutputTail, MaxOutputTail)
		}
		ev := store.Event{Type: store.EventAction, Task: a.Task, Action: a.Name, State: string(r.State), Message: a.Message}
		switch r.State {
		case store.StateRunning:
			if !r.StartedAt.IsZero() {
				a.StartedAt = r.StartedAt.UTC()
			}
			return putWithEvents(tx, w, ev)
		case store.StateSucceeded:
			a.State, a.FinishedAt = store.StateSucceeded, finishedAt(r, now)
			e.m.actions.WithLabelValues(a.Image, string(store.StateSucceeded)).Inc()
			return putWithEvents(tx, w, ev)
		case store.StateFailed, store.StateTimedOut:
			e.m.actions.WithLabelValues(a.Image, string(r.State)).Inc()
			evs := e.actionFailed(&w, r.Index, r.State, a.Message, now)
			ended = w.State
			if !store.Terminal(ended) {
				ended = ""
			}
			return putWithEvents(tx, w, append([]store.Event{ev}, evs...)...)
		}
		return fmt.Errorf("%w: report state %q: want running, succeeded, failed, timed_out or (once provisiond cancelled it) cancelled", ErrInvalid, r.State)
	})
	if err != nil {
		return fmt.Errorf("report action %d: %w", r.Index, err)
	}
	if r.State != store.StateRunning {
		lvl := slog.LevelInfo
		if r.State != store.StateSucceeded {
			lvl = slog.LevelWarn
		}
		e.log.Log(ctx, lvl, "action "+strings.ReplaceAll(string(r.State), "_", " "), "workflow", wfID, "hardware", hwID, "action", action, "message", bound(r.Message, 200))
	}
	if ended != "" {
		e.finished(kind, ended, created)
	}
	e.touch(wfID)
	e.poke(wfID)
	return nil
}

func finishedAt(r Report, now time.Time) time.Time {
	if !r.FinishedAt.IsZero() {
		return r.FinishedAt.UTC()
	}
	return now
}

// actionFailed retries action i or ends the workflow; it returns the
// events to log with the change.
// ackCancelled takes an agent's report that it stopped an action because
// provisiond said so (Heartbeat's "cancelled"): it is accepted once the
// workflow has ended or the engine has cancelled that action, and recorded
// as an event; the workflow itself is not changed. An agent cannot cancel
// an action of a live workflow on its own: that report is refused.
func ackCancelled(tx *store.Tx, w store.Workflow, r Report) (action string, err error) {
	if r.Index < 0 || r.Index >= len(w.Actions) {
		return "", fmt.Errorf("%w: action index %d out of range (%d actions)", ErrInvalid, r.Index, len(w.Actions))
	}
	a := w.Actions[r.Index]
	if (r.Task != "" && r.Task != a.Task) || (r.Action != "" && r.Action != a.Name) {
		return "", fmt.Errorf("%w: action %d is %s/%s, not %s/%s", ErrInvalid, r.Index, a.Task, a.Name, r.Task, r.Action)
	}
	if !store.Terminal(w.State) && a.State != store.StateCancelled {
		return "", fmt.Errorf("%w: action %s/%s reported cancelled, but workflow %s is %s and the action %s: only provisiond cancels",
			ErrInvalid, a.Task, a.Name, w.ID, w.State, a.State)
	}
	msg := "the agent stopped the action: workflow " + string(w.State)
	if r.Message != "" {
		msg += ": " + bound(r.Message, 1024)
	}
	_, err = tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: w.HardwareID, Type: store.EventAction, Task: a.Task, Action: a.Name,
		State: string(store.StateCancelled), Message: msg})
	return a.Task + "/" + a.Name, err
}

func (e *Engine) actionFailed(w *store.Workflow, i int, state store.State, msg string, now time.Time) []store.Event {
	a := &w.Actions[i]
	if a.Attempt <= a.Retries {
		a.State = store.StatePending
		return []store.Event{{Type: store.EventAction, Task: a.Task, Action: a.Name, State: string(store.StatePending),
			Message: fmt.Sprintf("attempt %d of %d %s; it runs again", a.Attempt, a.Retries+1, strings.ReplaceAll(string(state), "_", " "))}}
	}
	a.State, a.FinishedAt = state, now
	w.State, w.FinishedAt = state, now
	if state == store.StateTimedOut {
		w.Error = fmt.Sprintf("action %s/%s timed out after %d attempt(s)", a.Task, a.Name, a.Attempt)
	} else {
		w.Error = fmt.Sprintf("action %s/%s failed after %d attempt(s)", a.Task, a.Name, a.Attempt)
	}
	if msg != "" {
		w.Error += ": " + msg
	}
	if a.OutputTail != "" {
		w.Error += "\n--- output (tail) ---\n" + tail(a.OutputTail, 2048)
	}
	return []store.Event{{Type: store.EventState, State: string(w.State), Message: w.Error}}
}

// Heartbeat records that the agent lives. It reports true when the agent
// should stop: the workflow was cancelled or has failed.
func (e *Engine) Heartbeat(ctx context.Context, token, hardwareID string) (stop bool, err error) {
	now := e.now()
	w, err := store.Read(ctx, e.st, func(tx *store.Tx) (store.Workflow, error) { return authenticate(tx, token, now) })
	if err != nil {
		return false, fmt.Errorf("heartbeat: %w", err)
	}
	if hardwareID != "" && hardwareID != w.HardwareID {
		return false, fmt.Errorf("heartbeat: %w: token of hardware %q used for %q", ErrPermission, w.HardwareID, hardwareID)
	}
	if store.Terminal(w.State) {
		return w.State != store.StateSucceeded, nil
	}
	e.touch(w.ID)
	// The heartbeat lives in memory; the store gets it now and then, so a
	// restarted engine knows the agent was alive.
	if now.Sub(w.LastHeartbeat) > e.opts.HeartbeatTimeout/4 {
		err := e.st.Batch(ctx, func(tx *store.Tx) error {
			cur, err := tx.Workflow(w.ID)
			if err != nil || store.Terminal(cur.State) {
				return err
			}
			cur.LastHeartbeat = now
			return tx.PutWorkflow(cur)
		})
		if err != nil {
			return false, fmt.Errorf("heartbeat: record: %w", err)
		}
	}
	return false, nil
}

// MaxLogChunk bounds one logged chunk of agent output.
const MaxLogChunk = 8 << 10

// MaxActionLog bounds the output of one action attempt kept in the event
// log (a chunk that starts below it is kept whole). Past it, chunks are
// counted in the action's LogDropped and dropped; events "output
// truncated: N bytes dropped" mark the first drop and each doubling.
// The agent sees no error: the action's tail still comes with its report.
const MaxActionLog = 1 << 20

// AppendLog adds a chunk of an action's output to the event log, up to
// MaxActionLog bytes per action attempt.
func (e *Engine) AppendLog(ctx context.Context, token string, index int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := e.checkToken(ctx, token); err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	now := e.now()
	var wfID string
	var dropped int64
	err := e.st.Batch(ctx, func(tx *store.Tx) error {
		dropped = 0
		w, err := authenticate(tx, token, now)
		if err != nil {
			return err
		}
		wfID = w.ID
		if w.State != store.StateRunning {
			return fmt.Errorf("workflow %s is %s: %w", w.ID, w.State, ErrNotReady)
		}
		if index < 0 || index >= len(w.Actions) {
			return fmt.Errorf("%w: action index %d out of range", ErrInvalid, index)
		}
		a := &w.Actions[index]
		if a.LogAttempt != a.Attempt {
			a.LogAttempt, a.LogBytes, a.LogDropped = a.Attempt, 0, 0
		}
		ev := store.Event{Type: store.EventLog, Task: a.Task, Action: a.Name}
		if a.LogBytes < MaxActionLog {
			ev.Message = tail(strings.ToValidUTF8(string(data), "\uFFFD"), MaxLogChunk)
			a.LogBytes += int64(len(ev.Message))
			return putWithEvents(tx, w, ev)
		}
		before := a.LogDropped
		a.LogDropped += int64(len(data))
		dropped = int64(len(data))
		if before > 0 && bits.Len64(uint64(before/MaxActionLog)) == bits.Len64(uint64(a.LogDropped/MaxActionLog)) {
			return tx.PutWorkflow(w) // counted; the last event still says roughly how much
		}
		ev.Message = fmt.Sprintf("output truncated: %d bytes dropped after the first %d bytes of attempt %d; the action's tail is kept in its report",
			a.LogDropped, a.LogBytes, a.Attempt)
		return putWithEvents(tx, w, ev)
	})
	if err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	e.m.logDropped.Add(float64(dropped))
	e.touch(wfID)
	return nil
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
