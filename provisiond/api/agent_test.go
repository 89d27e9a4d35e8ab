package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/fakepower"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const wfTestTemplate = `version: "0.1"
name: t
global_timeout: 600
tasks:
  - name: install
    actions:
      - name: image
        image: image2disk
        timeout: 60
        environment:
          IMG_URL: "http://127.0.0.1/{{ .Params.image }}"
          DEST_DISK: "{{ .Hardware.Disks 0 }}"
      - name: hello
        image: exec
        timeout: 60
        command: [echo, hello]
`

// TestAgentAndMachineRPCs drives a provision over real gRPC on loopback:
// the Admin machine RPCs, WatchMachine streaming, and an agent that
// authenticates with its workflow token.
func TestAgentAndMachineRPCs(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := teststore.Open(t)
	eng := workflow.New(st, log, prometheus.NewRegistry(), fakepower.New(), workflow.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- eng.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("engine: %v", err)
		}
	}()

	auth := NewAuth("admin-secret", false, log, nil)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(auth.Unary), grpc.ChainStreamInterceptor(auth.Stream))
	pb.RegisterAdminServer(srv, NewAdmin(st, log, Options{Machines: eng}))
	pb.RegisterAgentServer(srv, NewAgent(eng, log, prometheus.NewRegistry()))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close client conn: %v", err)
		}
	}()
	admin, agentc := pb.NewAdminClient(conn), pb.NewAgentClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer admin-secret")

	if _, err := admin.CreateHardware(actx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Id: "n1", Hostname: "n1", Disks: []string{"/dev/vda"}, Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01"}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateTemplate(actx, &pb.CreateTemplateRequest{Template: &pb.Template{Id: "t", Name: "t", Content: wfTestTemplate}}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.ProvisionMachine(actx, &pb.ProvisionMachineRequest{HardwareId: "n1", TemplateId: "t"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("provision without the image parameter: %v, want InvalidArgument", err)
	}
	// A dry run checks what a provision would and stores nothing, also
	// when the hardware holds a machine (a plan of a replace).
	dryRun := func(params map[string]string) (*pb.Machine, error) {
		return admin.ProvisionMachine(actx, &pb.ProvisionMachineRequest{HardwareId: "n1", TemplateId: "t", Parameters: params, DryRun: true})
	}
	if _, err := dryRun(nil); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "check machine") || !strings.Contains(err.Error(), "image") {
		t.Fatalf("dry run without the image parameter: %v, want InvalidArgument naming it", err)
	}
	if dm, err := dryRun(map[string]string{"image": "a.raw"}); err != nil || len(dm.GetWorkflow().GetActions()) != 2 || dm.GetWorkflow().GetId() != "" {
		t.Fatalf("dry run: %v, %v; want 2 actions and no workflow id", dm, err)
	}
	if _, err := admin.GetMachine(actx, &pb.GetMachineRequest{HardwareId: "n1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("machine after dry runs: %v, want NotFound", err)
	}
	m, err := admin.ProvisionMachine(actx, &pb.ProvisionMachineRequest{HardwareId: "n1", TemplateId: "t", Parameters: map[string]string{"image": "a.raw"}})
	if err != nil {
		t.Fatal(err)
	}
	if dm, err := dryRun(map[string]string{"image": "b.raw"}); err != nil || dm.GetWorkflow().GetActions()[0].GetName() != "image" {
		t.Fatalf("dry run on held hardware: %v, %v", dm, err)
	}
	wfID := m.GetWorkflow().GetId()

	watch, err := admin.WatchMachine(actx, &pb.WatchMachineRequest{HardwareId: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan []*pb.Event, 1)
	go func() {
		var all []*pb.Event
		for {
			ev, err := watch.Recv()
			if err != nil {
				events <- all
				return
			}
			all = append(all, ev)
		}
	}()

	// Wait until the engine waits for the agent, then mint its token.
	var token string
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, tok, err := eng.MintAgentToken(ctx, "n1")
		if err == nil {
			token = tok
			break
		}
		if !errors.Is(err, workflow.ErrNotReady) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, err := agentc.GetAction(ctx, &pb.GetActionRequest{HardwareId: "n1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetAction without token: %v, want Unauthenticated", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+wfID+".forged")
	if _, err := agentc.GetAction(bad, &pb.GetActionRequest{HardwareId: "n1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetAction with a forged token: %v, want Unauthenticated", err)
	}
	if _, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: "n1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetMachine without the admin token: %v, want Unauthenticated", err)
	}

	gctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if hb, err := agentc.Heartbeat(gctx, &pb.HeartbeatRequest{WorkflowId: wfID, HardwareId: "n1"}); err != nil || hb.GetCancelled() {
		t.Fatalf("heartbeat: %v, %v", hb, err)
	}
	var got []string
	for {
		resp, err := agentc.GetAction(gctx, &pb.GetActionRequest{HardwareId: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetDone() {
			if resp.GetOnDone() != pb.Then_THEN_REBOOT || resp.GetThen() != "reboot" {
				t.Errorf("on_done = %v, then = %q, want THEN_REBOOT and reboot (no BMC)", resp.GetOnDone(), resp.GetThen())
			}
			break
		}
		a := resp.GetAction()
		got = append(got, a.GetTask()+"/"+a.GetName()+":"+a.GetImage())
		logs, err := agentc.StreamLogs(gctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := logs.Send(&pb.LogChunk{WorkflowId: wfID, Index: a.GetIndex(), Data: []byte("output of " + a.GetName())}); err != nil {
			t.Fatal(err)
		}
		if _, err := logs.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
		if _, err := agentc.ReportAction(gctx, &pb.ReportActionRequest{WorkflowId: wfID, Index: a.GetIndex(), Task: a.GetTask(), Action: a.GetName(),
			State: pb.State_STATE_SUCCEEDED, Attempt: a.GetAttempt()}); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"install/image:image2disk", "install/hello:exec"}, got); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}

	var all []*pb.Event
	select {
	case all = <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("WatchMachine did not end with the workflow")
	}
	last := all[len(all)-1]
	if last.GetState() != pb.State_STATE_SUCCEEDED || last.GetWorkflow().GetState() != pb.State_STATE_SUCCEEDED {
		t.Errorf("last event %v", last)
	}
	logs := 0
	for _, e := range all {
		if e.GetType() == "log" {
			logs++
		}
	}
	if logs != 2 {
		t.Errorf("log events = %d, want 2", logs)
	}
	pm, err := admin.GetMachine(actx, &pb.GetMachineRequest{HardwareId: "n1"})
	if err != nil || pm.GetProvisionedAt() == nil {
		t.Errorf("machine after success: %v, %v", pm, err)
	}
	if _, err := agentc.ReportAction(gctx, &pb.ReportActionRequest{Index: 0, State: pb.State_STATE_SUCCEEDED}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("report after the end: %v, want FailedPrecondition", err)
	}
	list, err := admin.ListMachines(actx, &pb.ListMachinesRequest{})
	if err != nil || len(list.GetMachines()) != 1 {
		t.Errorf("ListMachines = %v, %v", list, err)
	}

	// Deprovision with wipe none: power off, machine gone.
	dm, err := admin.DeprovisionMachine(actx, &pb.DeprovisionMachineRequest{HardwareId: "n1", Wipe: "none"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := admin.WatchMachine(actx, &pb.WatchMachineRequest{HardwareId: "n1", WorkflowId: dm.GetWorkflow().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var final *pb.Event
	for {
		ev, err := w2.Recv()
		if err != nil {
			break
		}
		final = ev
	}
	if final.GetState() != pb.State_STATE_SUCCEEDED {
		t.Errorf("deprovision ended with %v", final)
	}
	if _, err := admin.GetMachine(actx, &pb.GetMachineRequest{HardwareId: "n1"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetMachine after deprovision: %v, want NotFound", err)
	}
}
