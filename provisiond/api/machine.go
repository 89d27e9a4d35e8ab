package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (a *Admin) machines() (Machines, error) {
	if a.opts.Machines == nil {
		return nil, status.Error(codes.Unimplemented, "no workflow engine configured")
	}
	return a.opts.Machines, nil
}

// machineWithWorkflow reads a machine and its current workflow.
func machineWithWorkflow(tx *store.Tx, hardwareID string) (*pb.Machine, error) {
	m, err := tx.Machine(hardwareID)
	if err != nil {
		return nil, err
	}
	w, err := tx.Workflow(m.WorkflowID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return MachineToPB(m, nil), nil
		}
		return nil, err
	}
	return MachineToPB(m, &w), nil
}

// ProvisionMachine stores the machine with its provision workflow and
// returns at once; WatchMachine follows it. With reinstall the machine
// exists already and is installed again in place.
func (a *Admin) ProvisionMachine(ctx context.Context, req *pb.ProvisionMachineRequest) (*pb.Machine, error) {
	eng, err := a.machines()
	if err != nil {
		return nil, err
	}
	if req.GetHardwareId() == "" || req.GetTemplateId() == "" {
		return nil, status.Error(codes.InvalidArgument, "provision machine: hardware_id and template_id are required")
	}
	for i, k := range req.GetSshKeys() {
		if err := hwspec.SSHKey(k); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "provision machine: ssh_keys[%d]: %v", i, err)
		}
	}
	if w := req.GetWipe(); w != "" {
		if err := hwspec.Wipe(w); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "provision machine: wipe: %v", err)
		}
	}
	params, err := mergeParameters(req.GetParameters(), req.GetSensitiveParameters())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "provision machine: %v", err)
	}
	m := store.Machine{
		HardwareID: req.GetHardwareId(), TemplateID: req.GetTemplateId(), Parameters: params,
		SensitiveKeys: slices.Sorted(maps.Keys(req.GetSensitiveParameters())),
		UserData:      req.GetUserData(), SSHKeys: req.GetSshKeys(), Wipe: req.GetWipe(),
		UserDataWriteOnly: req.GetUserDataWriteOnly() && req.GetUserData() != "",
	}
	if req.GetDryRun() {
		w, err := eng.CheckProvision(ctx, m)
		if err != nil {
			return nil, grpcError("check machine", err)
		}
		return MachineToPB(m, &w), nil
	}
	what := "provision machine"
	if req.GetReinstall() {
		what = "reinstall machine"
		m, err = eng.Reinstall(ctx, m, req.GetPreserveData())
	} else {
		if req.GetPreserveData() {
			return nil, status.Error(codes.InvalidArgument, "provision machine: preserve_data is only for a reinstall")
		}
		m, err = eng.Provision(ctx, m)
	}
	if err != nil {
		return nil, grpcError(what, err)
	}
	a.log.InfoContext(ctx, "machine provisioning", "hardware", m.HardwareID, "template", m.TemplateID, "workflow", m.WorkflowID, "reinstall", req.GetReinstall())
	out, err := store.Read(ctx, a.st, func(tx *store.Tx) (*pb.Machine, error) { return machineWithWorkflow(tx, m.HardwareID) })
	return out, grpcError("provision machine", err)
}

// mergeParameters is the parameters a template renders with: the plain
// ones and the sensitive ones, whose names may not repeat. Errors name
// the parameter, never its value.
func mergeParameters(plain, sensitive map[string]string) (map[string]string, error) {
	out := copyMap(plain)
	if len(sensitive) == 0 {
		return out, nil
	}
	if out == nil {
		out = make(map[string]string, len(sensitive))
	}
	for k, v := range sensitive {
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("parameter %q is both in parameters and in sensitive_parameters: give it once", k)
		}
		out[k] = v
	}
	return out, nil
}

// GetMachine returns a machine with its current workflow.
func (a *Admin) GetMachine(ctx context.Context, req *pb.GetMachineRequest) (*pb.Machine, error) {
	out, err := store.Read(ctx, a.st, func(tx *store.Tx) (*pb.Machine, error) { return machineWithWorkflow(tx, req.GetHardwareId()) })
	return out, grpcError("get machine", err)
}

// ListMachines returns every machine with its current workflow.
func (a *Admin) ListMachines(ctx context.Context, _ *pb.ListMachinesRequest) (*pb.ListMachinesResponse, error) {
	out := &pb.ListMachinesResponse{}
	err := a.st.View(ctx, func(tx *store.Tx) error {
		all, err := tx.ListMachines()
		if err != nil {
			return err
		}
		for _, m := range all {
			pm, err := machineWithWorkflow(tx, m.HardwareID)
			if err != nil {
				return err
			}
			out.Machines = append(out.Machines, pm)
		}
		return nil
	})
	return out, grpcError("list machines", err)
}

// DeprovisionMachine starts the deprovision workflow (wipe, power off);
// the machine is deleted once it succeeds.
func (a *Admin) DeprovisionMachine(ctx context.Context, req *pb.DeprovisionMachineRequest) (*pb.Machine, error) {
	eng, err := a.machines()
	if err != nil {
		return nil, err
	}
	if w := req.GetWipe(); w != "" {
		if err := hwspec.Wipe(w); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "deprovision machine: wipe: %v", err)
		}
	}
	m, err := eng.Deprovision(ctx, req.GetHardwareId(), req.GetWipe())
	if err != nil {
		return nil, grpcError("deprovision machine", err)
	}
	a.log.InfoContext(ctx, "machine deprovisioning", "hardware", m.HardwareID, "workflow", m.WorkflowID)
	out, err := store.Read(ctx, a.st, func(tx *store.Tx) (*pb.Machine, error) {
		w, err := tx.Workflow(m.WorkflowID)
		if err != nil {
			return nil, err
		}
		return MachineToPB(m, &w), nil
	})
	return out, grpcError("deprovision machine", err)
}

// ListWorkflows returns the workflows of one hardware, oldest first, also
// once the hardware is deleted: the store keeps them for --retention, for
// the post-mortem after a terraform destroy. An id with neither hardware
// nor workflows is not found.
func (a *Admin) ListWorkflows(ctx context.Context, req *pb.ListWorkflowsRequest) (*pb.ListWorkflowsResponse, error) {
	if req.GetHardwareId() == "" {
		return nil, status.Error(codes.InvalidArgument, "list workflows: hardware_id is required")
	}
	out := &pb.ListWorkflowsResponse{}
	err := a.st.View(ctx, func(tx *store.Tx) error {
		ws, err := tx.WorkflowsOf(req.GetHardwareId())
		if err != nil {
			return err
		}
		if len(ws) == 0 {
			if _, err := tx.Hardware(req.GetHardwareId()); err != nil {
				return err
			}
		}
		for _, w := range ws {
			out.Workflows = append(out.Workflows, WorkflowToPB(w))
		}
		return nil
	})
	return out, grpcError("list workflows", err)
}

// WatchMachine streams the events of a machine's workflow (the current
// one, or workflow_id), first those already logged, then new ones as they
// are appended, until the workflow ends or the client goes away (with
// no_follow: once the logged ones are sent). Every event carries a
// snapshot of the workflow. With until_os_ready, a provision that
// succeeded is followed further, until its installed OS phones home (an
// "os_ready" event) or the machine is no longer on it.
func (a *Admin) WatchMachine(req *pb.WatchMachineRequest, stream pb.Admin_WatchMachineServer) error {
	ctx := stream.Context()
	wfID := req.GetWorkflowId()
	if wfID == "" {
		m, err := a.st.GetMachine(ctx, req.GetHardwareId())
		if err != nil {
			return grpcError("watch machine", err)
		}
		wfID = m.WorkflowID
	}
	var after uint64
	ready := false // an os_ready event was sent
	for {
		changed := a.st.Changed() // taken before reading, so no append is missed
		var evs []store.Event
		var w store.Workflow
		current := true // wfID is still the machine's workflow
		err := a.st.View(ctx, func(tx *store.Tx) error {
			var err error
			if w, err = tx.Workflow(wfID); err != nil {
				return err
			}
			if req.GetHardwareId() != "" && w.HardwareID != req.GetHardwareId() {
				return fmt.Errorf("workflow %q belongs to hardware %q: %w", wfID, w.HardwareID, store.ErrNotFound)
			}
			if req.GetUntilOsReady() {
				m, err := tx.Machine(w.HardwareID)
				current = err == nil && m.WorkflowID == wfID
			}
			evs, err = tx.Events(wfID, after)
			return err
		})
		if err != nil {
			return grpcError("watch machine", err)
		}
		for _, e := range evs {
			if err := stream.Send(EventToPB(e, &w)); err != nil {
				return err
			}
			after = e.Seq
			ready = ready || e.Type == store.EventOSReady
		}
		if req.GetNoFollow() || (store.Terminal(w.State) && (!req.GetUntilOsReady() || ready || !current ||
			w.Kind != store.KindProvision || w.State != store.StateSucceeded)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		}
	}
}
