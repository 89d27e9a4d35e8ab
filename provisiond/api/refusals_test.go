package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// junkEngine refuses every token, as the engine does for a junk one.
type junkEngine struct{}

func (junkEngine) NextAction(context.Context, string, string) (workflow.Assignment, error) {
	return workflow.Assignment{}, fmt.Errorf("next action: %w", workflow.ErrUnauthenticated)
}
func (junkEngine) ReportAction(context.Context, string, workflow.Report) error {
	return fmt.Errorf("report action 0: %w", workflow.ErrUnauthenticated)
}
func (junkEngine) Heartbeat(context.Context, string, string) (bool, error) {
	return false, fmt.Errorf("heartbeat: %w", workflow.ErrUnauthenticated)
}
func (junkEngine) AppendLog(context.Context, string, int, []byte) error {
	return fmt.Errorf("append log: %w", workflow.ErrUnauthenticated)
}

// TestJunkTokenFlood: 100,000 agent calls with junk or no tokens (the
// issue 13 flood wrote 115,281 WARN lines in 15 s) leave a handful of log
// lines, while the counter has every one of them.
func TestJunkTokenFlood(t *testing.T) {
	sink := &testkit.Buffer{}
	reg := prometheus.NewRegistry()
	svc := NewAgent(junkEngine{}, slog.New(slog.NewTextHandler(sink, nil)), reg)
	base := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 66), Port: 4242}})
	junk := metadata.NewIncomingContext(base, metadata.Pairs("authorization", "Bearer deadbeef.junk"))

	const calls = 100_000
	start := time.Now()
	for i := range calls {
		ctx := junk
		if i%2 == 1 {
			ctx = base // no token at all
		}
		var err error
		switch i % 3 {
		case 0:
			_, err = svc.GetAction(ctx, &pb.GetActionRequest{HardwareId: "n1"})
		case 1:
			_, err = svc.ReportAction(ctx, &pb.ReportActionRequest{State: pb.State_STATE_RUNNING})
		case 2:
			_, err = svc.Heartbeat(ctx, &pb.HeartbeatRequest{HardwareId: "n1"})
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("call %d: %v, want Unauthenticated", i, err)
		}
	}
	elapsed := time.Since(start)
	out := sink.String()
	lines := strings.Count(out, "\n")
	t.Logf("%d junk agent calls in %s: %d log lines, %d bytes", calls, elapsed.Round(time.Millisecond), lines, len(out))

	// Per reason: the burst of each interval and at most one summary per
	// interval; the summaries of the last one are still due.
	intervals := int(elapsed/refusalInterval) + 1
	if max := 2 * intervals * (refusalBurst + 1); lines > max {
		t.Errorf("%d log lines for %d refused calls, want at most %d:\n%s", lines, calls, max, bound(out, 4000))
	}
	got := value(svc.refusal.counter.WithLabelValues("agent", "invalid_token")) +
		value(svc.refusal.counter.WithLabelValues("agent", "no_token"))
	if got != calls {
		t.Errorf("provisiond_refused_calls_total = %v, want %d", got, calls)
	}
	if n, err := series(reg, "provisiond_refused_calls_total"); err != nil || n != 2 {
		t.Errorf("refused-call series registered with reg = %d (%v), want 2 (agent/no_token, agent/invalid_token)", n, err)
	}
	if strings.Contains(out, "deadbeef.junk") {
		t.Errorf("the presented token is in the log:\n%s", bound(out, 4000))
	}
}

// TestRefusalSummary: once the burst is spent, the rest of the interval
// is one summary line with the count, written when the interval ends
// even if no further call comes.
func TestRefusalSummary(t *testing.T) {
	sink := &testkit.Buffer{}
	reg := prometheus.NewRegistry()
	r := newRefusals(slog.New(slog.NewTextHandler(sink, nil)), reg, "agent", 2, 100*time.Millisecond)
	ctx := context.Background()
	for range 10 {
		r.Refuse(ctx, "invalid_token", "method", "GetAction")
	}
	r.Refuse(ctx, "no_token", "method", "Heartbeat")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sink.String(), "8 more refused agent calls") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := sink.String()
	if n := strings.Count(out, "msg=\"refused agent call\""); n != 3 {
		t.Errorf("%d single refusal lines, want 3 (2 invalid_token, 1 no_token):\n%s", n, out)
	}
	if !strings.Contains(out, `msg="8 more refused agent calls in the last 100ms (invalid_token)"`) {
		t.Errorf("no summary of the 8 suppressed refusals:\n%s", out)
	}
	if strings.Contains(out, "more refused agent calls in the last 100ms (no_token)") {
		t.Errorf("a summary for a reason with nothing suppressed:\n%s", out)
	}
	// A new interval logs again.
	r.Refuse(ctx, "invalid_token", "method", "GetAction")
	if n := strings.Count(sink.String(), "msg=\"refused agent call\""); n != 4 {
		t.Errorf("after the interval: %d single refusal lines, want 4", n)
	}
	// A second Refusals on the same registry shares the counter.
	r2 := NewRefusals(slog.New(slog.NewTextHandler(sink, nil)), reg, "admin")
	r2.Refuse(ctx, "invalid_token")
	if got := value(r.counter.WithLabelValues("admin", "invalid_token")); got != 1 {
		t.Errorf("admin refusals counted on the shared counter = %v, want 1", got)
	}
	if got := value(r.counter.WithLabelValues("agent", "invalid_token")); got != 11 {
		t.Errorf("agent invalid_token refusals = %v, want 11", got)
	}
}

func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// series counts the series of metric name that reg gathers.
func series(reg *prometheus.Registry, name string) (int, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric()), nil
		}
	}
	return 0, nil
}
