// The baremetal_machine resource: its waiting for workflows: following their events, progress logs, and what a failure or a wait says.

package provider

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
)

// stateName is the lower-case name of an API state ("succeeded").
func stateName(s pb.State) string {
	if s == pb.State_STATE_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func terminal(s pb.State) bool { return client.Terminal(s) }

// failedAction returns the action that failed or timed out, if any.
func failedAction(w *pb.Workflow) *pb.ActionStatus {
	for _, a := range w.GetActions() {
		if a.GetState() == pb.State_STATE_FAILED || a.GetState() == pb.State_STATE_TIMED_OUT {
			return a
		}
	}
	return nil
}

// failureDetail explains a failed workflow: the action, its message and
// output tail.
func failureDetail(what string, w *pb.Workflow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The %s workflow %s of hardware %s ended %s.", what, w.GetId(), w.GetHardwareId(), stateName(w.GetState()))
	if a := failedAction(w); a != nil {
		fmt.Fprintf(&b, "\n\nFailed action: %q (task %q, image %s, attempt %d)", a.GetName(), a.GetTask(), a.GetImage(), a.GetAttempt())
		if a.GetMessage() != "" {
			fmt.Fprintf(&b, "\nMessage: %s", a.GetMessage())
		}
		if a.GetOutputTail() != "" {
			fmt.Fprintf(&b, "\n\nLast output of the action:\n%s", a.GetOutputTail())
		}
	}
	if w.GetError() != "" {
		fmt.Fprintf(&b, "\n\nError: %s", w.GetError())
	}
	b.WriteString("\n\n" + timeline(w, time.Now()))
	return b.String()
}

// lastSnapshot is workflow wfID as provisiond has it now, for a
// diagnostic: the machine's current workflow when it is wfID, else w (the
// last one followed, may be nil).
func (r *machineResource) lastSnapshot(ctx context.Context, hardwareID, wfID string, w *pb.Workflow) *pb.Workflow {
	pm, err := r.client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: hardwareID})
	if err == nil && pm.GetWorkflow().GetId() == wfID {
		return pm.GetWorkflow()
	}
	return w
}

// timeoutDetail is a timeout diagnostic's text: what did not finish, then
// where the workflow got to.
func timeoutDetail(text string, w *pb.Workflow) string {
	if tl := timeline(w, time.Now()); tl != "" {
		return text + "\n\n" + tl
	}
	return text
}

// follow streams the events of a workflow into the Terraform log until
// the workflow ends, and returns its final snapshot (client.Follow: a
// broken stream, a provisiond restart, is followed again until ctx ends).
// For a deprovision workflow, the machine being gone means it succeeded.
// With untilReady, a provision that succeeded is followed further, until
// its installed OS phones home (an "os_ready" event, or os_ready_at on the
// machine); ready says whether it did.
func (r *machineResource) follow(ctx context.Context, hardwareID, workflowID string, deprovision, untilReady bool) (w *pb.Workflow, ready bool, err error) {
	lastState := pb.State_STATE_UNSPECIFIED
	stopProgress := func() {}
	defer func() { stopProgress() }()
	f, err := client.Follow(ctx, r.client, client.Watch{
		HardwareID: hardwareID, WorkflowID: workflowID, Deprovision: deprovision, UntilOSReady: untilReady, RetryWait: r.retryWait,
		OnEvent: func(ev *pb.Event) error {
			logEvent(ctx, ev)
			if w := ev.GetWorkflow(); w != nil && w.GetState() != lastState {
				lastState = w.GetState()
				tflog.Info(ctx, "workflow "+stateName(lastState), map[string]any{"workflow_id": w.GetId(), "hardware_id": hardwareID})
			}
			return nil
		},
		OnAwaitOS: func(*pb.Workflow) {
			fields := map[string]any{"workflow_id": workflowID, "hardware_id": hardwareID}
			tflog.Info(ctx, "installed: waiting for the installed OS to phone home (wait_for = \"os_ready\")", fields)
			stopProgress = progress(ctx, r.progressEvery, "still waiting for the installed OS to phone home", fields)
		},
		OnFollowAgain: func(err error) {
			tflog.Debug(ctx, "workflow stream ended early: following again", map[string]any{"workflow_id": workflowID, "error": fmt.Sprint(err)})
		},
	})
	return f.Workflow, f.OSReady, err
}

// progress logs msg every interval, with the time waited, until stop is
// called or ctx ends.
func progress(ctx context.Context, every time.Duration, msg string, fields map[string]any) (stop func()) {
	if every <= 0 {
		every = 30 * time.Second
	}
	stopped := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stopped:
				return
			case <-t.C:
				f := maps.Clone(fields)
				f["waited"] = time.Since(start).Round(time.Second).String()
				tflog.Info(ctx, msg, f)
			}
		}
	}()
	return func() { close(stopped); <-finished }
}

func logEvent(ctx context.Context, ev *pb.Event) {
	fields := map[string]any{"workflow_id": ev.GetWorkflowId(), "hardware_id": ev.GetHardwareId()}
	if ev.GetTask() != "" {
		fields["task"] = ev.GetTask()
	}
	if ev.GetAction() != "" {
		fields["action"] = ev.GetAction()
	}
	switch ev.GetType() {
	case client.EventAction:
		msg := fmt.Sprintf("action %s %s", ev.GetAction(), stateName(ev.GetState()))
		if ev.GetMessage() != "" {
			msg += ": " + ev.GetMessage()
		}
		tflog.Info(ctx, msg, fields)
	case client.EventLog:
		tflog.Debug(ctx, ev.GetMessage(), fields)
	default:
		msg := ev.GetType()
		if s := stateName(ev.GetState()); s != "" {
			msg += " " + s
		}
		if ev.GetMessage() != "" {
			msg += ": " + ev.GetMessage()
		}
		tflog.Info(ctx, msg, fields)
	}
}

// detached is a short context for bookkeeping after ctx ended, so a
// timed-out create still records what it knows.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// waitForOS decides whether create waits for the installed OS to phone
// home, and says why: wait_for when set, else whether the user data or the
// template's content mention provisiond's phone-home path (they set the
// OS up to call it). A template that cannot be read counts as not
// mentioning it: the provision call reports that error.
func (r *machineResource) waitForOS(ctx context.Context, waitFor types.String, preq *pb.ProvisionMachineRequest) (bool, string) {
	if !waitFor.IsNull() && !waitFor.IsUnknown() {
		return waitFor.ValueString() == waitOSReady, "wait_for = \"" + waitFor.ValueString() + "\""
	}
	if strings.Contains(preq.GetUserData(), phoneHomePath) {
		return true, "wait_for is unset and the user data mentions " + phoneHomePath
	}
	tpl, err := r.client.GetTemplate(ctx, &pb.GetTemplateRequest{Id: preq.GetTemplateId()})
	if err != nil {
		tflog.Warn(ctx, "cannot read the template to choose what to wait for: waiting until installed", map[string]any{"error": err.Error()})
		return false, "wait_for is unset and the template could not be read"
	}
	if strings.Contains(tpl.GetContent(), phoneHomePath) {
		return true, "wait_for is unset and template " + tpl.GetName() + " mentions " + phoneHomePath
	}
	return false, "wait_for is unset and neither the user data nor the template mention " + phoneHomePath
}

// neverPhonedHome explains a create that timed out waiting for the
// installed OS: the install itself succeeded.
func neverPhonedHome(hwID, ip string, w *pb.Workflow, timeout time.Duration, why string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The provision workflow %s succeeded", w.GetId())
	if w.GetFinishedAt() != nil {
		fmt.Fprintf(&b, " at %s", w.GetFinishedAt().AsTime().UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, " (the server was switched to its disk), but the installed OS did not phone home to provisiond within timeouts.create (%s). Terraform waited for it because %s.\n\n", timeout, why)
	b.WriteString("What to check:\n")
	b.WriteString("- cloud-init's phone_home in the user data or the image: `phone_home: {url: \"http://PROVISIOND:PORT/phone-home\", post: [instance_id, hostname], tries: 10}`, with the address and port machines reach provisiond's HTTP service at (--public-ip, --http-listen), and the module in cloud_final_modules;\n")
	from := "its address in the hardware record"
	if ip != "" {
		from = ip + " (its address in the hardware record)"
	}
	fmt.Fprintf(&b, "- the server's network: it must reach provisiond from %s, as provisiond accepts a phone-home only from the machine's own address (provisiond's log says \"phone-home refused\" with the reason when a call came but was refused);\n", from)
	b.WriteString("- the server's console (BMC serial-over-LAN or KVM), and on the server `cloud-init status --long` and /var/log/cloud-init.log: did the OS boot, did cloud-init run?\n\n")
	fmt.Fprintf(&b, "Set wait_for = \"installed\" to return once the install succeeded without waiting for the OS. The machine stays in Terraform state as tainted: the next apply reinstalls it (`terraform untaint baremetal_machine.NAME` keeps the install as it is; hardware %s).", hwID)
	b.WriteString("\n\n" + timeline(w, time.Now()))
	if w.GetFinishedAt() != nil {
		fmt.Fprintf(&b, "\n- waiting for the installed OS to phone home: %s", span(time.Since(w.GetFinishedAt().AsTime())))
	}
	return b.String()
}

// timedOut reports whether following a workflow under wctx ended because
// wctx's deadline passed: err wraps context.DeadlineExceeded, or the
// stream broke with a gRPC status as wctx expired, or it carries gRPC's
// DeadlineExceeded: the call's deadline travels to provisiond, whose own
// timer can end the stream a moment before wctx's fires here.
func timedOut(wctx context.Context, err error) bool {
	return err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(wctx.Err(), context.DeadlineExceeded) ||
		status.Code(err) == codes.DeadlineExceeded)
}

// timeline says where workflow w got to and how long each phase took: the
// boot into the agent OS (from the workflow's creation until its agent
// called in), then each action. now ends what is still going on. Every
// failure and timeout diagnostic carries it, so the first thing a user
// reads names the phase and action reached.
func timeline(w *pb.Workflow, now time.Time) string {
	if w == nil {
		return ""
	}
	end := now
	if w.GetFinishedAt() != nil {
		end = w.GetFinishedAt().AsTime()
	}
	created := w.GetCreatedAt().AsTime()
	var b strings.Builder
	fmt.Fprintf(&b, "Where workflow %s got to: %s", w.GetId(), reached(w))
	if w.GetCreatedAt() != nil {
		fmt.Fprintf(&b, ", %s after it was created at %s", span(end.Sub(created)), created.UTC().Format(time.RFC3339))
	}
	b.WriteString(".")
	if len(w.GetActions()) == 0 {
		return b.String() // a deprovision with nothing to wipe boots nothing
	}
	if w.GetCreatedAt() != nil {
		switch {
		case w.GetStartedAt() != nil:
			fmt.Fprintf(&b, "\n- boot into the agent OS: %s, until the agent called in", span(w.GetStartedAt().AsTime().Sub(created)))
		case terminal(w.GetState()):
			fmt.Fprintf(&b, "\n- boot into the agent OS: %s; the agent never called in", span(end.Sub(created)))
		default:
			fmt.Fprintf(&b, "\n- boot into the agent OS: %s so far; the agent has not called in", span(end.Sub(created)))
		}
	}
	for _, a := range w.GetActions() {
		fmt.Fprintf(&b, "\n- action %q (task %q): ", a.GetName(), a.GetTask())
		switch st := a.GetState(); {
		case a.GetStartedAt() == nil:
			b.WriteString("not started")
		case a.GetFinishedAt() != nil:
			fmt.Fprintf(&b, "%s in %s", stateName(st), span(a.GetFinishedAt().AsTime().Sub(a.GetStartedAt().AsTime())))
		default:
			fmt.Fprintf(&b, "%s for %s", stateName(st), span(end.Sub(a.GetStartedAt().AsTime())))
		}
		if a.GetAttempt() > 1 {
			fmt.Fprintf(&b, " (attempt %d)", a.GetAttempt())
		}
	}
	return b.String()
}

// reached names the phase, and the action, workflow w got to.
func reached(w *pb.Workflow) string {
	for _, a := range w.GetActions() {
		if a.GetState() == pb.State_STATE_SUCCEEDED {
			continue
		}
		if a.GetStartedAt() != nil {
			return fmt.Sprintf("%s, at action %q", stateName(w.GetState()), a.GetName())
		}
		if w.GetStartedAt() == nil {
			return stateName(w.GetState()) + ", in the boot into the agent OS"
		}
		return fmt.Sprintf("%s, before action %q", stateName(w.GetState()), a.GetName())
	}
	if n := len(w.GetActions()); n > 0 {
		return fmt.Sprintf("%s, all %d actions done", stateName(w.GetState()), n)
	}
	return stateName(w.GetState())
}

// span is a duration as diagnostics print it, to a tenth of a second.
func span(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(100 * time.Millisecond).String()
}
