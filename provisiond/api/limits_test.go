package api

import (
	"context"
	"errors"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const limitsToken = "limits-test-admin-token-0123456789abcdef"

// shippedServer serves Admin over loopback with exactly the options and
// listener limit provisiond runs with, and returns its address.
func shippedServer(t *testing.T, log *slog.Logger, opts Options) string {
	t.Helper()
	st := teststore.Open(t)
	srv := grpc.NewServer(ServerOptions(NewAuth(limitsToken, false, log, nil), nil, log, nil)...)
	pb.RegisterAdminServer(srv, NewAdmin(st, log, opts))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(LimitListener(lis)) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // test teardown: the server may be gone already
	return conn
}

func withToken(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+limitsToken)
}

// rawCodec sends one pre-encoded message as it is, so that the flood's
// clients share a single payload and the memory measured is the server's.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }
func (rawCodec) Name() string                         { return "proto" }

// vmRSS is the process's resident set in bytes, from /proc/self/status.
func vmRSS() (uint64, error) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line")
}

// TestUnauthenticatedFloodStaysBounded is issue 13 item 2: 300
// concurrent unauthenticated 4 MiB CreateHardware calls, each on its own
// connection, once took the daemon from 31 MiB to 3.3 GiB resident,
// because gRPC read and decoded every body before the auth interceptor
// refused it.
func TestUnauthenticatedFloodStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the loopback with 1.2 GiB")
	}
	const (
		calls   = 300
		bodyLen = 4<<20 - 64<<10 // just under gRPC's default 4 MiB limit
		limit   = 200 << 20
	)
	log := slog.New(slog.NewTextHandler(&testkit.Buffer{}, nil))
	addr := shippedServer(t, log, Options{})
	admin := pb.NewAdminClient(dial(t, addr))

	payload, err := proto.Marshal(&pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Id: "flood", Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01"}},
		Metadata: `{"k":"` + strings.Repeat("x", bodyLen) + `"}`,
	}})
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*grpc.ClientConn, calls)
	for i := range conns {
		conns[i] = dial(t, addr)
	}

	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rssBefore, err := vmRSS()
	if err != nil {
		t.Skipf("cannot read resident memory: %v", err)
	}
	rssBefore <<= 10
	heapBefore := ms.HeapInuse
	var peakRSS, peakHeap uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			rss, _ := vmRSS() // read fine before the flood
			peakRSS, peakHeap = max(peakRSS, rss<<10), max(peakHeap, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	codesSeen := make(chan codes.Code, calls)
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Go(func() {
			var out pb.Hardware
			err := conn.Invoke(ctx, "/baremetal.v1.Admin/CreateHardware", payload, &out, grpc.ForceCodecV2(rawCodec{}))
			codesSeen <- status.Code(err)
		})
	}
	// The admin must still get through while the flood is on.
	during := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := admin.ListHardware(withToken(cctx), &pb.ListHardwareRequest{})
		during <- err
	}()
	wg.Wait()
	close(stop)
	<-sampled
	close(codesSeen)
	for c := range codesSeen {
		if c != codes.Unauthenticated {
			t.Errorf("flood call: got %v, want Unauthenticated", c)
			break
		}
	}
	if err := <-during; err != nil {
		t.Errorf("authenticated call during the flood: %v", err)
	}
	if _, err := admin.ListHardware(withToken(ctx), &pb.ListHardwareRequest{}); err != nil {
		t.Errorf("authenticated call after the flood: %v", err)
	}
	grow := func(peak, before uint64) uint64 { return max(peak, before) - before }
	t.Logf("%d unauthenticated calls of %.2f MiB: RSS %d MiB before, peak %d MiB (+%d MiB); heap in use %d MiB before, peak %d MiB (+%d MiB)",
		calls, float64(len(payload))/(1<<20), rssBefore>>20, peakRSS>>20, grow(peakRSS, rssBefore)>>20, heapBefore>>20, peakHeap>>20, grow(peakHeap, heapBefore)>>20)
	if g := grow(peakRSS, rssBefore); g > limit {
		t.Errorf("resident memory grew by %d MiB during the flood; want under %d MiB", g>>20, limit>>20)
	}
}

// panicky is a Machines whose Provision panics with a secret in the value.
type panicky struct{}

func (panicky) Provision(context.Context, store.Machine) (store.Machine, error) {
	panic("boom: user-data-secret-42")
}
func (panicky) Reinstall(context.Context, store.Machine, bool) (store.Machine, error) {
	panic("boom: user-data-secret-42")
}
func (panicky) CheckProvision(context.Context, store.Machine) (store.Workflow, error) {
	panic("boom: user-data-secret-42")
}
func (panicky) Deprovision(context.Context, string, string) (store.Machine, error) {
	var m map[string]int
	m["nil map"]++ //nolint:staticcheck // the point: a runtime error, whose text is safe to log
	return store.Machine{}, nil
}

// TestPanicBecomesInternal: a handler's panic fails that call with
// Internal, is logged with its method but not the request, and the
// server keeps answering.
func TestPanicBecomesInternal(t *testing.T) {
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	admin := pb.NewAdminClient(dial(t, shippedServer(t, log, Options{Machines: panicky{}})))
	ctx := withToken(context.Background())

	_, err := admin.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: "n1", TemplateId: "t1", UserData: "user-data-secret-42"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panicking ProvisionMachine: got %v, want Internal", err)
	}
	_, err = admin.DeprovisionMachine(ctx, &pb.DeprovisionMachineRequest{HardwareId: "n1"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panicking DeprovisionMachine: got %v, want Internal", err)
	}
	if _, err := admin.ListHardware(ctx, &pb.ListHardwareRequest{}); err != nil {
		t.Fatalf("call after the panics: %v", err)
	}
	out := logs.String()
	for _, want := range []string{"method=/baremetal.v1.Admin/ProvisionMachine", "method=/baremetal.v1.Admin/DeprovisionMachine", "assignment to entry in nil map", "level=ERROR"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "user-data-secret-42") {
		t.Errorf("log shows the request or panic value:\n%s", out)
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

func TestStreamPanicBecomesInternal(t *testing.T) {
	logs := &testkit.Buffer{}
	icpt := recoverStream(slog.New(slog.NewTextHandler(logs, nil)))
	err := icpt(nil, ctxStream{ctx: context.Background()}, &grpc.StreamServerInfo{FullMethod: "/baremetal.v1.Admin/WatchMachine"},
		func(any, grpc.ServerStream) error { panic("stream secret") })
	if status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want Internal", err)
	}
	if out := logs.String(); !strings.Contains(out, "method=/baremetal.v1.Admin/WatchMachine") || strings.Contains(out, "stream secret") {
		t.Errorf("log:\n%s", out)
	}
}

// TestLargeFieldsRefused: fields over MaxFieldBytes are refused with a
// message naming them, and messages over MaxMessageBytes by gRPC itself.
func TestLargeFieldsRefused(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&testkit.Buffer{}, nil))
	admin := pb.NewAdminClient(dial(t, shippedServer(t, log, Options{Machines: panicky{}})))
	ctx := withToken(context.Background())
	big := strings.Repeat("x", MaxFieldBytes)
	hw := func(meta string) *pb.Hardware {
		return &pb.Hardware{Id: "n1", Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01"}}, Metadata: meta}
	}

	for name, tc := range map[string]struct {
		call func() error
		code codes.Code
		msg  string
	}{
		"metadata": {func() error {
			_, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw(`{"k":"` + big + `"}`)})
			return err
		}, codes.InvalidArgument, "hardware.metadata is 1048584 bytes; the limit is 1048576"},
		"update metadata": {func() error {
			_, err := admin.UpdateHardware(ctx, &pb.UpdateHardwareRequest{Hardware: hw(`{"k":"` + big + `"}`)})
			return err
		}, codes.InvalidArgument, "hardware.metadata is"},
		"template": {func() error {
			_, err := admin.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Name: "t", Content: "#" + big}})
			return err
		}, codes.InvalidArgument, "template.content is"},
		"validate": {func() error {
			_, err := admin.ValidateTemplate(ctx, &pb.ValidateTemplateRequest{Content: "#" + big})
			return err
		}, codes.InvalidArgument, "content is"},
		"user_data": {func() error {
			_, err := admin.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: "n1", TemplateId: "t", UserData: big + "x"})
			return err
		}, codes.InvalidArgument, "user_data is"},
		"message": {func() error {
			_, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw(big + big)})
			return err
		}, codes.ResourceExhausted, "larger than max"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v, want %v with %q", err, tc.code, tc.msg)
			}
		})
	}
	// Just under the limit still works.
	if _, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw(`{"k":"` + big[:MaxFieldBytes-16] + `"}`)}); err != nil {
		t.Errorf("metadata under the limit: %v", err)
	}
}

// TestTapRefusesBeforeReading: the tap turns away admin calls without the
// right token and agent calls without any, and lets the rest through.
func TestTapRefusesBeforeReading(t *testing.T) {
	a := NewAuth(limitsToken, false, slog.New(slog.NewTextHandler(&testkit.Buffer{}, nil)), nil)
	for name, tc := range map[string]struct {
		method, auth string
		want         codes.Code
	}{
		"admin without token": {"/baremetal.v1.Admin/CreateHardware", "", codes.Unauthenticated},
		"admin wrong token":   {"/baremetal.v1.Admin/CreateHardware", "Bearer nope", codes.Unauthenticated},
		"admin right token":   {"/baremetal.v1.Admin/CreateHardware", "Bearer " + limitsToken, codes.OK},
		"agent without token": {"/baremetal.v1.Agent/GetAction", "", codes.Unauthenticated},
		"agent huge token":    {"/baremetal.v1.Agent/GetAction", "Bearer " + strings.Repeat("x", 4096), codes.Unauthenticated},
		"agent some token":    {"/baremetal.v1.Agent/GetAction", "Bearer wf.abc", codes.OK},
		"health":              {"/grpc.health.v1.Health/Check", "", codes.OK},
	} {
		t.Run(name, func(t *testing.T) {
			md := metadata.MD{}
			if tc.auth != "" {
				md.Set("authorization", tc.auth)
			}
			_, err := a.Tap(context.Background(), &tap.Info{FullMethodName: tc.method, Header: md})
			if status.Code(err) != tc.want {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// knownTokens stands in for the workflow engine's token check.
type knownTokens map[string]bool

func (k knownTokens) CheckAgentToken(_ context.Context, tok string) error {
	if !k[tok] {
		return errors.New("unknown token")
	}
	return nil
}

// TestTapChecksAgentTokens: with the engine's check, a junk agent token is
// refused on the headers, so its body is never read.
func TestTapChecksAgentTokens(t *testing.T) {
	a := NewAuth(limitsToken, false, slog.New(slog.NewTextHandler(&testkit.Buffer{}, nil)), nil).
		WithAgentTokens(knownTokens{"wf.good": true})
	for tok, want := range map[string]codes.Code{"wf.good": codes.OK, "wf.junk": codes.Unauthenticated} {
		md := metadata.Pairs("authorization", "Bearer "+tok)
		_, err := a.Tap(context.Background(), &tap.Info{FullMethodName: "/baremetal.v1.Agent/ReportAction", Header: md})
		if status.Code(err) != want {
			t.Errorf("token %s: got %v, want %v", tok, err, want)
		}
	}
}
