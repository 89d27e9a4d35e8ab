package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/rackform/terraform-provider-baremetal/examples/templates"
	"github.com/rackform/terraform-provider-baremetal/internal/template"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

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

// CheckProvision renders m's template for its hardware and checks its
// inputs as Provision does, and stores nothing: the workflow it would
// start, unsaved. The hardware may hold a machine already (a plan checks
// the inputs of a replace or a reinstall before it happens).
func (e *Engine) CheckProvision(ctx context.Context, m store.Machine) (store.Workflow, error) {
	var hw store.Hardware
	var tpl store.Template
	err := e.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if hw, err = tx.Hardware(m.HardwareID); err != nil {
			return err
		}
		tpl, err = tx.Template(m.TemplateID)
		return err
	})
	if err == nil && m.Wipe != "" {
		err = checkWipe(m.Wipe)
	}
	if err != nil {
		return store.Workflow{}, fmt.Errorf("check provision of %s: %w", m.HardwareID, err)
	}
	rendered, err := e.render(ctx, tpl.Content, e.data(hw, m))
	if err != nil {
		return store.Workflow{}, fmt.Errorf("check provision of %s: render template %q for hardware %q: %w: %w", m.HardwareID, tpl.Name, hw.ID, ErrInvalid, err)
	}
	return store.Workflow{
		HardwareID: hw.ID, TemplateID: tpl.ID, Kind: store.KindProvision, State: store.StatePending,
		Parameters: m.Parameters, SensitiveKeys: m.SensitiveKeys, GlobalTimeout: rendered.GlobalTimeout, Actions: actionsOf(rendered),
	}, nil
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
		m.DisksUntouched = true // until NextAction hands out an action that writes
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
		msg := fmt.Sprintf("deprovision workflow created: wipe %s", wipe)
		switch {
		case wipe != template.WipeNone && m.DisksUntouched:
			// Known here, in the write, so an action handed out meanwhile
			// (NextAction clears the flag in its own write) is seen.
			msg = fmt.Sprintf("deprovision workflow created: wipe %s skipped, no boot: %s", wipe, untouchedWhy)
		case wipe != template.WipeNone:
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
		_, err = tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: hardwareID, Type: store.EventState, State: string(w.State), Message: msg})
		return err
	})
	return m, w, cancelled, wipe, err
}

// untouchedWhy is why a deprovision of a machine with DisksUntouched
// does not wipe.
const untouchedWhy = "no action that writes disks ever started on this machine (its install never got that far), so its disks hold nothing of it; powering off and freeing the hardware"

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

// Reinstall installs the machine on m.HardwareID again, in place: a new
// provision workflow, rendered from m's template and inputs, becomes the
// machine's current one (a provision still running is cancelled). No
// deprovision and no wipe boot come first. Unless preserveData, the
// workflow begins with a quick wipe of every disk, in the install's own
// boot. The machine keeps its id and creation time; m.Wipe "" keeps its
// wipe setting. ErrNotFound without a machine, ErrConflict while it is
// being deprovisioned. Like Provision, it renders outside the write.
func (e *Engine) Reinstall(ctx context.Context, m store.Machine, preserveData bool) (store.Machine, error) {
	for attempt := 1; ; attempt++ {
		w, tplName, cancelled, err := e.reinstallOnce(ctx, &m, preserveData)
		if errors.Is(err, errInputsChanged) && attempt < renderAttempts {
			continue
		}
		if errors.Is(err, errInputsChanged) {
			err = fmt.Errorf("hardware %q or template %q changed %d times while the template rendered: %w", m.HardwareID, m.TemplateID, attempt, store.ErrConflict)
		}
		if err != nil {
			return store.Machine{}, fmt.Errorf("reinstall %s: %w", m.HardwareID, err)
		}
		if cancelled != "" {
			e.finished(store.KindProvision, store.StateCancelled, time.Time{})
			e.poke(cancelled)
		}
		e.m.started.WithLabelValues(string(store.KindProvision)).Inc()
		e.log.InfoContext(ctx, "reinstall started", "hardware", m.HardwareID, "workflow", w.ID, "template", tplName,
			"actions", len(w.Actions), "preserve_data", preserveData, "cancelled", cancelled)
		e.start(w.ID)
		return m, nil
	}
}

// reinstallInputs reads what a reinstall renders from: the machine, which
// must exist, its hardware and the template asked for.
func reinstallInputs(tx *store.Tx, m store.Machine) (store.Machine, store.Hardware, store.Template, error) {
	old, err := tx.Machine(m.HardwareID)
	if err != nil {
		return store.Machine{}, store.Hardware{}, store.Template{}, err
	}
	hw, err := tx.Hardware(m.HardwareID)
	if err != nil {
		return store.Machine{}, store.Hardware{}, store.Template{}, err
	}
	tpl, err := tx.Template(m.TemplateID)
	if err != nil {
		return store.Machine{}, store.Hardware{}, store.Template{}, err
	}
	return old, hw, tpl, nil
}

// reinstallOnce is one read, render, write of Reinstall.
func (e *Engine) reinstallOnce(ctx context.Context, m *store.Machine, preserveData bool) (w store.Workflow, tplName, cancelled string, err error) {
	var old store.Machine
	var hw store.Hardware
	var tpl store.Template
	err = e.st.View(ctx, func(tx *store.Tx) error {
		var err error
		old, hw, tpl, err = reinstallInputs(tx, *m)
		return err
	})
	if err != nil {
		return w, "", "", err
	}
	if m.Wipe == "" {
		m.Wipe = old.Wipe
	}
	if m.Wipe == "" {
		m.Wipe = template.WipeQuick
	}
	if err := checkWipe(m.Wipe); err != nil {
		return w, "", "", err
	}
	data := e.data(hw, *m)
	rendered, err := e.render(ctx, tpl.Content, data)
	if err != nil {
		return w, "", "", fmt.Errorf("render template %q for hardware %q: %w: %w", tpl.Name, hw.ID, ErrInvalid, err)
	}
	var wipe []store.Action
	if !preserveData && len(hw.Disks) > 0 {
		wr, err := e.render(ctx, WipeTemplate, template.Data{Hardware: templateHardware(hw), Params: map[string]string{"wipe_mode": template.WipeQuick}})
		if err != nil {
			return w, "", "", fmt.Errorf("render the reinstall's wipe: %w", err)
		}
		for _, a := range actionsOf(wr) {
			a.Task = "reinstall"
			wipe = append(wipe, a)
		}
	}
	now := e.now()
	err = e.st.Batch(ctx, func(tx *store.Tx) error {
		cancelled = ""
		old, hw2, tpl2, err := reinstallInputs(tx, *m)
		if err != nil {
			return err
		}
		if tpl2.Content != tpl.Content || !reflect.DeepEqual(e.data(hw2, *m), data) || !reflect.DeepEqual(hw2.Disks, hw.Disks) {
			return errInputsChanged
		}
		if cur, err := tx.Workflow(old.WorkflowID); err == nil && !store.Terminal(cur.State) {
			if cur.Kind == store.KindDeprovision {
				return fmt.Errorf("machine %q is being deprovisioned (workflow %s): %w", m.HardwareID, cur.ID, store.ErrConflict)
			}
			cur.State, cur.FinishedAt, cur.Error = store.StateCancelled, now, "cancelled by a reinstall"
			for i := range cur.Actions {
				if cur.Actions[i].State == store.StateRunning {
					cur.Actions[i].State, cur.Actions[i].FinishedAt = store.StateCancelled, now
				}
			}
			if err := putWithEvents(tx, cur, store.Event{Type: store.EventState, State: string(cur.State), Message: cur.Error}); err != nil {
				return err
			}
			cancelled = cur.ID
		}
		w = store.Workflow{
			ID: store.NewID(), HardwareID: hw.ID, TemplateID: tpl.ID, Kind: store.KindProvision,
			State: store.StatePending, Parameters: m.Parameters, SensitiveKeys: m.SensitiveKeys, GlobalTimeout: rendered.GlobalTimeout,
			Actions: append(slices.Clone(wipe), actionsOf(rendered)...), CreatedAt: now,
		}
		m.WorkflowID, m.CreatedAt, m.ProvisionedAt, m.OSReadyAt = w.ID, old.CreatedAt, time.Time{}, time.Time{}
		m.DisksUntouched = old.DisksUntouched // what the machine wrote before is still there
		if err := tx.PutWorkflow(w); err != nil {
			return err
		}
		if err := tx.PutMachine(*m); err != nil {
			return err
		}
		disks := "the data on the disks kept (preserve_data)"
		if len(wipe) > 0 {
			disks = "every disk wiped quick first, in the same boot"
		} else if !preserveData {
			disks = "no disks listed to wipe"
		}
		_, err = tx.AppendEvent(store.Event{WorkflowID: w.ID, HardwareID: hw.ID, Type: store.EventState, State: string(w.State),
			Message: fmt.Sprintf("reinstall: provision workflow created from template %q: %d action(s), %s; no deprovision, no wipe boot", tpl2.Name, len(w.Actions), disks)})
		return err
	})
	return w, tpl.Name, cancelled, err
}
