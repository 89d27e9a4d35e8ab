package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// answerPower answers power-state reads with state or err, and counts them.
type answerPower struct {
	state string
	err   error
	reads []string
}

func (p *answerPower) PowerState(_ context.Context, hw store.Hardware) (string, error) {
	p.reads = append(p.reads, hw.ID)
	return p.state, p.err
}
func (p *answerPower) SetPower(context.Context, store.Hardware, string) error {
	return errors.New("not here")
}
func (p *answerPower) SetBootDevice(context.Context, store.Hardware, string, bool, bool) error {
	return errors.New("not here")
}

// TestCreateHardwareVerifiesBMC: verify_bmc reads the BMC's power state
// before anything is stored; a refusal is FailedPrecondition naming the
// BMC's address (with the driver's port when none is set) and what it
// said, and stores nothing; the manual driver and verify_bmc = false ask
// no BMC.
func TestCreateHardwareVerifiesBMC(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // test store
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hw := func(id, driver string, n byte) *pb.Hardware {
		return &pb.Hardware{Id: id, Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:0" + string('0'+n)}},
			Bmc: &pb.BMC{Driver: driver, Address: "10.0.1.5", Username: "admin", Password: "pw"}}
	}

	refusing := &answerPower{err: errors.New("RAKP 2 HMAC is invalid")}
	a := NewAdmin(st, log, Options{Power: refusing})
	_, err = a.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw("n1", "ipmi", 1), VerifyBmc: true})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ipmi BMC at 10.0.1.5:623 refused") || !strings.Contains(err.Error(), "RAKP 2 HMAC is invalid") {
		t.Errorf("create with a refusing BMC: %v, want FailedPrecondition naming 10.0.1.5:623 and the refusal", err)
	}
	if _, err := st.GetHardware(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("hardware after a failed check: %v, want not found", err)
	}
	redfish := hw("n2", "redfish", 2)
	redfish.Bmc.Port = 8443
	if _, err = a.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: redfish, VerifyBmc: true}); !strings.Contains(fmt.Sprint(err), "redfish BMC at 10.0.1.5:8443 refused") {
		t.Errorf("create with a refusing Redfish BMC: %v, want its address and port", err)
	}
	// Nothing to ask, or asked not to.
	if _, err := a.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw("n3", "manual", 3), VerifyBmc: true}); err != nil {
		t.Errorf("manual driver with verify_bmc: %v", err)
	}
	if _, err := a.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw("n4", "ipmi", 4)}); err != nil {
		t.Errorf("ipmi without verify_bmc: %v", err)
	}
	if len(refusing.reads) != 2 {
		t.Errorf("BMC reads %v: want n1 and n2 only", refusing.reads)
	}

	answering := &answerPower{state: "on"}
	a = NewAdmin(st, log, Options{Power: answering})
	if _, err := a.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw("n5", "ipmi", 5), VerifyBmc: true}); err != nil {
		t.Fatalf("create with an answering BMC: %v", err)
	}
	if h, err := st.GetHardware(ctx, "n5"); err != nil || h.Power != "on" || h.PowerSeenAt.IsZero() {
		t.Errorf("n5: power %q seen %v (%v): want the state the check read", h.Power, h.PowerSeenAt, err)
	}

	a = NewAdmin(st, log, Options{})
	if _, err := a.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw("n6", "ipmi", 6), VerifyBmc: true}); status.Code(err) != codes.Unimplemented {
		t.Errorf("verify without a BMC controller: %v, want Unimplemented", err)
	}
}
