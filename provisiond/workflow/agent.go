package workflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"strings"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

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
			last := e.lastContact(w)
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
			if err := diskTouched(tx, w, *a); err != nil {
				return err
			}
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

// diskTouched clears the machine's DisksUntouched, in NextAction's write,
// when the action handed out for its current workflow may write disks:
// from then on a deprovision wipes them.
func diskTouched(tx *store.Tx, w store.Workflow, a store.Action) error {
	if !actionspec.WritesDisk(a.Image) {
		return nil
	}
	m, err := tx.Machine(w.HardwareID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !m.DisksUntouched || m.WorkflowID != w.ID {
		return nil
	}
	m.DisksUntouched = false
	return tx.PutMachine(m)
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
