// The baremetal_machine resource: its type and its create, read, update, delete and import.

package provider

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

var (
	_ resource.ResourceWithConfigure      = (*machineResource)(nil)
	_ resource.ResourceWithImportState    = (*machineResource)(nil)
	_ resource.ResourceWithValidateConfig = (*machineResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*machineResource)(nil)
)

// Default timeouts of the machine's operations.
const (
	defaultCreateTimeout = 60 * time.Minute
	defaultUpdateTimeout = 10 * time.Minute
	defaultDeleteTimeout = 30 * time.Minute
)

// machineResource installs an operating system on hardware and wipes it
// on destroy.
type machineResource struct {
	client *apiClient
	// retryWait is the pause before following a workflow again after the
	// stream broke; tests shorten it.
	retryWait time.Duration
	// progressEvery is how often a wait for the installed OS logs that it
	// still waits (0: 30 s).
	progressEvery time.Duration
}

// NewMachineResource returns the baremetal_machine resource.
func NewMachineResource() resource.Resource { return &machineResource{retryWait: 2 * time.Second} }

func (r *machineResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine"
}

func (r *machineResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// refresh reads the machine and its hardware into m.
func (r *machineResource) refresh(ctx context.Context, m *machineModel) error {
	pm, err := r.client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: m.HardwareID.ValueString()})
	if err != nil {
		return err
	}
	hw, err := r.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: pm.GetHardwareId()})
	if err != nil {
		return err
	}
	fillComputed(m, pm, hw)
	return nil
}

// provisionRequest is what provisiond installs: plan's install inputs,
// with user_data_wo from config (write-only: never in the plan).
func provisionRequest(ctx context.Context, plan machineModel, config tfsdk.Config) (*pb.ProvisionMachineRequest, diag.Diagnostics) {
	var diags diag.Diagnostics
	preq := &pb.ProvisionMachineRequest{
		HardwareId: plan.HardwareID.ValueString(), TemplateId: plan.TemplateID.ValueString(),
		UserData: plan.UserData.ValueString(), Wipe: plan.Wipe.ValueString(),
	}
	diags.Append(plan.Parameters.ElementsAs(ctx, &preq.Parameters, false)...)
	diags.Append(plan.SensitiveParams.ElementsAs(ctx, &preq.SensitiveParameters, false)...)
	var wo types.String
	diags.Append(config.GetAttribute(ctx, path.Root("user_data_wo"), &wo)...)
	if !wo.IsNull() && !wo.IsUnknown() {
		preq.UserData = wo.ValueString()
		preq.UserDataWriteOnly = true
	}
	diags.Append(plan.SSHKeys.ElementsAs(ctx, &preq.SshKeys, false)...)
	return preq, diags
}

func (r *machineResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan machineModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Create(ctx, defaultCreateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	preq, diags := provisionRequest(ctx, plan, req.Config)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx = tflog.SetField(ctx, "hardware_id", preq.HardwareId)
	waitReady, why := r.waitForOS(wctx, plan.WaitFor, preq)
	tflog.Info(ctx, "create waits for "+map[bool]string{false: waitInstalled, true: waitOSReady}[waitReady], map[string]any{"reason": why})
	pm, err := r.client.ProvisionMachine(wctx, preq)
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot start provisioning hardware "+preq.HardwareId, err)
		return
	}
	wfID := pm.GetWorkflow().GetId()
	tflog.Info(ctx, "provision workflow started", map[string]any{"workflow_id": wfID, "timeout": timeout.String()})

	// From here on the machine exists: save it first, so that any error
	// below leaves it in state, tainted, never orphaned.
	want := plan.Power
	fillComputed(&plan, pm, nil)
	if !want.IsNull() && !want.IsUnknown() {
		plan.Power = want // a configured value is what state holds
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)

	w, ready, werr := r.follow(wctx, preq.HardwareId, wfID, false, waitReady)

	rctx, rcancel := detached(ctx)
	defer rcancel()
	err = r.refresh(rctx, &plan)
	observed := plan.Power
	if !want.IsNull() && !want.IsUnknown() {
		plan.Power = want
	}
	if err != nil {
		tflog.Warn(ctx, "cannot read machine after its workflow", map[string]any{"error": err.Error()})
		if w != nil {
			fillComputed(&plan, &pb.Machine{HardwareId: preq.HardwareId, Workflow: w}, nil)
		}
	}
	installed := w.GetId() == wfID && w.GetState() == pb.State_STATE_SUCCEEDED
	switch {
	case timedOut(wctx, werr) && installed && waitReady && !ready:
		resp.Diagnostics.AddError("Hardware "+preq.HardwareId+" installed, but its OS never phoned home",
			neverPhonedHome(preq.HardwareId, plan.IP.ValueString(), w, timeout, why))
	case timedOut(wctx, werr):
		resp.Diagnostics.AddError("Timed out provisioning hardware "+preq.HardwareId,
			timeoutDetail(fmt.Sprintf("The provision workflow %s did not finish within %s (state %s). The machine stays in Terraform state as tainted: the next apply reinstalls it. Raise timeouts.create if installs take longer, or look at the workflow's events with `provisiond ctl events %s`.",
				wfID, timeout, plan.State.ValueString(), wfID), r.lastSnapshot(rctx, preq.HardwareId, wfID, w)))
	case werr != nil && errors.Is(werr, context.Canceled):
		resp.Diagnostics.AddError("Provisioning of hardware "+preq.HardwareId+" interrupted",
			fmt.Sprintf("Terraform stopped waiting for workflow %s, which goes on in provisiond. The machine stays in state as tainted: the next apply replaces it.", wfID))
	case werr != nil:
		addAPIError(&resp.Diagnostics, r.client, "Lost track of provisioning hardware "+preq.HardwareId, werr)
	case w.GetState() != pb.State_STATE_SUCCEEDED:
		resp.Diagnostics.AddError("Provisioning of hardware "+preq.HardwareId+" failed",
			failureDetail("provision", w)+"\n\nThe machine stays in Terraform state as tainted: fix the cause and apply again to reinstall it.")
	default:
		tflog.Info(ctx, "machine provisioned", map[string]any{"workflow_id": wfID, "os_ready": ready})
		plan.Power = observed
		r.applyPower(ctx, wctx, &plan, &resp.Diagnostics, want)
		if !want.IsNull() && !want.IsUnknown() {
			plan.Power = want
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// applyPower sets the power state when want is configured and differs
// from what provisiond last saw.
func (r *machineResource) applyPower(logCtx, ctx context.Context, m *machineModel, diags *diag.Diagnostics, want types.String) {
	if want.IsNull() || want.IsUnknown() {
		return
	}
	if !m.Power.IsNull() && !m.Power.IsUnknown() && m.Power.ValueString() == want.ValueString() {
		return
	}
	if m.Power.IsNull() && want.ValueString() == "on" {
		// Unknown power after an install that ended in a reboot: on.
		m.Power = want
		return
	}
	action := pb.PowerAction_POWER_ACTION_ON
	if want.ValueString() == "off" {
		action = pb.PowerAction_POWER_ACTION_OFF
	}
	tflog.Info(logCtx, "setting power", map[string]any{"power": want.ValueString()})
	ps, err := r.client.SetPower(ctx, &pb.SetPowerRequest{HardwareId: m.HardwareID.ValueString(), Action: action})
	if err != nil {
		addAPIError(diags, r.client, "Cannot power "+want.ValueString()+" hardware "+m.HardwareID.ValueString(), err)
		return
	}
	if ps.GetState() == pb.PowerState_POWER_STATE_UNKNOWN || ps.GetState() == pb.PowerState_POWER_STATE_UNSPECIFIED {
		m.Power = want
		return
	}
	got := "on"
	if ps.GetState() == pb.PowerState_POWER_STATE_OFF {
		got = "off"
	}
	if got != want.ValueString() {
		diags.AddError("Power of hardware "+m.HardwareID.ValueString()+" did not change",
			fmt.Sprintf("The BMC accepted power %s but reports the server %s. Look at the BMC, then apply again.", want.ValueString(), got))
	}
	m.Power = want
}

func (r *machineResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state machineModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	pm, err := r.client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: id})
	if isNotFound(err) {
		tflog.Warn(ctx, "machine is gone from provisiond (released outside Terraform): removing it from state", map[string]any{"hardware_id": id})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot read machine "+id, err)
		return
	}
	hw, err := r.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: id})
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot read hardware of machine "+id, err)
		return
	}
	fillDesired(&state, pm)
	fillComputed(&state, pm, hw)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// Update changes what changes in place: power, the wipe and timeouts
// that only Terraform uses, and with reinstall enabled the install inputs
// (reinstall).
func (r *machineResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan, state machineModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if enabled, _, diags := reinstallOpts(ctx, plan.Reinstall); enabled && !diags.HasError() {
		if why := reinstallReasons(plan, state); len(why) > 0 {
			r.reinstall(ctx, req, resp, plan, why)
			return
		}
	}
	timeout, diags := plan.Timeouts.Update(ctx, defaultUpdateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := plan.Power
	plan.Power = state.Power
	if !want.IsUnknown() && !want.IsNull() && !want.Equal(state.Power) {
		r.applyPower(ctx, wctx, &plan, &resp.Diagnostics, want)
		if resp.Diagnostics.HasError() {
			return
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *machineResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state machineModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := state.Timeouts.Delete(ctx, defaultDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := state.ID.ValueString()
	ctx = tflog.SetField(ctx, "hardware_id", id)

	pm, err := r.client.DeprovisionMachine(wctx, &pb.DeprovisionMachineRequest{HardwareId: id, Wipe: state.Wipe.ValueString()})
	if isNotFound(err) {
		tflog.Info(ctx, "machine already gone")
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot start deprovisioning machine "+id, err)
		return
	}
	wfID := pm.GetWorkflow().GetId()
	tflog.Info(ctx, "deprovision workflow started", map[string]any{"workflow_id": wfID, "wipe": state.Wipe.ValueString(), "timeout": timeout.String()})
	w, _, err := r.follow(wctx, id, wfID, true, false)
	switch {
	case timedOut(wctx, err):
		rctx, rcancel := detached(ctx)
		defer rcancel()
		resp.Diagnostics.AddError("Timed out deprovisioning machine "+id,
			timeoutDetail(fmt.Sprintf("The deprovision workflow %s (wipe %s) did not finish within %s. The machine stays in state; destroy again to keep waiting, or raise timeouts.delete.", wfID, state.Wipe.ValueString(), timeout),
				r.lastSnapshot(rctx, id, wfID, w)))
		return
	case err != nil:
		addAPIError(&resp.Diagnostics, r.client, "Lost track of deprovisioning machine "+id, err)
		return
	case w.GetState() != pb.State_STATE_SUCCEEDED:
		resp.Diagnostics.AddError("Deprovisioning of machine "+id+" failed",
			failureDetail("deprovision", w)+"\n\nThe machine stays in state: fix the cause and destroy again.")
		return
	}
	// The machine is released once its deprovision workflow succeeded.
	for {
		_, err := r.client.GetMachine(wctx, &pb.GetMachineRequest{HardwareId: id})
		if isNotFound(err) {
			tflog.Info(ctx, "machine deprovisioned", map[string]any{"workflow_id": wfID})
			return
		}
		if err != nil && status.Code(err) != codes.Unavailable {
			addAPIError(&resp.Diagnostics, r.client, "Cannot confirm machine "+id+" is released", err)
			return
		}
		select {
		case <-wctx.Done():
			resp.Diagnostics.AddError("Timed out deprovisioning machine "+id,
				"The wipe finished but provisiond still lists the machine. Destroy again.")
			return
		case <-time.After(r.retryWait / 4):
		}
	}
}

func (r *machineResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("hardware_id"), req.ID)...)
}

// fillComputed sets the attributes read from provisiond.
func fillComputed(m *machineModel, pm *pb.Machine, hw *pb.Hardware) {
	m.ID = types.StringValue(pm.GetHardwareId())
	m.HardwareID = types.StringValue(pm.GetHardwareId())
	w := pm.GetWorkflow()
	m.State = strOrNull(stateName(w.GetState()))
	m.WorkflowID = strOrNull(w.GetId())
	m.ProvisionedAt = types.StringNull()
	if pm.GetProvisionedAt() != nil {
		m.ProvisionedAt = types.StringValue(pm.GetProvisionedAt().AsTime().UTC().Format(time.RFC3339))
	}
	m.OSReadyAt = types.StringNull()
	if pm.GetOsReadyAt() != nil {
		m.OSReadyAt = types.StringValue(pm.GetOsReadyAt().AsTime().UTC().Format(time.RFC3339))
	}
	m.Error, m.OutputTail = types.StringNull(), types.StringNull()
	if a := failedAction(w); a != nil {
		msg := fmt.Sprintf("action %q of task %q %s", a.GetName(), a.GetTask(), stateName(a.GetState()))
		if a.GetMessage() != "" {
			msg += ": " + a.GetMessage()
		}
		m.Error = types.StringValue(msg)
		m.OutputTail = strOrNull(a.GetOutputTail())
	} else if w.GetError() != "" {
		m.Error = types.StringValue(w.GetError())
	}
	m.IP = types.StringNull()
	if nics := hw.GetInterfaces(); len(nics) > 0 && nics[0].GetIp() != "" {
		ip, _, _ := strings.Cut(nics[0].GetIp(), "/")
		m.IP = types.StringValue(ip)
	}
	switch hw.GetPower() {
	case pb.PowerState_POWER_STATE_ON:
		m.Power = types.StringValue("on")
	case pb.PowerState_POWER_STATE_OFF:
		m.Power = types.StringValue("off")
	default:
		if m.Power.IsUnknown() {
			m.Power = types.StringNull()
		}
	}
}

// fillDesired sets the configured attributes from provisiond's view, for
// Read: a change made outside Terraform shows as drift. m holds the prior
// state: provisiond returns sensitive parameters among the plain ones, so
// the names in m.SensitiveParams say which are which; and user data sent
// write-only stays out of state.
func fillDesired(m *machineModel, pm *pb.Machine) {
	m.TemplateID = types.StringValue(pm.GetTemplateId())
	m.Parameters, m.SensitiveParams = splitParameters(pm.GetParameters(), m.SensitiveParams)
	// Sent write-only: provisiond says so (and withholds it, so an import
	// leaves it out too), or the prior state says so (older provisiond).
	if writeOnly := pm.GetUserDataWriteOnly() || m.UserData.IsNull() && !m.UserDataWOVersion.IsNull(); !writeOnly {
		m.UserData = strOrNull(pm.GetUserData())
	} // else: sent as user_data_wo, never read back into state
	m.UserDataWO = types.StringNull()
	m.SSHKeys = stringList(pm.GetSshKeys())
	if m.Wipe.IsNull() || m.Wipe.IsUnknown() {
		// Import: take provisiond's. Otherwise the state's wins: destroy
		// passes it explicitly.
		m.Wipe = types.StringValue(pm.GetWipe())
		if pm.GetWipe() == "" {
			m.Wipe = types.StringValue("quick")
		}
	}
}

// splitParameters sorts provisiond's parameters into plain and sensitive
// ones by the names of the prior sensitive ones. A prior sensitive name
// that provisiond does not return keeps its prior value (a provisiond
// that hides them). Without prior sensitive names (import) every
// parameter is plain.
func splitParameters(got map[string]string, priorSensitive types.Map) (plain, sensitive types.Map) {
	if priorSensitive.IsNull() || priorSensitive.IsUnknown() || len(priorSensitive.Elements()) == 0 {
		return stringMap(got), types.MapNull(types.StringType)
	}
	rest := maps.Clone(got)
	secret := map[string]string{}
	for k, v := range priorSensitive.Elements() {
		if g, ok := rest[k]; ok {
			secret[k] = g
			delete(rest, k)
		} else if s, ok := v.(types.String); ok {
			secret[k] = s.ValueString()
		}
	}
	return stringMap(rest), stringMap(secret)
}
