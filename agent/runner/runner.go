// Package runner is the agent's worker loop: it fetches actions from
// provisiond's Agent service, runs them, streams their output and reports
// their results, surviving provisiond restarts.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rackform/terraform-provider-baremetal/agent/actions"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

// Config tunes a Runner. Zero durations take the defaults in brackets.
type Config struct {
	// HardwareID is the id the agent was booted for.
	HardwareID string
	// Actions are the built-in actions by image name.
	Actions actions.Registry
	// HeartbeatEvery is the heartbeat period [5s].
	HeartbeatEvery time.Duration
	// PollEvery is how long to wait when there is nothing to do yet [2s].
	PollEvery time.Duration
	// CallTimeout bounds one RPC [30s].
	CallTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between retries of an RPC
	// while provisiond is unreachable [250ms, 15s].
	BackoffMin, BackoffMax time.Duration
	// TailBytes is how much of an action's output goes with its report [4096].
	TailBytes int
	// LogBuffer bounds output waiting to be streamed [1 MiB]; older output
	// is dropped (it is still in the tail) when provisiond cannot keep up.
	LogBuffer int
	// BeforeAction, when set, runs before each action with the action's
	// output writer: the agent OS refreshes its /dev/disk/by-id links there,
	// since an earlier action may have written a partition table.
	BeforeAction func(out io.Writer)
	Logger       *slog.Logger
}

// Runner runs the workflow of one machine.
type Runner struct {
	client pb.AgentClient
	cfg    Config
	log    *slog.Logger

	mu        sync.Mutex
	workflow  string
	cancelAct context.CancelCauseFunc
	cancelled bool
}

var (
	errCancelled = errors.New("workflow cancelled by provisiond")
	errTimeout   = errors.New("action timed out")
)

// New returns a Runner. It does no I/O.
func New(client pb.AgentClient, cfg Config) *Runner {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatEvery, 5*time.Second)
	def(&cfg.PollEvery, 2*time.Second)
	def(&cfg.CallTimeout, 30*time.Second)
	def(&cfg.BackoffMin, 250*time.Millisecond)
	def(&cfg.BackoffMax, 15*time.Second)
	if cfg.TailBytes <= 0 {
		cfg.TailBytes = 4096
	}
	if cfg.LogBuffer <= 0 {
		cfg.LogBuffer = 1 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{client: client, cfg: cfg, log: log.With("component", "runner", "hardware", cfg.HardwareID)}
}

// Run fetches and runs actions until provisiond says the workflow is done,
// and returns what to do then: "reboot", "poweroff", "kexec" or "none".
// An action with a Then (kexec) returns it as soon as provisiond has
// acknowledged its success report, never before. It
// returns an error only when ctx ends or provisiond refuses the agent (a
// wrong or expired token); an unreachable provisiond is waited for.
func (r *Runner) Run(ctx context.Context) (string, error) {
	hbCtx, stopHB := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.heartbeat(hbCtx) })
	defer func() {
		stopHB()
		wg.Wait()
	}()

	for {
		var resp *pb.GetActionResponse
		err := r.call(ctx, "get action", func(c context.Context) (err error) {
			resp, err = r.client.GetAction(c, &pb.GetActionRequest{HardwareId: r.cfg.HardwareID})
			return err
		})
		if err != nil {
			return "", err
		}
		if resp.GetWorkflowId() != "" {
			r.mu.Lock()
			r.workflow = resp.GetWorkflowId()
			r.mu.Unlock()
		}
		if resp.GetDone() {
			// kexec: the workflow ended in a kexec action whose
			// acknowledgement this agent missed (its report was retried
			// after provisiond had recorded it); the kernel is still loaded.
			then := thenOf(resp)
			r.log.Info("workflow done", "workflow", resp.GetWorkflowId(), "then", then)
			return then, nil
		}
		if resp.GetAction() == nil {
			if err := sleep(ctx, r.cfg.PollEvery); err != nil {
				return "", err
			}
			continue
		}
		then, err := r.runAction(ctx, resp.GetWorkflowId(), resp.GetAction())
		if err != nil {
			return "", err
		}
		if then != "" {
			return then, nil
		}
	}
}

// thenOf says what to do once the workflow is done: "reboot", "poweroff",
// "kexec" or "none". It reads the on_done enum first and falls back to the
// deprecated string field, which is all that an older provisiond sends;
// anything it does not know is "none".
func thenOf(resp *pb.GetActionResponse) string {
	switch resp.GetOnDone() {
	case pb.Then_THEN_NONE:
		return "none"
	case pb.Then_THEN_REBOOT:
		return "reboot"
	case pb.Then_THEN_POWEROFF:
		return "poweroff"
	case pb.Then_THEN_KEXEC:
		return "kexec"
	}
	switch then := resp.GetThen(); then {
	case "reboot", "poweroff", "kexec":
		return then
	}
	return "none"
}

// runAction runs one action and reports it. It returns the action's Then
// when it succeeded.
func (r *Runner) runAction(ctx context.Context, wf string, a *pb.Action) (string, error) {
	log := r.log.With("workflow", wf, "task", a.GetTask(), "action", a.GetName(), "index", a.GetIndex(), "attempt", a.GetAttempt())
	started := time.Now()
	report := func(st pb.State, msg, tail string, finished time.Time) error {
		req := &pb.ReportActionRequest{
			WorkflowId: wf, Index: a.GetIndex(), Task: a.GetTask(), Action: a.GetName(),
			State: st, Message: msg, OutputTail: tail, Attempt: a.GetAttempt(),
			StartedAt: timestamppb.New(started),
		}
		if !finished.IsZero() {
			req.FinishedAt = timestamppb.New(finished)
		}
		return r.call(ctx, "report action", func(c context.Context) error {
			_, err := r.client.ReportAction(c, req)
			return err
		})
	}
	if err := report(pb.State_STATE_RUNNING, "", "", time.Time{}); err != nil {
		return "", r.reportFailed(log, err)
	}
	log.Info("action started", "image", a.GetImage(), "timeout_seconds", a.GetTimeoutSeconds())

	tail := newTail(r.cfg.TailBytes)
	logs := r.newLogStreamer(ctx, wf, a.GetIndex())
	out := &lockedWriter{w: io.MultiWriter(tail, logs)}

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if t := a.GetTimeoutSeconds(); t > 0 {
		var cancelT context.CancelFunc
		actx, cancelT = context.WithTimeoutCause(actx, time.Duration(t)*time.Second, errTimeout)
		defer cancelT()
	}
	r.mu.Lock()
	r.cancelAct = cancel
	if r.cancelled {
		cancel(errCancelled)
	}
	r.mu.Unlock()

	if r.cfg.BeforeAction != nil {
		r.cfg.BeforeAction(out)
	}
	act, err := r.cfg.Actions.Lookup(a.GetImage())
	if err == nil {
		err = runSafe(actx, act.Run, actions.Spec{Name: a.GetName(), Image: a.GetImage(), Command: a.GetCommand(), Env: a.GetEnvironment()}, out)
	}
	r.mu.Lock()
	r.cancelAct = nil
	r.mu.Unlock()
	logs.Close()

	if ctx.Err() != nil {
		return "", ctx.Err() // the agent itself is stopping
	}
	st, msg := pb.State_STATE_SUCCEEDED, ""
	if err != nil {
		st, msg = pb.State_STATE_FAILED, err.Error()
		switch context.Cause(actx) {
		case errCancelled:
			st = pb.State_STATE_CANCELLED
		case errTimeout:
			st, msg = pb.State_STATE_TIMED_OUT, fmt.Sprintf("timed out after %ds: %v", a.GetTimeoutSeconds(), err)
		}
		if len(msg) > 2048 {
			msg = msg[:2048] + "..."
		}
	}
	took := time.Since(started).Round(time.Millisecond)
	if err != nil {
		log.Warn("action ended", "state", st.String(), "took", took, "err", err)
	} else {
		log.Info("action succeeded", "took", took)
	}
	if err := report(st, msg, tail.String(), time.Now()); err != nil {
		return "", r.reportFailed(log, err)
	}
	if err == nil {
		return act.Then, nil
	}
	return "", nil
}

// reportFailed decides what a refused report means: the workflow moved on
// without us (cancelled, timed out: provisiond tells us on the next
// GetAction), or the agent is not allowed at all. A CANCELLED report, sent
// only after Heartbeat said so, is accepted by provisiond.
func (r *Runner) reportFailed(log *slog.Logger, err error) error {
	switch status.Code(errors.Unwrap(err)) {
	case codes.FailedPrecondition, codes.NotFound, codes.InvalidArgument, codes.Aborted:
		log.Warn("provisiond refused the report; asking for the next step", "err", err)
		return nil
	}
	return err
}

func runSafe(ctx context.Context, f actions.Func, s actions.Spec, out io.Writer) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("action panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return f(ctx, s, out)
}

// heartbeat tells provisiond the agent is alive and stops the running action
// when provisiond says the workflow was cancelled.
func (r *Runner) heartbeat(ctx context.Context) {
	t := time.NewTicker(r.cfg.HeartbeatEvery)
	defer t.Stop()
	for {
		r.mu.Lock()
		wf := r.workflow
		r.mu.Unlock()
		c, cancel := context.WithTimeout(ctx, min(r.cfg.CallTimeout, r.cfg.HeartbeatEvery*2))
		resp, err := r.client.Heartbeat(c, &pb.HeartbeatRequest{WorkflowId: wf, HardwareId: r.cfg.HardwareID})
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Debug("heartbeat failed", "err", err)
		case resp.GetCancelled():
			r.mu.Lock()
			if !r.cancelled {
				r.log.Warn("provisiond cancelled the workflow", "workflow", wf)
			}
			r.cancelled = true
			if r.cancelAct != nil {
				r.cancelAct(errCancelled)
			}
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// call runs an RPC under CallTimeout, retrying with exponential backoff and
// jitter while provisiond is unreachable or restarting.
func (r *Runner) call(ctx context.Context, what string, f func(context.Context) error) error {
	delay := r.cfg.BackoffMin
	for attempt := 1; ; attempt++ {
		c, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		err := f(c)
		cancel()
		if err == nil {
			if attempt > 1 {
				r.log.Info("provisiond reachable again", "call", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			r.log.Warn("provisiond unreachable; retrying", "call", what, "attempt", attempt, "err", err)
		}
		d := delay/2 + rand.N(delay/2+1)
		if err := sleep(ctx, d); err != nil {
			return err
		}
		delay = min(delay*2, r.cfg.BackoffMax)
	}
}

func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
