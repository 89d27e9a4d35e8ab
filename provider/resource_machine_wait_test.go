package provider

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

// TestTimedOut: provisiond can end a watch with DeadlineExceeded a moment
// before the provider's own context expires; that is a timeout too.
func TestTimedOut(t *testing.T) {
	live := context.Background()
	expired, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-expired.Done()
	for name, tc := range map[string]struct {
		ctx  context.Context
		err  error
		want bool
	}{
		"no error":                   {expired, nil, false},
		"context deadline":           {live, fmt.Errorf("watch: %w", context.DeadlineExceeded), true},
		"ctx expired, stream reset":  {expired, status.Error(codes.Canceled, "RST_STREAM"), true},
		"server's deadline first":    {live, fmt.Errorf("watch workflow x: %w", status.Error(codes.DeadlineExceeded, "stream terminated")), true},
		"another error, ctx running": {live, status.Error(codes.Unavailable, "gone"), false},
	} {
		if got := timedOut(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: timedOut = %v, want %v", name, got, tc.want)
		}
	}
}

// TestTimeline: a failure or timeout diagnostic names the phase and the
// action reached, and how long each took.
func TestTimeline(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(s float64) *timestamppb.Timestamp {
		return timestamppb.New(t0.Add(time.Duration(s * float64(time.Second))))
	}
	now := t0.Add(15 * time.Minute)
	action := func(name string, st pb.State, from, to float64, attempt int32) *pb.ActionStatus {
		a := &pb.ActionStatus{Task: "os", Name: name, State: st, Attempt: attempt}
		if from >= 0 {
			a.StartedAt = at(from)
		}
		if to >= 0 {
			a.FinishedAt = at(to)
		}
		return a
	}
	for name, tc := range map[string]struct {
		w    *pb.Workflow
		want []string
	}{
		"never booted": {
			w: &pb.Workflow{Id: "wf1", State: pb.State_STATE_BOOTING, CreatedAt: at(0), Actions: []*pb.ActionStatus{
				action("stream", pb.State_STATE_PENDING, -1, -1, 0)}},
			want: []string{
				"Where workflow wf1 got to: booting, in the boot into the agent OS, 15m0s after it was created at 2026-12-04T10:00:00Z.",
				"- boot into the agent OS: 15m0s so far; the agent has not called in",
				`- action "stream" (task "os"): not started`,
			},
		},
		"failed at the second action": {
			w: &pb.Workflow{Id: "wf2", State: pb.State_STATE_FAILED, CreatedAt: at(0), StartedAt: at(12.34), FinishedAt: at(60), Actions: []*pb.ActionStatus{
				action("stream", pb.State_STATE_SUCCEEDED, 12.5, 31.5, 1),
				action("kexec", pb.State_STATE_FAILED, 31.6, 59.9, 3),
				action("after", pb.State_STATE_PENDING, -1, -1, 0)}},
			want: []string{
				`Where workflow wf2 got to: failed, at action "kexec", 1m0s after it was created at 2026-12-04T10:00:00Z.`,
				"- boot into the agent OS: 12.3s, until the agent called in",
				`- action "stream" (task "os"): succeeded in 19s`,
				`- action "kexec" (task "os"): failed in 28.3s (attempt 3)`,
				`- action "after" (task "os"): not started`,
			},
		},
		"running": {
			w: &pb.Workflow{Id: "wf3", State: pb.State_STATE_RUNNING, CreatedAt: at(0), StartedAt: at(10), Actions: []*pb.ActionStatus{
				action("stream", pb.State_STATE_RUNNING, 11, -1, 1)}},
			want: []string{
				`Where workflow wf3 got to: running, at action "stream", 15m0s after`,
				`- action "stream" (task "os"): running for 14m49s`,
			},
		},
		"agent never called in, timed out": {
			w: &pb.Workflow{Id: "wf4", State: pb.State_STATE_TIMED_OUT, CreatedAt: at(0), FinishedAt: at(900), Actions: []*pb.ActionStatus{
				action("stream", pb.State_STATE_PENDING, -1, -1, 0)}},
			want: []string{"timed_out, in the boot into the agent OS", "- boot into the agent OS: 15m0s; the agent never called in"},
		},
		"between actions": {
			w: &pb.Workflow{Id: "wf5", State: pb.State_STATE_RUNNING, CreatedAt: at(0), StartedAt: at(10), Actions: []*pb.ActionStatus{
				action("a", pb.State_STATE_SUCCEEDED, 10, 20, 1), action("b", pb.State_STATE_PENDING, -1, -1, 0)}},
			want: []string{`running, before action "b"`},
		},
		"all done": {
			w: &pb.Workflow{Id: "wf6", State: pb.State_STATE_SUCCEEDED, CreatedAt: at(0), StartedAt: at(10), FinishedAt: at(30), Actions: []*pb.ActionStatus{
				action("a", pb.State_STATE_SUCCEEDED, 10, 20, 1), action("b", pb.State_STATE_SUCCEEDED, 20, 29, 1)}},
			want: []string{"succeeded, all 2 actions done, 30s after"},
		},
		"nothing to boot": {
			w:    &pb.Workflow{Id: "wf7", State: pb.State_STATE_SUCCEEDED, CreatedAt: at(0), StartedAt: at(0), FinishedAt: at(0.2)},
			want: []string{"Where workflow wf7 got to: succeeded, 200ms after"},
		},
	} {
		got := timeline(tc.w, now)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: timeline lacks %q:\n%s", name, w, got)
			}
		}
		if name == "nothing to boot" && strings.Contains(got, "boot into") {
			t.Errorf("%s: a workflow without actions boots nothing:\n%s", name, got)
		}
	}
	if got := timeline(nil, now); got != "" {
		t.Errorf("timeline(nil) = %q, want nothing", got)
	}
}
