package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Event types (Event.type on the wire; provisiond's store.EventType).
const (
	EventState    = "state"    // a workflow changed state
	EventAction   = "action"   // an action changed state
	EventLog      = "log"      // output of an action
	EventPower    = "power"    // a power or boot-device change
	EventOperator = "operator" // something an operator did or must do
	// EventOSReady: the installed OS of a provision workflow phoned home.
	EventOSReady = "os_ready"
)

// Watch says which workflow Follow follows, and how.
type Watch struct {
	HardwareID, WorkflowID string
	// Deprovision: the workflow is a deprovision, so the machine being
	// gone means that it succeeded.
	Deprovision bool
	// UntilOSReady: a provision that succeeded is followed further, until
	// its installed OS phones home (an EventOSReady event, or os_ready_at
	// on the machine).
	UntilOSReady bool
	// NoFollow: replay the events logged so far and return at the end of
	// the stream; nothing is followed again.
	NoFollow bool
	// TrustEnd: the end of the stream is the end of the workflow, as
	// provisiond ends the stream only then. Without it, an ended stream is
	// checked against GetMachine and followed again unless the workflow is
	// over (an older provisiond ends it early); a broken stream (Unavailable:
	// a provisiond restart) is followed again either way.
	TrustEnd bool
	// RetryWait is the pause before following again; zero means a second.
	RetryWait time.Duration

	// OnEvent, when set, gets every event once, in order (events replayed
	// after a reconnect are skipped); an error from it ends Follow.
	OnEvent func(*pb.Event) error
	// OnFollowAgain, when set, is told why the stream is followed again.
	OnFollowAgain func(err error)
	// OnAwaitOS, when set, is called once, when the workflow succeeded and
	// Follow goes on to wait for the OS to phone home (UntilOSReady).
	OnAwaitOS func(*pb.Workflow)
}

// Followed is what Follow saw last.
type Followed struct {
	// Workflow is the last snapshot of the workflow seen; nil if none.
	Workflow *pb.Workflow
	// OSReady: the installed OS phoned home.
	OSReady bool
}

// Follow streams the events of a workflow (WatchMachine) until it ends
// and, with UntilOSReady, until the OS it installed phones home. It
// follows the stream again when it breaks, until ctx ends. It returns
// what it saw last, also with an error.
func Follow(ctx context.Context, c pb.AdminClient, w Watch) (Followed, error) {
	var out Followed
	retry := w.RetryWait
	if retry <= 0 {
		retry = time.Second
	}
	// done: nothing more to wait for.
	done := func(wf *pb.Workflow) bool {
		return Terminal(wf.GetState()) && (!w.UntilOSReady || out.OSReady || wf.GetState() != pb.State_STATE_SUCCEEDED)
	}
	awaiting := false
	awaitOS := func(wf *pb.Workflow) {
		if awaiting || !w.UntilOSReady || out.OSReady || wf.GetState() != pb.State_STATE_SUCCEEDED {
			return
		}
		awaiting = true
		if w.OnAwaitOS != nil {
			w.OnAwaitOS(wf)
		}
	}
	var lastSeq uint64
	for {
		stream, err := c.WatchMachine(ctx, &pb.WatchMachineRequest{HardwareId: w.HardwareID, WorkflowId: w.WorkflowID, UntilOsReady: w.UntilOSReady, NoFollow: w.NoFollow})
		for err == nil {
			var ev *pb.Event
			if ev, err = stream.Recv(); err != nil {
				break
			}
			if ev.GetSeq() != 0 && ev.GetSeq() <= lastSeq {
				continue // replayed after a reconnect
			}
			lastSeq = ev.GetSeq()
			if ev.GetType() == EventOSReady {
				out.OSReady = true
			}
			wf := ev.GetWorkflow()
			if wf != nil {
				out.Workflow = wf
			}
			if w.OnEvent != nil {
				if err := w.OnEvent(ev); err != nil {
					return out, err
				}
			}
			if wf != nil && !w.TrustEnd && !w.NoFollow {
				if done(wf) {
					return out, nil
				}
				awaitOS(wf)
			}
		}
		if errors.Is(err, io.EOF) && (w.TrustEnd || w.NoFollow) {
			return out, nil
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if w.NoFollow || (status.Code(err) != codes.Unavailable && (w.TrustEnd || !errors.Is(err, io.EOF) && (!w.Deprovision || status.Code(err) != codes.NotFound))) {
			return out, fmt.Errorf("watch workflow %s: %w", w.WorkflowID, err)
		}
		if !w.TrustEnd {
			// The stream ended or broke: ask where the workflow is.
			m, gerr := c.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: w.HardwareID})
			switch {
			case gerr == nil && m.GetWorkflow().GetId() == w.WorkflowID && Terminal(m.GetWorkflow().GetState()):
				out.OSReady = out.OSReady || m.GetOsReadyAt() != nil
				if done(m.GetWorkflow()) {
					out.Workflow = m.GetWorkflow()
					return out, nil
				}
				// A provisiond without until_os_ready ends the stream
				// here: this then polls every RetryWait.
				out.Workflow = m.GetWorkflow()
				awaitOS(out.Workflow)
			case gerr == nil && w.UntilOSReady && m.GetWorkflow().GetId() != w.WorkflowID:
				return out, fmt.Errorf("machine %s moved on to workflow %s while waiting for the OS installed by workflow %s to phone home", w.HardwareID, m.GetWorkflow().GetId(), w.WorkflowID)
			case status.Code(gerr) == codes.NotFound && w.Deprovision:
				// The machine is gone: the deprovision workflow finished.
				if out.Workflow == nil {
					out.Workflow = &pb.Workflow{Id: w.WorkflowID, HardwareId: w.HardwareID, Kind: pb.WorkflowKind_WORKFLOW_KIND_DEPROVISION}
				}
				out.Workflow.State = pb.State_STATE_SUCCEEDED
				return out, nil
			case gerr != nil && status.Code(gerr) != codes.Unavailable:
				return out, fmt.Errorf("get machine %s: %w", w.HardwareID, gerr)
			}
		}
		if w.OnFollowAgain != nil {
			w.OnFollowAgain(err)
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(retry):
		}
	}
}

// Terminal reports whether a workflow in state s has ended.
func Terminal(s pb.State) bool {
	switch s {
	case pb.State_STATE_SUCCEEDED, pb.State_STATE_FAILED, pb.State_STATE_TIMED_OUT, pb.State_STATE_CANCELLED:
		return true
	}
	return false
}
