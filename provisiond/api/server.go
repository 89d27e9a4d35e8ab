// Package api adapts provisiond's core to gRPC: the Admin service that the
// Terraform provider uses and the Agent service of the install OS, plus the
// authentication in front of both.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Machines starts and ends machines; the workflow engine implements it.
// Both calls persist their workflow and return at once; they are not
// idempotent (a second Provision of a held hardware is ErrConflict).
type Machines interface {
	Provision(ctx context.Context, m store.Machine) (store.Machine, error)
	// Reinstall runs a new provision workflow of an existing machine in
	// place, without a deprovision; preserveData skips its quick wipe.
	Reinstall(ctx context.Context, m store.Machine, preserveData bool) (store.Machine, error)
	Deprovision(ctx context.Context, hardwareID, wipe string) (store.Machine, error)
	// CheckProvision renders and checks a provision's inputs, storing
	// nothing: the workflow it would start.
	CheckProvision(ctx context.Context, m store.Machine) (store.Workflow, error)
}

// Power drives BMCs; the bmc package implements it. Calls block until the
// BMC answers or their own timeout ends; "on" is idempotent.
type Power interface {
	PowerState(ctx context.Context, hw store.Hardware) (string, error)
	SetPower(ctx context.Context, hw store.Hardware, action string) error
	SetBootDevice(ctx context.Context, hw store.Hardware, device string, persistent, efi bool) error
}

// Options are the Admin server's collaborators; a nil one leaves its RPCs
// answering Unimplemented.
type Options struct {
	Machines Machines
	Power    Power
}

// Admin implements the Admin gRPC service.
type Admin struct {
	pb.UnimplementedAdminServer
	st   *store.Store
	log  *slog.Logger
	opts Options
	now  func() time.Time
}

// NewAdmin returns the Admin service over st.
func NewAdmin(st *store.Store, log *slog.Logger, opts Options) *Admin {
	return &Admin{st: st, log: log.With("component", "api"), opts: opts, now: func() time.Time { return time.Now().UTC() }}
}

// ---------------------------------------------------------------- hardware

func (a *Admin) allocated(tx *store.Tx, id string) bool {
	_, err := tx.Machine(id)
	return err == nil
}

// CreateHardware registers a server.
func (a *Admin) CreateHardware(ctx context.Context, req *pb.CreateHardwareRequest) (*pb.Hardware, error) {
	h, err := hardwareFromPB(req.GetHardware())
	if err != nil {
		return nil, grpcError("create hardware", err)
	}
	if h.ID == "" {
		h.ID = store.NewID()
	}
	h.CreatedAt, h.UpdatedAt = a.now(), a.now()
	if req.GetVerifyBmc() {
		if err := a.verifyBMC(ctx, &h); err != nil {
			return nil, err
		}
	}
	if err := a.st.Update(ctx, func(tx *store.Tx) error { return tx.CreateHardware(h) }); err != nil {
		return nil, grpcError("create hardware", err)
	}
	a.log.InfoContext(ctx, "hardware created", "hardware", h.ID, "hostname", h.Hostname)
	return hardwareToPB(h, false), nil
}

// VerifyBMCTimeout bounds the BMC check of CreateHardware: long enough
// for a slow BMC's login and a retry, short enough for an apply.
const VerifyBMCTimeout = 15 * time.Second

// verifyBMC reads the power state of h's BMC, if it has one to contact,
// and records it in h. A BMC that refuses the credentials or does not
// answer within VerifyBMCTimeout is FailedPrecondition, with its address
// and what it said.
func (a *Admin) verifyBMC(ctx context.Context, h *store.Hardware) error {
	driver := strings.ToLower(h.BMC.Driver)
	if driver == "" || driver == bmc.DriverManual {
		return nil
	}
	if a.opts.Power == nil {
		return status.Error(codes.Unimplemented, "create hardware: verify BMC: no BMC controller configured")
	}
	vctx, cancel := context.WithTimeout(ctx, VerifyBMCTimeout)
	defer cancel()
	start := time.Now()
	state, err := a.opts.Power.PowerState(vctx, *h)
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		what := "refused the power-state read"
		if vctx.Err() != nil {
			what = fmt.Sprintf("did not answer a power-state read within %s", VerifyBMCTimeout)
		}
		a.log.WarnContext(ctx, "hardware not created: BMC check failed", "hardware", h.ID, "bmc", bmc.Endpoint(h.BMC), "driver", driver, "err", err)
		return status.Errorf(codes.FailedPrecondition, "create hardware %s: the %s BMC at %s %s: %v", h.ID, driver, bmc.Endpoint(h.BMC), what, err)
	}
	a.log.InfoContext(ctx, "BMC checked", "hardware", h.ID, "bmc", bmc.Endpoint(h.BMC), "power", state, "took", time.Since(start).Round(time.Millisecond))
	h.Power, h.PowerSeenAt = state, a.now()
	return nil
}

// GetHardware returns one server.
func (a *Admin) GetHardware(ctx context.Context, req *pb.GetHardwareRequest) (*pb.Hardware, error) {
	var out *pb.Hardware
	err := a.st.View(ctx, func(tx *store.Tx) error {
		h, err := tx.Hardware(req.GetId())
		if err != nil {
			return err
		}
		out = hardwareToPB(h, a.allocated(tx, h.ID))
		return nil
	})
	return out, grpcError("get hardware", err)
}

// ListHardware returns all servers, or those carrying all given labels.
func (a *Admin) ListHardware(ctx context.Context, req *pb.ListHardwareRequest) (*pb.ListHardwareResponse, error) {
	out := &pb.ListHardwareResponse{}
	err := a.st.View(ctx, func(tx *store.Tx) error {
		all, err := tx.ListHardware()
		if err != nil {
			return err
		}
	next:
		for _, h := range all {
			for k, v := range req.GetLabels() {
				if got, ok := h.Labels[k]; !ok || got != v { // a label of empty value is still a label
					continue next
				}
			}
			out.Hardware = append(out.Hardware, hardwareToPB(h, a.allocated(tx, h.ID)))
		}
		return nil
	})
	return out, grpcError("list hardware", err)
}

// UpdateHardware replaces a server's record. An empty BMC password keeps
// the stored one; the power state seen is the daemon's own.
func (a *Admin) UpdateHardware(ctx context.Context, req *pb.UpdateHardwareRequest) (*pb.Hardware, error) {
	h, err := hardwareFromPB(req.GetHardware())
	if err != nil {
		return nil, grpcError("update hardware", err)
	}
	if h.ID == "" {
		return nil, grpcError("update hardware", invalid("id is required"))
	}
	var out *pb.Hardware
	err = a.st.Update(ctx, func(tx *store.Tx) error {
		old, err := tx.Hardware(h.ID)
		if err != nil {
			return err
		}
		if h.BMC.Password == "" {
			h.BMC.Password = old.BMC.Password
		}
		h.Power, h.PowerSeenAt, h.CreatedAt, h.UpdatedAt = old.Power, old.PowerSeenAt, old.CreatedAt, a.now()
		// Netboot belongs to the workflow engine, which switches it on for
		// a workflow and off when its actions are done; an update (a new
		// label, say) must not switch it off under a running install.
		h.Netboot = old.Netboot
		held := a.allocated(tx, h.ID)
		if held && !sameMACs(old, h) {
			return fmt.Errorf("hardware %q is held by a machine and its MACs cannot change: %w", h.ID, store.ErrInUse)
		}
		if err := tx.UpdateHardware(h); err != nil {
			return err
		}
		out = hardwareToPB(h, held)
		return nil
	})
	return out, grpcError("update hardware", err)
}

func sameMACs(a, b store.Hardware) bool {
	if len(a.Interfaces) != len(b.Interfaces) {
		return false
	}
	for i := range a.Interfaces {
		if a.Interfaces[i].MAC != b.Interfaces[i].MAC {
			return false
		}
	}
	return true
}

// DeleteHardware removes a server; refused while a machine holds it.
func (a *Admin) DeleteHardware(ctx context.Context, req *pb.DeleteHardwareRequest) (*pb.DeleteHardwareResponse, error) {
	err := a.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteHardware(req.GetId()) })
	if err != nil {
		return nil, grpcError("delete hardware", err)
	}
	a.log.InfoContext(ctx, "hardware deleted", "hardware", req.GetId())
	return &pb.DeleteHardwareResponse{}, nil
}

// ---------------------------------------------------------------- templates

// ValidateTemplate parses content with the same code the workflow engine
// runs and returns its task and action names.
func (a *Admin) ValidateTemplate(ctx context.Context, req *pb.ValidateTemplateRequest) (*pb.ValidateTemplateResponse, error) {
	tasks, err := parseTemplate(req.GetContent())
	if err != nil {
		return nil, grpcError("validate template", err)
	}
	return &pb.ValidateTemplateResponse{Tasks: tasks}, nil
}

// CreateTemplate stores a validated template.
func (a *Admin) CreateTemplate(ctx context.Context, req *pb.CreateTemplateRequest) (*pb.Template, error) {
	in := req.GetTemplate()
	tasks, err := parseTemplate(in.GetContent())
	if err != nil {
		return nil, grpcError("create template", err)
	}
	t := store.Template{ID: in.GetId(), Name: in.GetName(), Content: in.GetContent(), CreatedAt: a.now(), UpdatedAt: a.now()}
	if t.Name == "" {
		return nil, grpcError("create template", invalid("name is required"))
	}
	if t.ID != "" && !idRE.MatchString(t.ID) {
		return nil, grpcError("create template", invalid("id %q: use 1-64 letters, digits, '.', '_' or '-'", t.ID))
	}
	if t.ID == "" {
		t.ID = store.NewID()
	}
	if err := a.st.Update(ctx, func(tx *store.Tx) error { return tx.CreateTemplate(t) }); err != nil {
		return nil, grpcError("create template", err)
	}
	a.log.InfoContext(ctx, "template created", "template", t.ID, "name", t.Name)
	return templateToPB(t, tasks), nil
}

// GetTemplate returns one template.
func (a *Admin) GetTemplate(ctx context.Context, req *pb.GetTemplateRequest) (*pb.Template, error) {
	t, err := a.st.GetTemplate(ctx, req.GetId())
	if err != nil {
		return nil, grpcError("get template", err)
	}
	tasks, _ := parseTemplate(t.Content) // stored content was valid when written
	return templateToPB(t, tasks), nil
}

// ListTemplates returns all templates.
func (a *Admin) ListTemplates(ctx context.Context, _ *pb.ListTemplatesRequest) (*pb.ListTemplatesResponse, error) {
	all, err := store.Read(ctx, a.st, func(tx *store.Tx) ([]store.Template, error) { return tx.ListTemplates() })
	if err != nil {
		return nil, grpcError("list templates", err)
	}
	out := &pb.ListTemplatesResponse{}
	for _, t := range all {
		tasks, _ := parseTemplate(t.Content)
		out.Templates = append(out.Templates, templateToPB(t, tasks))
	}
	return out, nil
}

// UpdateTemplate replaces a template's name and content. Running
// workflows keep the actions they were rendered with.
func (a *Admin) UpdateTemplate(ctx context.Context, req *pb.UpdateTemplateRequest) (*pb.Template, error) {
	in := req.GetTemplate()
	tasks, err := parseTemplate(in.GetContent())
	if err != nil {
		return nil, grpcError("update template", err)
	}
	if in.GetName() == "" {
		return nil, grpcError("update template", invalid("name is required"))
	}
	var t store.Template
	err = a.st.Update(ctx, func(tx *store.Tx) error {
		old, err := tx.Template(in.GetId())
		if err != nil {
			return err
		}
		t = store.Template{ID: old.ID, Name: in.GetName(), Content: in.GetContent(), CreatedAt: old.CreatedAt, UpdatedAt: a.now()}
		return tx.UpdateTemplate(t)
	})
	if err != nil {
		return nil, grpcError("update template", err)
	}
	return templateToPB(t, tasks), nil
}

// DeleteTemplate removes a template; refused while a machine uses it.
func (a *Admin) DeleteTemplate(ctx context.Context, req *pb.DeleteTemplateRequest) (*pb.DeleteTemplateResponse, error) {
	err := a.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteTemplate(req.GetId()) })
	if err != nil {
		return nil, grpcError("delete template", err)
	}
	return &pb.DeleteTemplateResponse{}, nil
}

// ---------------------------------------------------------------- power

var powerActions = map[pb.PowerAction]string{
	pb.PowerAction_POWER_ACTION_ON:       "on",
	pb.PowerAction_POWER_ACTION_OFF:      "off",
	pb.PowerAction_POWER_ACTION_SOFT_OFF: "soft",
	pb.PowerAction_POWER_ACTION_CYCLE:    "cycle",
	pb.PowerAction_POWER_ACTION_RESET:    "reset",
}

var bootDevices = map[pb.BootDevice]string{
	pb.BootDevice_BOOT_DEVICE_PXE:   "pxe",
	pb.BootDevice_BOOT_DEVICE_DISK:  "disk",
	pb.BootDevice_BOOT_DEVICE_BIOS:  "bios",
	pb.BootDevice_BOOT_DEVICE_CDROM: "cdrom",
}

func (a *Admin) powerStatus(ctx context.Context, hw store.Hardware, state string) (*pb.PowerStatus, error) {
	now := a.now()
	err := a.st.Update(ctx, func(tx *store.Tx) error {
		h, err := tx.Hardware(hw.ID)
		if err != nil {
			return err
		}
		h.Power, h.PowerSeenAt = state, now
		return tx.UpdateHardware(h)
	})
	if err != nil {
		return nil, err
	}
	return &pb.PowerStatus{HardwareId: hw.ID, State: powerToPB(state), SeenAt: ts(now)}, nil
}

// GetPower returns the last seen power state, or asks the BMC when refresh is set.
func (a *Admin) GetPower(ctx context.Context, req *pb.GetPowerRequest) (*pb.PowerStatus, error) {
	hw, err := a.st.GetHardware(ctx, req.GetHardwareId())
	if err != nil {
		return nil, grpcError("get power", err)
	}
	if !req.GetRefresh() {
		return &pb.PowerStatus{HardwareId: hw.ID, State: powerToPB(hw.Power), SeenAt: ts(hw.PowerSeenAt)}, nil
	}
	if a.opts.Power == nil {
		return nil, status.Error(codes.Unimplemented, "get power: no BMC controller configured")
	}
	state, err := a.opts.Power.PowerState(ctx, hw)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "get power of %s: %v", hw.ID, err)
	}
	out, err := a.powerStatus(ctx, hw, state)
	return out, grpcError("get power", err)
}

// SetPower powers a server on, off, or cycles it, and returns the state after.
func (a *Admin) SetPower(ctx context.Context, req *pb.SetPowerRequest) (*pb.PowerStatus, error) {
	action, ok := powerActions[req.GetAction()]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "set power: unknown action %v", req.GetAction())
	}
	if a.opts.Power == nil {
		return nil, status.Error(codes.Unimplemented, "set power: no BMC controller configured")
	}
	hw, err := a.st.GetHardware(ctx, req.GetHardwareId())
	if err != nil {
		return nil, grpcError("set power", err)
	}
	if err := a.opts.Power.SetPower(ctx, hw, action); err != nil {
		return nil, status.Errorf(codes.Unavailable, "set power %s on %s: %v", action, hw.ID, err)
	}
	a.log.InfoContext(ctx, "power set", "hardware", hw.ID, "action", action)
	state, err := a.opts.Power.PowerState(ctx, hw)
	if err != nil {
		state = "unknown"
	}
	out, err := a.powerStatus(ctx, hw, state)
	return out, grpcError("set power", err)
}

// SetBootDevice sets the device a server boots from next.
func (a *Admin) SetBootDevice(ctx context.Context, req *pb.SetBootDeviceRequest) (*pb.SetBootDeviceResponse, error) {
	dev, ok := bootDevices[req.GetDevice()]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "set boot device: unknown device %v", req.GetDevice())
	}
	if a.opts.Power == nil {
		return nil, status.Error(codes.Unimplemented, "set boot device: no BMC controller configured")
	}
	hw, err := a.st.GetHardware(ctx, req.GetHardwareId())
	if err != nil {
		return nil, grpcError("set boot device", err)
	}
	if err := a.opts.Power.SetBootDevice(ctx, hw, dev, req.GetPersistent(), req.GetEfi()); err != nil {
		return nil, status.Errorf(codes.Unavailable, "set boot device %s on %s: %v", dev, hw.ID, err)
	}
	return &pb.SetBootDeviceResponse{}, nil
}

// copyMap returns a copy of m (nil stays nil).
func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}
