package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rackform/terraform-provider-baremetal/agent/actions"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

const testToken = "s3cret-agent-token"

// fakeAgentServer plays provisiond's Agent service: it hands out actions in
// order, ends the workflow at the first failure, and keeps its state across
// "restarts" (a new gRPC server on the same port), as the bbolt store does.
type fakeAgentServer struct {
	pb.UnimplementedAgentServer
	mu        sync.Mutex
	actions   []*pb.Action
	next      int
	failed    bool
	cancelled bool
	then      string
	// oldServer: send only the deprecated string field, as a provisiond
	// older than on_done does.
	oldServer  bool
	reports    []string // "name:STATE"
	tails      map[string]string
	messages   map[string]string
	logs       map[int32]string
	heartbeats int
	authFails  int
	// refuseSuccess makes that many SUCCEEDED reports fail with
	// refuseCode before one is taken: Unavailable (provisiond restarting),
	// or FailedPrecondition (a retried report that provisiond had
	// recorded the first time: the workflow has moved on).
	refuseSuccess int
	refuseCode    codes.Code
	refused       int
}

func (f *fakeAgentServer) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+testToken {
		f.mu.Lock()
		f.authFails++
		f.mu.Unlock()
		return status.Error(codes.Unauthenticated, "bad agent token")
	}
	return nil
}

func (f *fakeAgentServer) GetAction(ctx context.Context, req *pb.GetActionRequest) (*pb.GetActionResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetHardwareId() != "hw-1" {
		return nil, status.Error(codes.PermissionDenied, "wrong hardware")
	}
	if f.failed || f.cancelled || f.next >= len(f.actions) {
		if f.oldServer {
			return &pb.GetActionResponse{WorkflowId: "wf-1", Done: true, Then: f.then}, nil //nolint:staticcheck // what an older provisiond sends
		}
		return &pb.GetActionResponse{WorkflowId: "wf-1", Done: true, OnDone: pb.Then(pb.Then_value["THEN_"+strings.ToUpper(f.then)])}, nil
	}
	return &pb.GetActionResponse{WorkflowId: "wf-1", Action: f.actions[f.next]}, nil
}

func (f *fakeAgentServer) ReportAction(ctx context.Context, req *pb.ReportActionRequest) (*pb.ReportActionResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetState() == pb.State_STATE_SUCCEEDED && f.refused < f.refuseSuccess {
		f.refused++
		if f.refuseCode == codes.FailedPrecondition {
			f.next++ // recorded before, and the workflow has moved on
		}
		return nil, status.Error(f.refuseCode, "not now")
	}
	f.reports = append(f.reports, req.GetAction()+":"+strings.TrimPrefix(req.GetState().String(), "STATE_"))
	if f.tails == nil {
		f.tails, f.messages = map[string]string{}, map[string]string{}
	}
	f.tails[req.GetAction()] = req.GetOutputTail()
	f.messages[req.GetAction()] = req.GetMessage()
	switch req.GetState() {
	case pb.State_STATE_SUCCEEDED:
		f.next++
	case pb.State_STATE_RUNNING:
	default:
		f.failed = true
	}
	return &pb.ReportActionResponse{}, nil
}

func (f *fakeAgentServer) StreamLogs(s grpc.ClientStreamingServer[pb.LogChunk, pb.StreamLogsResponse]) error {
	if err := f.auth(s.Context()); err != nil {
		return err
	}
	for {
		c, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&pb.StreamLogsResponse{})
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		if f.logs == nil {
			f.logs = map[int32]string{}
		}
		f.logs[c.GetIndex()] += string(c.GetData())
		f.mu.Unlock()
	}
}

func (f *fakeAgentServer) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	return &pb.HeartbeatResponse{Cancelled: f.cancelled}, nil
}

// serve starts a gRPC server for f on addr ("127.0.0.1:0" for a new port)
// and returns its address and a stop function.
func serve(t *testing.T, f *fakeAgentServer, addr string) (string, func()) {
	t.Helper()
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger a moment after a stop
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterAgentServer(s, f)
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			s.Stop()
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

func shell(name, script string, timeout int64) *pb.Action {
	return &pb.Action{Task: "t", Name: name, Image: "exec", Command: []string{"/bin/sh", "-c", script}, TimeoutSeconds: timeout}
}

func newTestRunner(t *testing.T, addr, token string) *Runner {
	t.Helper()
	conn, err := Dial(addr, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close client conn: %v", err)
		}
	})
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(pb.NewAgentClient(conn), Config{
		HardwareID: "hw-1", Actions: actions.New(actions.Deps{}).Registry(),
		HeartbeatEvery: 100 * time.Millisecond, PollEvery: 50 * time.Millisecond,
		CallTimeout: 2 * time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		TailBytes: 200, Logger: log,
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), testToken) {
		w.t.Errorf("the token appeared in a log line: %s", p)
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func runFor(t *testing.T, r *Runner, d time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.Run(ctx)
}

func TestRunActionsInOrder(t *testing.T) {
	f := &fakeAgentServer{then: "reboot", actions: []*pb.Action{
		shell("one", "echo first", 10), shell("two", "echo second", 10), {Task: "t", Name: "three", Image: "wipe", Index: 2,
			Environment: map[string]string{"DEST_DISK": writeTemp(t, 4096)}},
	}}
	for i, a := range f.actions {
		a.Index = int32(i)
	}
	addr, _ := serve(t, f, "127.0.0.1:0")
	then, err := runFor(t, newTestRunner(t, addr, testToken), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"one:RUNNING", "one:SUCCEEDED", "two:RUNNING", "two:SUCCEEDED", "three:RUNNING", "three:SUCCEEDED"}, f.reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[int32]string{0: "first\n", 1: "second\n"}, map[int32]string{0: f.logs[0], 1: f.logs[1]}); diff != "" {
		t.Errorf("streamed logs (-want +got):\n%s", diff)
	}
	if !strings.Contains(f.logs[2], "wipe: ") {
		t.Errorf("wipe output not streamed: %q", f.logs[2])
	}
	if then != "reboot" {
		t.Errorf("then = %q, want reboot", then)
	}
	if f.authFails != 0 {
		t.Errorf("%d calls without a valid token", f.authFails)
	}
}

func writeTemp(t *testing.T, size int) string {
	p := t.TempDir() + "/disk"
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunFailureReportsTail(t *testing.T) {
	f := &fakeAgentServer{then: "none", actions: []*pb.Action{
		shell("noisy", `for i in $(seq 1 100); do echo "line $i"; done; echo "disk on fire" >&2; exit 7`, 10),
		shell("never", "echo should not run", 10),
	}}
	addr, _ := serve(t, f, "127.0.0.1:0")
	then, err := runFor(t, newTestRunner(t, addr, testToken), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"noisy:RUNNING", "noisy:FAILED"}, f.reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	tail := f.tails["noisy"]
	if len(tail) > 200+4 || !strings.HasSuffix(tail, "line 100\ndisk on fire\n") || strings.Contains(tail, "line 1\n") || !strings.HasPrefix(tail, "...\nline ") {
		t.Errorf("tail not the bounded end of the output, cut at a line: %q", tail)
	}
	if !strings.Contains(f.messages["noisy"], "exit status 7") {
		t.Errorf("message = %q", f.messages["noisy"])
	}
	if !strings.Contains(f.logs[0], "line 1\n") {
		t.Errorf("full output was not streamed")
	}
	if then != "none" {
		t.Errorf("then = %q", then)
	}
}

func TestRunTimeoutAndUnknownImage(t *testing.T) {
	f := &fakeAgentServer{actions: []*pb.Action{shell("slow", "echo begin; sleep 20", 1)}}
	addr, _ := serve(t, f, "127.0.0.1:0")
	start := time.Now()
	if _, err := runFor(t, newTestRunner(t, addr, testToken), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("timeout took %v", d)
	}
	f.mu.Lock()
	if diff := cmp.Diff([]string{"slow:RUNNING", "slow:TIMED_OUT"}, f.reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if !strings.Contains(f.messages["slow"], "timed out after 1s") || f.tails["slow"] != "begin\n" {
		t.Errorf("message %q, tail %q", f.messages["slow"], f.tails["slow"])
	}
	f.mu.Unlock()

	g := &fakeAgentServer{actions: []*pb.Action{{Name: "docker", Image: "docker.io/library/ubuntu:22.04"}}}
	addr2, _ := serve(t, g, "127.0.0.1:0")
	if _, err := runFor(t, newTestRunner(t, addr2, testToken), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if diff := cmp.Diff([]string{"docker:RUNNING", "docker:FAILED"}, g.reports); diff != "" || !strings.Contains(g.messages["docker"], "not a built-in action") {
		t.Errorf("reports %v, message %q", g.reports, g.messages["docker"])
	}
}

func TestRunSurvivesProvisiondRestart(t *testing.T) {
	f := &fakeAgentServer{then: "poweroff", oldServer: true, actions: []*pb.Action{
		shell("before", "echo a", 10),
		shell("during", "echo started; sleep 2; echo finished", 30),
		shell("after", "echo c", 10),
	}}
	for i, a := range f.actions {
		a.Index = int32(i)
	}
	addr, stop := serve(t, f, "127.0.0.1:0")
	r := newTestRunner(t, addr, testToken)
	type result struct {
		then string
		err  error
	}
	res := make(chan result, 1)
	go func() { th, err := runFor(t, r, 60*time.Second); res <- result{th, err} }()

	// Wait for "during" to run, then take provisiond away for longer than
	// the action lasts, so its report has to wait for the restart.
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.next == 1 && len(f.reports) == 3 })
	stop()
	t.Log("provisiond stopped")
	time.Sleep(3 * time.Second)
	serve(t, f, addr)
	t.Log("provisiond restarted")

	got := <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"before:RUNNING", "before:SUCCEEDED", "during:RUNNING", "during:SUCCEEDED", "after:RUNNING", "after:SUCCEEDED"}, f.reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if f.tails["during"] != "started\nfinished\n" {
		t.Errorf("tail of the action across the restart = %q", f.tails["during"])
	}
	if got.then != "poweroff" {
		t.Errorf("then = %q", got.then)
	}
}

func TestRunCancelledByHeartbeat(t *testing.T) {
	f := &fakeAgentServer{actions: []*pb.Action{shell("long", "echo working; sleep 60", 120), shell("next", "echo no", 10)}}
	addr, _ := serve(t, f, "127.0.0.1:0")
	r := newTestRunner(t, addr, testToken)
	res := make(chan error, 1)
	go func() { _, err := runFor(t, r, 60*time.Second); res <- err }()
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.reports) == 1 })
	start := time.Now()
	f.mu.Lock()
	f.cancelled = true
	f.mu.Unlock()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancel took %v", d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"long:RUNNING", "long:CANCELLED"}, f.reports); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if f.heartbeats == 0 {
		t.Error("no heartbeat")
	}
}

func TestRunRefusedToken(t *testing.T) {
	f := &fakeAgentServer{actions: []*pb.Action{shell("x", "true", 1)}}
	addr, _ := serve(t, f, "127.0.0.1:0")
	_, err := runFor(t, newTestRunner(t, addr, "wrong-token"), 10*time.Second)
	if status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
		t.Fatalf("err = %v, want Unauthenticated", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTail(t *testing.T) {
	tests := map[string]struct {
		writes []string
		max    int
		want   string
	}{
		"short":          {[]string{"a\n", "b\n"}, 10, "a\nb\n"},
		"cut at newline": {[]string{"line1\nline2\nline3\n"}, 10, "...\nline3\n"},
		"no newline":     {[]string{"abcdefghijklmnop"}, 4, "...\nmnop"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tl := newTail(tc.max)
			for _, w := range tc.writes {
				if _, err := fmt.Fprint(tl, w); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tc.want, tl.String()); diff != "" {
				t.Error(diff)
			}
		})
	}
}

// kexecRunner is a test runner whose kexec action succeeds without
// loading anything (the real load needs a booted VM), keeping Then.
func kexecRunner(t *testing.T, addr string) *Runner {
	r := newTestRunner(t, addr, testToken)
	reg := actions.Registry{}
	for k, v := range r.cfg.Actions {
		reg[k] = v
	}
	k := reg["kexec"]
	k.Run = func(ctx context.Context, s actions.Spec, out io.Writer) error { return nil }
	reg["kexec"] = k
	r.cfg.Actions = reg
	return r
}

// TestEndingActions: kexec returns "kexec" only once its success report
// was taken (roadmap#29), and reboot leaves the decision to provisiond's
// answer: nothing with a BMC, a reboot without.
func TestEndingActions(t *testing.T) {
	tests := map[string]struct {
		image      string
		then       string // provisiond's answer once all actions are done
		refuse     int
		refuseCode codes.Code
		want       string
		wantNext   int // actions whose success provisiond recorded
	}{
		"kexec after a refused report": {image: "quay.io/tinkerbell/actions/kexec:v1.0.0", then: "none", refuse: 3, refuseCode: codes.Unavailable, want: "kexec", wantNext: 1},
		"kexec, acknowledgement lost":  {image: "kexec", then: "kexec", refuse: 1, refuseCode: codes.FailedPrecondition, want: "kexec", wantNext: 1},
		"reboot with a BMC":            {image: "quay.io/tinkerbell/actions/reboot:v1.0.0", then: "none", want: "none", wantNext: 1},
		"reboot without a BMC":         {image: "reboot", then: "reboot", want: "reboot", wantNext: 1},
		"poweroff without a BMC":       {image: "poweroff", then: "poweroff", want: "poweroff", wantNext: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := &fakeAgentServer{then: tc.then, refuseSuccess: tc.refuse, refuseCode: tc.refuseCode, actions: []*pb.Action{
				{Task: "t", Name: "end", Image: tc.image, TimeoutSeconds: 10,
					Environment: map[string]string{"BLOCK_DEVICE": "/dev/sda2", "KERNEL_PATH": "/boot/vmlinuz", "CMD_LINE": "ro"}},
			}}
			addr, _ := serve(t, f, "127.0.0.1:0")
			then, err := runFor(t, kexecRunner(t, addr), 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if then != tc.want {
				t.Errorf("then = %q, want %q", then, tc.want)
			}
			if f.refused != tc.refuse {
				t.Errorf("%d reports refused, want %d", f.refused, tc.refuse)
			}
			if f.next != tc.wantNext {
				t.Errorf("provisiond recorded %d successes, want %d (reports %v)", f.next, tc.wantNext, f.reports)
			}
		})
	}
}

func TestThenOf(t *testing.T) {
	tests := map[string]struct {
		resp *pb.GetActionResponse
		want string
	}{
		"enum none":                  {&pb.GetActionResponse{OnDone: pb.Then_THEN_NONE}, "none"},
		"enum reboot":                {&pb.GetActionResponse{OnDone: pb.Then_THEN_REBOOT}, "reboot"},
		"enum poweroff":              {&pb.GetActionResponse{OnDone: pb.Then_THEN_POWEROFF}, "poweroff"},
		"enum kexec":                 {&pb.GetActionResponse{OnDone: pb.Then_THEN_KEXEC}, "kexec"},
		"enum wins over the string":  {&pb.GetActionResponse{OnDone: pb.Then_THEN_NONE, Then: "reboot"}, "none"}, //nolint:staticcheck // the fallback under test
		"older provisiond: reboot":   {&pb.GetActionResponse{Then: "reboot"}, "reboot"},                          //nolint:staticcheck // the fallback under test
		"older provisiond: kexec":    {&pb.GetActionResponse{Then: "kexec"}, "kexec"},                            //nolint:staticcheck // the fallback under test
		"older provisiond: none":     {&pb.GetActionResponse{Then: "none"}, "none"},                              //nolint:staticcheck // the fallback under test
		"older provisiond: unknown":  {&pb.GetActionResponse{Then: "dance"}, "none"},                             //nolint:staticcheck // the fallback under test
		"nothing said":               {&pb.GetActionResponse{}, "none"},
		"enum unknown to this agent": {&pb.GetActionResponse{OnDone: pb.Then(99)}, "none"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := thenOf(tc.resp); got != tc.want {
				t.Errorf("thenOf(%v) = %q, want %q", tc.resp, got, tc.want)
			}
		})
	}
}

// TestBeforeAction: the hook runs once before each action, and what it
// writes is part of that action's output.
func TestBeforeAction(t *testing.T) {
	f := &fakeAgentServer{then: "reboot", actions: []*pb.Action{shell("one", "echo first", 10), shell("two", "echo second", 10)}}
	for i, a := range f.actions {
		a.Index = int32(i)
	}
	addr, _ := serve(t, f, "127.0.0.1:0")
	r := newTestRunner(t, addr, testToken)
	calls := 0
	r.cfg.BeforeAction = func(out io.Writer) {
		calls++
		_, _ = fmt.Fprintf(out, "links %d\n", calls)
	}
	if _, err := runFor(t, r, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if calls != 2 {
		t.Errorf("BeforeAction ran %d times for 2 actions", calls)
	}
	if diff := cmp.Diff(map[int32]string{0: "links 1\nfirst\n", 1: "links 2\nsecond\n"}, map[int32]string{0: f.logs[0], 1: f.logs[1]}); diff != "" {
		t.Errorf("streamed logs (-want +got):\n%s", diff)
	}
}
