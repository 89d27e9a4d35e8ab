package api

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestListWorkflowsAfterHardwareDeleted: a destroy deletes the hardware
// record but the store keeps its workflows for --retention; they are
// listed by the hardware id still (`provisiond ctl workflows server-1`
// after a terraform destroy, as the first-rack guide says). An id that
// never had hardware is not found.
func TestListWorkflowsAfterHardwareDeleted(t *testing.T) {
	ctx := context.Background()
	st := teststore.Open(t)
	admin := NewAdmin(st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	in := &pb.Hardware{Id: "server-1", Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01"}}}
	if _, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: in}); err != nil {
		t.Fatal(err)
	}
	if resp, err := admin.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: "server-1"}); err != nil || len(resp.GetWorkflows()) != 0 {
		t.Fatalf("hardware without workflows: %v %v, want an empty list", resp, err)
	}
	err := st.Update(ctx, func(tx *store.Tx) error {
		for i, id := range []string{"wf-install", "wf-wipe"} {
			w := store.Workflow{ID: id, HardwareID: "server-1", State: store.StateSucceeded, CreatedAt: time.Unix(int64(1000+i), 0)}
			if err := tx.PutWorkflow(w); err != nil {
				return err
			}
		}
		return tx.DeleteHardware("server-1")
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := admin.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: "server-1"})
	if err != nil {
		t.Fatalf("workflows of deleted hardware: %v", err)
	}
	var ids []string
	for _, w := range resp.GetWorkflows() {
		ids = append(ids, w.GetId())
	}
	if len(ids) != 2 || ids[0] != "wf-install" || ids[1] != "wf-wipe" {
		t.Errorf("workflows of deleted hardware: %v, want [wf-install wf-wipe]", ids)
	}
	if _, err := admin.ListWorkflows(ctx, &pb.ListWorkflowsRequest{HardwareId: "never"}); status.Code(err) != codes.NotFound {
		t.Errorf("an id that never had hardware: %v, want NotFound", err)
	}
}
