package api

import (
	"context"
	"io"
	"log/slog"
	"testing"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestUpdateKeepsNetboot: the provider sends no netboot on an update; the
// engine's netboot flags of a running install must survive it.
func TestUpdateKeepsNetboot(t *testing.T) {
	ctx := context.Background()
	st := teststore.Open(t)
	admin := NewAdmin(st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	in := &pb.Hardware{Id: "n1", Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01"}}}
	if _, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: in}); err != nil {
		t.Fatal(err)
	}
	// The engine switches netboot on for a workflow.
	err := st.Update(ctx, func(tx *store.Tx) error {
		h, err := tx.Hardware("n1")
		if err != nil {
			return err
		}
		h.Netboot = store.Netboot{AllowPXE: true, AllowWorkflow: true}
		return tx.UpdateHardware(h)
	})
	if err != nil {
		t.Fatal(err)
	}
	in.Labels = map[string]string{"rack": "r1"}
	if _, err := admin.UpdateHardware(ctx, &pb.UpdateHardwareRequest{Hardware: in}); err != nil {
		t.Fatal(err)
	}
	h, err := st.GetHardware(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Netboot.AllowPXE || !h.Netboot.AllowWorkflow || h.Labels["rack"] != "r1" {
		t.Errorf("after the update: netboot %+v, labels %v; want netboot kept and the label set", h.Netboot, h.Labels)
	}
}
