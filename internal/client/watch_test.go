package client

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeAdmin answers WatchMachine with one scripted stream per call (the
// last one again once they run out) and GetMachine with a scripted answer.
type fakeAdmin struct {
	pb.AdminClient
	streams  []stream
	calls    int
	machine  *pb.Machine
	getErr   error
	requests []*pb.WatchMachineRequest
}

// stream is the events of one WatchMachine call and how it ends.
type stream struct {
	events []*pb.Event
	end    error
}

func (f *fakeAdmin) WatchMachine(_ context.Context, req *pb.WatchMachineRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[pb.Event], error) {
	f.requests = append(f.requests, req)
	s := f.streams[min(f.calls, len(f.streams)-1)]
	f.calls++
	return &fakeStream{s: s}, nil
}

func (f *fakeAdmin) GetMachine(context.Context, *pb.GetMachineRequest, ...grpc.CallOption) (*pb.Machine, error) {
	return f.machine, f.getErr
}

type fakeStream struct {
	grpc.ClientStream
	s    stream
	next int
}

func (s *fakeStream) Recv() (*pb.Event, error) {
	if s.next < len(s.s.events) {
		s.next++
		return s.s.events[s.next-1], nil
	}
	return nil, s.s.end
}

func (s *fakeStream) Header() (metadata.MD, error) { return nil, nil }
func (s *fakeStream) Trailer() metadata.MD         { return nil }
func (s *fakeStream) CloseSend() error             { return nil }
func (s *fakeStream) Context() context.Context     { return context.Background() }

func wf(state pb.State) *pb.Workflow { return &pb.Workflow{Id: "wf-1", State: state} }

func ev(seq uint64, typ string, w *pb.Workflow) *pb.Event {
	return &pb.Event{Seq: seq, Type: typ, Workflow: w}
}

func TestFollow(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "provisiond restarted")
	// Fresh snapshots for every use: Follow may change the last one it saw.
	running := func() *pb.Workflow { return wf(pb.State_STATE_RUNNING) }
	succeeded := func() *pb.Workflow { return wf(pb.State_STATE_SUCCEEDED) }
	failed := func() *pb.Workflow { return wf(pb.State_STATE_FAILED) }
	tests := map[string]struct {
		watch   Watch
		streams []stream
		machine *pb.Machine
		getErr  error
		want    Followed
		wantErr string
		// wantSeqs are the events handed to OnEvent.
		wantSeqs  []uint64
		wantCalls int
		wantAwait bool
	}{
		"ends with the workflow": {
			streams:  []stream{{events: []*pb.Event{ev(1, "state", running()), ev(2, "log", nil), ev(3, "state", failed())}, end: io.EOF}},
			want:     Followed{Workflow: failed()},
			wantSeqs: []uint64{1, 2, 3}, wantCalls: 1,
		},
		"a broken stream is followed again, replays skipped": {
			streams: []stream{
				{events: []*pb.Event{ev(1, "state", running()), ev(2, "log", nil)}, end: unavailable},
				{events: []*pb.Event{ev(1, "state", running()), ev(2, "log", nil), ev(3, "state", succeeded())}, end: io.EOF},
			},
			getErr:   unavailable,
			want:     Followed{Workflow: succeeded()},
			wantSeqs: []uint64{1, 2, 3}, wantCalls: 2,
		},
		"an early end is checked against the machine": {
			streams:  []stream{{events: []*pb.Event{ev(1, "state", running())}, end: io.EOF}},
			machine:  &pb.Machine{Workflow: succeeded()},
			want:     Followed{Workflow: succeeded()},
			wantSeqs: []uint64{1}, wantCalls: 1,
		},
		"a deprovision whose machine is gone succeeded": {
			watch:    Watch{Deprovision: true},
			streams:  []stream{{events: []*pb.Event{ev(1, "state", running())}, end: status.Error(codes.NotFound, "no machine")}},
			getErr:   status.Error(codes.NotFound, "no machine"),
			want:     Followed{Workflow: succeeded()},
			wantSeqs: []uint64{1}, wantCalls: 1,
		},
		"until the OS phones home": {
			watch:    Watch{UntilOSReady: true},
			streams:  []stream{{events: []*pb.Event{ev(1, "state", succeeded()), ev(2, EventOSReady, nil), ev(3, "state", succeeded())}, end: io.EOF}},
			want:     Followed{Workflow: succeeded(), OSReady: true},
			wantSeqs: []uint64{1, 2, 3}, wantCalls: 1, wantAwait: true,
		},
		"until the OS phones home, said by the machine": {
			watch:    Watch{UntilOSReady: true},
			streams:  []stream{{events: []*pb.Event{ev(1, "state", succeeded())}, end: io.EOF}},
			machine:  &pb.Machine{Workflow: succeeded(), OsReadyAt: timestamppb.Now()},
			want:     Followed{Workflow: succeeded(), OSReady: true},
			wantSeqs: []uint64{1}, wantCalls: 1, wantAwait: true,
		},
		"the machine moved on while waiting for the OS": {
			watch:    Watch{UntilOSReady: true},
			streams:  []stream{{events: []*pb.Event{ev(1, "state", succeeded())}, end: io.EOF}},
			machine:  &pb.Machine{Workflow: &pb.Workflow{Id: "wf-2"}},
			want:     Followed{Workflow: succeeded()},
			wantErr:  "machine hw-1 moved on to workflow wf-2",
			wantSeqs: []uint64{1}, wantCalls: 1, wantAwait: true,
		},
		"TrustEnd: the end of the stream is the end": {
			watch:    Watch{TrustEnd: true},
			streams:  []stream{{events: []*pb.Event{ev(1, "state", running())}, end: io.EOF}},
			want:     Followed{Workflow: running()},
			wantSeqs: []uint64{1}, wantCalls: 1,
		},
		"TrustEnd: a broken stream is followed again": {
			watch: Watch{TrustEnd: true},
			streams: []stream{
				{events: []*pb.Event{ev(1, "state", running())}, end: unavailable},
				{events: []*pb.Event{ev(1, "state", running()), ev(2, "state", failed())}, end: io.EOF},
			},
			want:     Followed{Workflow: failed()},
			wantSeqs: []uint64{1, 2}, wantCalls: 2,
		},
		"NoFollow: no second stream": {
			watch:    Watch{NoFollow: true},
			streams:  []stream{{events: []*pb.Event{ev(1, "state", running())}, end: unavailable}},
			want:     Followed{Workflow: running()},
			wantErr:  "watch workflow wf-1: rpc error: code = Unavailable",
			wantSeqs: []uint64{1}, wantCalls: 1,
		},
		"another error ends it": {
			streams:   []stream{{end: status.Error(codes.PermissionDenied, "no")}},
			wantErr:   "watch workflow wf-1: rpc error: code = PermissionDenied",
			wantCalls: 1,
		},
		"GetMachine failing ends it": {
			streams:   []stream{{end: io.EOF}},
			getErr:    status.Error(codes.NotFound, "no machine"),
			wantErr:   "get machine hw-1: rpc error: code = NotFound",
			wantCalls: 1,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := &fakeAdmin{streams: tc.streams, machine: tc.machine, getErr: tc.getErr}
			w := tc.watch
			w.HardwareID, w.WorkflowID, w.RetryWait = "hw-1", "wf-1", time.Millisecond
			var seqs []uint64
			w.OnEvent = func(e *pb.Event) error { seqs = append(seqs, e.GetSeq()); return nil }
			awaited := false
			w.OnAwaitOS = func(*pb.Workflow) { awaited = true }
			got, err := Follow(context.Background(), f, w)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Follow: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Follow: err = %v, want %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b *pb.Workflow) bool {
				return a.GetId() == b.GetId() && a.GetState() == b.GetState()
			})); diff != "" {
				t.Errorf("Followed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantSeqs, seqs); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if f.calls != tc.wantCalls || awaited != tc.wantAwait {
				t.Errorf("WatchMachine calls %d, awaited OS %v; want %d, %v", f.calls, awaited, tc.wantCalls, tc.wantAwait)
			}
			for _, r := range f.requests {
				if r.GetUntilOsReady() != w.UntilOSReady || r.GetNoFollow() != w.NoFollow || r.GetWorkflowId() != "wf-1" || r.GetHardwareId() != "hw-1" {
					t.Errorf("request %v does not match %+v", r, w)
				}
			}
		})
	}
}

func TestFollowStopsWithContext(t *testing.T) {
	f := &fakeAdmin{streams: []stream{{end: status.Error(codes.Unavailable, "down")}}, getErr: status.Error(codes.Unavailable, "down")}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Follow(ctx, f, Watch{HardwareID: "hw-1", WorkflowID: "wf-1", RetryWait: time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
}

func TestFollowEventError(t *testing.T) {
	boom := errors.New("stdout closed")
	f := &fakeAdmin{streams: []stream{{events: []*pb.Event{ev(1, "state", wf(pb.State_STATE_RUNNING))}, end: io.EOF}}}
	_, err := Follow(context.Background(), f, Watch{HardwareID: "hw-1", WorkflowID: "wf-1", OnEvent: func(*pb.Event) error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}
