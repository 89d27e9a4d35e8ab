package workflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
	"github.com/rackform/terraform-provider-baremetal/internal/template"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Engine-side steps recorded in Workflow.Step, in order. A step names
// what has been done; the driver does the next one.
const (
	stepNetbootOn  = "netboot_on"  // hardware may PXE boot and run the workflow
	stepPXE        = "boot_pxe"    // one-time boot device PXE set
	stepPowered    = "powered"     // reset (or powered on): waiting for the agent
	stepNetbootOff = "netboot_off" // all actions done: netboot switched off
	stepBootDisk   = "boot_disk"   // persistent boot device disk set
	stepFinalPower = "final_power" // rebooted into the new OS, or powered off
)

// drive runs one workflow's engine side until it ends or ctx does.
func (e *Engine) drive(ctx context.Context, id string, poke <-chan struct{}) {
	base := e.log.With("workflow", id)
	log := base
	d := &driverState{}
	for {
		w, hw, err := e.load(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		var wait time.Duration
		switch {
		case err != nil:
			log.WarnContext(ctx, "load workflow", "err", err)
			wait = time.Second
		case store.Terminal(w.State):
			return
		default:
			log = base.With("hardware", w.HardwareID)
			wait, err = e.advance(ctx, log, d, w, hw)
			if err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "workflow step failed", "state", w.State, "step", w.Step, "err", err)
				if wait <= 0 {
					wait = time.Second
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-poke:
			t.Stop()
		case <-t.C:
		}
	}
}

// driverState is a driver's memory; everything that must survive a
// restart is in the store.
type driverState struct {
	bootDeadline time.Time
	step         string    // the step the retry count belongs to
	stepStart    time.Time // its first attempt
	attempts     int
}

func (e *Engine) load(ctx context.Context, id string) (store.Workflow, store.Hardware, error) {
	var w store.Workflow
	var hw store.Hardware
	err := e.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if w, err = tx.Workflow(id); err != nil {
			return err
		}
		hw, err = tx.Hardware(w.HardwareID)
		return err
	})
	return w, hw, err
}

// restart is how the engine reboots a server that is on: a hard reset, not a
// power cycle. Both apply a pending boot override, but a reset is quicker on
// real servers (no power-supply settle time) and some BMCs, OpenIPMI's
// ipmi_sim among them, carry out a "chassis power cycle" as off only.
const restart = "reset"

// advance does the next thing for w and returns how long to wait before
// looking again (0: at once).
func (e *Engine) advance(ctx context.Context, log *slog.Logger, d *driverState, w store.Workflow, hw store.Hardware) (time.Duration, error) {
	now := e.now()
	switch w.State {
	case store.StatePending:
		if w.Kind == store.KindDeprovision && len(w.Actions) == 0 {
			// Wipe none, or (Deprovision decided) disks the machine never wrote.
			msg := "wipe none: no boot needed"
			if w.Wipe != template.WipeNone {
				msg = "wipe " + w.Wipe + " skipped: no boot needed, " + untouchedWhy
			}
			return 0, e.transition(ctx, w, func(w *store.Workflow) []store.Event {
				w.State, w.StartedAt = store.StateRunning, now
				return []store.Event{{Type: store.EventState, State: string(w.State), Message: msg}}
			})
		}
		return 0, e.transition(ctx, w, func(w *store.Workflow) []store.Event {
			w.State = store.StateBooting
			return []store.Event{{Type: store.EventState, State: string(w.State), Message: "booting the agent"}}
		})

	case store.StateBooting:
		switch w.Step {
		case "":
			return 0, e.setNetboot(ctx, w, true, stepNetbootOn)
		case stepNetbootOn:
			return e.bmcStep(ctx, log, d, w, hw, stepPXE, "boot device pxe (one time)", func(ctx context.Context) error {
				return e.power.SetBootDevice(ctx, hw, "pxe", false, hw.UEFI)
			})
		case stepPXE:
			wait, err := e.bmcStep(ctx, log, d, w, hw, stepPowered, "power reset", func(ctx context.Context) error {
				action := restart
				if st, err := e.power.PowerState(ctx, hw); err == nil && st == "off" {
					action = "on"
				}
				return e.power.SetPower(ctx, hw, action)
			})
			if err == nil {
				d.bootDeadline = now.Add(e.opts.BootTimeout)
			}
			return wait, err
		default: // stepPowered: wait for the agent
			if d.bootDeadline.IsZero() {
				d.bootDeadline = now.Add(e.opts.BootTimeout) // after a restart: a full boot timeout again
			}
			if left := d.bootDeadline.Sub(now); left > 0 {
				return left, nil
			}
			return 0, e.end(ctx, w, store.StateTimedOut, fmt.Sprintf("no agent called in within %s of the power-on: check that %s network boots (DHCP, iPXE) and reaches provisiond", e.opts.BootTimeout, hw.ID))
		}

	case store.StateRunning:
		if allSucceeded(w) {
			return e.finish(ctx, log, d, w, hw)
		}
		return e.watch(ctx, w, now)
	}
	return 0, fmt.Errorf("workflow in unknown state %q", w.State)
}

// watch enforces the global, heartbeat and action timeouts of a running
// workflow and returns the time to the nearest one.
func (e *Engine) watch(ctx context.Context, w store.Workflow, now time.Time) (time.Duration, error) {
	next := time.Hour
	if w.GlobalTimeout > 0 && !w.StartedAt.IsZero() {
		left := w.StartedAt.Add(w.GlobalTimeout).Sub(now)
		if left <= 0 {
			return 0, e.end(ctx, w, store.StateTimedOut, fmt.Sprintf("global timeout of %s passed", w.GlobalTimeout))
		}
		next = min(next, left)
	}
	last := e.lastContact(w)
	if last.IsZero() {
		last = now
	}
	if left := last.Add(e.opts.HeartbeatTimeout).Sub(now); left <= 0 {
		// Name the action the agent vanished in: that is where to look
		// (a command that crashes or hangs the machine, a kernel panic).
		during := ""
		for _, a := range w.Actions {
			if a.State == store.StateRunning {
				during = fmt.Sprintf(" during action %s/%s (attempt %d)", a.Task, a.Name, a.Attempt)
				break
			}
		}
		return 0, e.end(ctx, w, store.StateFailed, fmt.Sprintf("the agent went silent%s: no heartbeat or report for %s", during, now.Sub(last).Round(time.Second)))
	} else {
		next = min(next, left)
	}
	for i, a := range w.Actions {
		if a.State != store.StateRunning || a.Timeout <= 0 {
			continue
		}
		left := a.StartedAt.Add(a.Timeout + e.opts.ActionGrace).Sub(now)
		if left > 0 {
			next = min(next, left)
			continue
		}
		var ended store.State
		err := e.transition(ctx, w, func(w *store.Workflow) []store.Event {
			cur := &w.Actions[i]
			if cur.State != store.StateRunning || cur.Attempt != a.Attempt {
				return nil // reported meanwhile
			}
			cur.Message = fmt.Sprintf("no report within its timeout of %s", a.Timeout)
			evs := append([]store.Event{{Type: store.EventAction, Task: a.Task, Action: a.Name, State: string(store.StateTimedOut), Message: cur.Message}},
				e.actionFailed(w, i, store.StateTimedOut, cur.Message, now)...)
			ended = w.State
			return evs
		})
		e.m.actions.WithLabelValues(a.Image, string(store.StateTimedOut)).Inc()
		if err == nil && store.Terminal(ended) {
			e.finished(w.Kind, ended, w.CreatedAt)
		}
		return 0, err
	}
	return next, nil
}

// finish switches netboot off and, with a BMC, boots the installed disk
// (provision) or powers off (deprovision); then the workflow succeeds.
//
// A provision whose template ends in an action that ends the workflow
// (see ending) changes the last step: after kexec the installed OS is
// already running, started by the agent, so the machine is not reset;
// after poweroff it is powered off instead of reset. Boot device disk is
// set in every case, for the reboots to come.
func (e *Engine) finish(ctx context.Context, log *slog.Logger, d *driverState, w store.Workflow, hw store.Hardware) (time.Duration, error) {
	switch w.Step {
	case stepNetbootOff:
		if w.Kind == store.KindProvision {
			return e.bmcStep(ctx, log, d, w, hw, stepBootDisk, "boot device disk (persistent)", func(ctx context.Context) error {
				return e.power.SetBootDevice(ctx, hw, "disk", true, hw.UEFI)
			})
		}
		return e.bmcStep(ctx, log, d, w, hw, stepFinalPower, "power off", func(ctx context.Context) error {
			return e.power.SetPower(ctx, hw, "off")
		})
	case stepBootDisk:
		switch ending(w) {
		case actionspec.Kexec:
			return 0, e.transition(ctx, w, func(w *store.Workflow) []store.Event {
				w.Step = stepFinalPower
				return []store.Event{{Type: store.EventPower, State: string(w.State), Message: "no power reset: the agent started the installed OS by kexec"}}
			})
		case actionspec.Poweroff:
			return e.bmcStep(ctx, log, d, w, hw, stepFinalPower, "power off (the template ends in poweroff)", func(ctx context.Context) error {
				return e.power.SetPower(ctx, hw, "off")
			})
		}
		return e.bmcStep(ctx, log, d, w, hw, stepFinalPower, "power reset into the installed OS", func(ctx context.Context) error {
			return e.power.SetPower(ctx, hw, restart)
		})
	case stepFinalPower:
		return 0, e.succeed(ctx, log, w)
	default:
		return 0, e.setNetboot(ctx, w, false, stepNetbootOff)
	}
}

// ending returns the action that ends w's template (kexec, reboot or
// poweroff: the parser allows them only last), or "" when it ends in an
// ordinary action.
func ending(w store.Workflow) string {
	if len(w.Actions) == 0 {
		return ""
	}
	if img := w.Actions[len(w.Actions)-1].Image; actionspec.IsFinal(img) {
		return img
	}
	return ""
}

func allSucceeded(w store.Workflow) bool {
	for _, a := range w.Actions {
		if a.State != store.StateSucceeded {
			return false
		}
	}
	return true
}

// bmcStep runs a BMC call (skipped for hardware without a BMC) and records
// step once it worked. Every failed attempt is an event, so Terraform
// shows it as it happens. A permanent failure (the BMC refused the
// credentials, or the request) ends the workflow at once; others are
// retried PowerAttempts times within PowerStepTimeout of the step's first
// attempt, each call bounded by what is left of it.
func (e *Engine) bmcStep(ctx context.Context, log *slog.Logger, d *driverState, w store.Workflow, hw store.Hardware, step, what string, call func(context.Context) error) (time.Duration, error) {
	if !managed(hw) {
		return 0, e.transition(ctx, w, func(w *store.Workflow) []store.Event {
			w.Step = step
			return []store.Event{{Type: store.EventPower, State: string(w.State), Message: "no BMC (driver manual): " + what + " is up to the operator or the agent"}}
		})
	}
	now := e.now()
	if d.step != step {
		d.step, d.attempts, d.stepStart = step, 0, now
	}
	d.attempts++
	cctx, cancel := context.WithDeadline(ctx, d.stepStart.Add(e.opts.PowerStepTimeout))
	err := call(cctx)
	cancel()
	if err != nil {
		e.m.bmc.WithLabelValues(step, "error").Inc()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var p interface{ Permanent() bool }
		permanent := errors.As(err, &p) && p.Permanent()
		spent := e.now().Sub(d.stepStart)
		final := permanent || d.attempts >= e.opts.PowerAttempts || spent+e.opts.PowerRetryDelay >= e.opts.PowerStepTimeout
		log.WarnContext(ctx, "BMC call failed", "op", what, "attempt", d.attempts, "final", final, "err", err)
		if final {
			why := fmt.Sprintf("failed %d times in %s", d.attempts, spent.Round(time.Second))
			if permanent {
				why = "failed, and trying again cannot help"
			}
			return 0, e.end(ctx, w, store.StateFailed, fmt.Sprintf("BMC: %s %s: %v", what, why, err))
		}
		e.noteBMCFailure(ctx, w, fmt.Sprintf("BMC: %s failed (attempt %d of at most %d, %s into the step's %s); retrying in %s: %v",
			what, d.attempts, e.opts.PowerAttempts, spent.Round(time.Second), e.opts.PowerStepTimeout, e.opts.PowerRetryDelay, err))
		return e.opts.PowerRetryDelay, nil
	}
	e.m.bmc.WithLabelValues(step, "ok").Inc()
	log.InfoContext(ctx, "BMC call done", "op", what)
	return 0, e.transition(ctx, w, func(w *store.Workflow) []store.Event {
		w.Step = step
		return []store.Event{{Type: store.EventPower, State: string(w.State), Message: what}}
	})
}

// noteBMCFailure records a failed BMC attempt as an event of w.
func (e *Engine) noteBMCFailure(ctx context.Context, w store.Workflow, msg string) {
	err := e.st.Batch(ctx, func(tx *store.Tx) error {
		_, err := tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: w.HardwareID, Type: store.EventPower, State: string(w.State), Message: msg})
		return err
	})
	if err != nil && ctx.Err() == nil {
		e.log.WarnContext(ctx, "record BMC failure", "workflow", w.ID, "err", err)
	}
}

// setNetboot switches the hardware's netboot flags and records step.
func (e *Engine) setNetboot(ctx context.Context, w store.Workflow, on bool, step string) error {
	return e.st.Batch(ctx, func(tx *store.Tx) error {
		cur, err := tx.Workflow(w.ID)
		if err != nil {
			return err
		}
		if cur.State != w.State || cur.Step != w.Step {
			return nil // changed meanwhile; the driver looks again
		}
		hw, err := tx.Hardware(w.HardwareID)
		if err != nil {
			return err
		}
		hw.Netboot = store.Netboot{AllowPXE: on, AllowWorkflow: on}
		hw.UpdatedAt = e.now()
		if err := tx.UpdateHardware(hw); err != nil {
			return err
		}
		cur.Step = step
		msg := "netboot off"
		if on {
			msg = "netboot on"
		}
		return putWithEvents(tx, cur, store.Event{Type: store.EventState, State: string(cur.State), Message: msg})
	})
}

// transition applies fn to the stored workflow if it is still in the
// state and step the driver saw, and stores it with fn's events. fn
// returning no events means "nothing to do".
func (e *Engine) transition(ctx context.Context, seen store.Workflow, fn func(*store.Workflow) []store.Event) error {
	return e.st.Batch(ctx, func(tx *store.Tx) error {
		w, err := tx.Workflow(seen.ID)
		if err != nil {
			return err
		}
		if w.State != seen.State || w.Step != seen.Step {
			return nil
		}
		evs := fn(&w)
		if len(evs) == 0 {
			return nil
		}
		return putWithEvents(tx, w, evs...)
	})
}

// end moves w to a terminal state with an error message.
func (e *Engine) end(ctx context.Context, w store.Workflow, state store.State, msg string) error {
	now := e.now()
	changed := false
	err := e.transition(ctx, w, func(w *store.Workflow) []store.Event {
		changed = false
		if store.Terminal(w.State) {
			return nil
		}
		for i := range w.Actions {
			if w.Actions[i].State == store.StateRunning {
				w.Actions[i].State, w.Actions[i].FinishedAt = store.StateCancelled, now
			}
		}
		w.State, w.FinishedAt, w.Error = state, now, msg
		changed = true
		return []store.Event{{Type: store.EventState, State: string(state), Message: msg}}
	})
	if err == nil && changed {
		e.finished(w.Kind, state, w.CreatedAt)
		e.log.WarnContext(ctx, "workflow ended", "workflow", w.ID, "hardware", w.HardwareID, "state", state, "error", msg)
	}
	return err
}

// succeed ends w successfully: a provision marks the machine provisioned,
// a deprovision deletes it (if w is still its workflow).
func (e *Engine) succeed(ctx context.Context, log *slog.Logger, w store.Workflow) error {
	now := e.now()
	changed := false
	err := e.st.Batch(ctx, func(tx *store.Tx) error {
		changed = false
		cur, err := tx.Workflow(w.ID)
		if err != nil {
			return err
		}
		if cur.State != w.State || cur.Step != w.Step {
			return nil
		}
		cur.State, cur.FinishedAt = store.StateSucceeded, now
		msg := "provisioned"
		m, err := tx.Machine(cur.HardwareID)
		switch {
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return err
		case err == nil && m.WorkflowID == cur.ID && cur.Kind == store.KindProvision:
			m.ProvisionedAt = now
			if err := tx.PutMachine(m); err != nil {
				return err
			}
		case err == nil && m.WorkflowID == cur.ID && cur.Kind == store.KindDeprovision:
			if err := tx.DeleteMachine(cur.HardwareID); err != nil {
				return err
			}
			msg = "deprovisioned: the hardware is free"
		}
		changed = true
		return putWithEvents(tx, cur, store.Event{Type: store.EventState, State: string(cur.State), Message: msg})
	})
	if err == nil && changed {
		e.finished(w.Kind, store.StateSucceeded, w.CreatedAt)
		log.InfoContext(ctx, "workflow succeeded", "kind", w.Kind, "took", now.Sub(w.CreatedAt).Round(time.Millisecond))
	}
	return err
}
