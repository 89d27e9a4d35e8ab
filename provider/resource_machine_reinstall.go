// The baremetal_machine resource: reinstall in place (the `reinstall`
// attribute), the plan modifiers it switches and the update that runs it.

package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

// defaultReinstallTimeout bounds an update that reinstalls when
// timeouts.update is unset: an install, as create's default.
const defaultReinstallTimeout = defaultCreateTimeout

// reinstallDoc is what the descriptions of the install inputs say about
// a change.
const reinstallDoc = "Changing it replaces the machine (destroy's wipe boot, then a new install), or with `reinstall.enabled` reinstalls it in place."

func reinstallAttribute() schema.Attribute {
	return schema.SingleNestedAttribute{
		Description: "Reinstall in place, as Equinix Metal's `reinstall` block: with `enabled`, a change of `template_id`, `parameters`, `sensitive_parameters`, `user_data`, `user_data_wo_version` or `ssh_keys` is an in-place update that runs the install workflow again on the same machine (same id; a new `workflow_id`), with no destroy and no wipe boot first; a machine whose last workflow failed, timed out or was cancelled is reinstalled at the next apply. " +
			"Without it (the default) such a change replaces the machine. Changing `reinstall` itself applies in place and does nothing until the next reinstall. `timeouts.update` bounds a reinstall (default 60m).",
		Optional: true,
		Attributes: map[string]schema.Attribute{
			"enabled": schema.BoolAttribute{
				Description: "Reinstall in place instead of replacing (default false).",
				Optional:    true,
				Computed:    true,
				Default:     booldefault.StaticBool(false),
			},
			"preserve_data": schema.BoolAttribute{
				Description: "Keep what the disks hold: the template's actions run over it. False (the default): the reinstall's first action wipes every disk of the hardware quick (partition tables and signatures), in the install's own boot.",
				Optional:    true,
				Computed:    true,
				Default:     booldefault.StaticBool(false),
			},
		},
	}
}

// reinstallModel is the `reinstall` attribute.
type reinstallModel struct {
	Enabled      types.Bool `tfsdk:"enabled"`
	PreserveData types.Bool `tfsdk:"preserve_data"`
}

// reinstallOpts reads the `reinstall` attribute: enabled and preserve_data
// (false when unset or unknown).
func reinstallOpts(ctx context.Context, obj types.Object) (enabled, preserve bool, diags diag.Diagnostics) {
	if obj.IsNull() || obj.IsUnknown() {
		return false, false, nil
	}
	var r reinstallModel
	diags = obj.As(ctx, &r, basetypes.ObjectAsOptions{})
	return r.Enabled.ValueBool(), r.PreserveData.ValueBool(), diags
}

// reinstallsInPlace reports whether plan has reinstall enabled: then a
// change of an install input updates in place rather than replaces.
func reinstallsInPlace(ctx context.Context, plan tfsdk.Plan) bool {
	var enabled types.Bool
	if d := plan.GetAttribute(ctx, path.Root("reinstall").AtName("enabled"), &enabled); d.HasError() {
		return false
	}
	return enabled.ValueBool()
}

const replaceIfDesc = "Replaces the machine unless reinstall.enabled, which reinstalls it in place."

func replaceUnlessReinstallString() planmodifier.String {
	return stringplanmodifier.RequiresReplaceIf(func(ctx context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
		resp.RequiresReplace = !reinstallsInPlace(ctx, req.Plan)
	}, replaceIfDesc, replaceIfDesc)
}

func replaceUnlessReinstallMap() planmodifier.Map {
	return mapplanmodifier.RequiresReplaceIf(func(ctx context.Context, req planmodifier.MapRequest, resp *mapplanmodifier.RequiresReplaceIfFuncResponse) {
		resp.RequiresReplace = !reinstallsInPlace(ctx, req.Plan)
	}, replaceIfDesc, replaceIfDesc)
}

func replaceUnlessReinstallList() planmodifier.List {
	return listplanmodifier.RequiresReplaceIf(func(ctx context.Context, req planmodifier.ListRequest, resp *listplanmodifier.RequiresReplaceIfFuncResponse) {
		resp.RequiresReplace = !reinstallsInPlace(ctx, req.Plan)
	}, replaceIfDesc, replaceIfDesc)
}

func replaceUnlessReinstallInt64() planmodifier.Int64 {
	return int64planmodifier.RequiresReplaceIf(func(ctx context.Context, req planmodifier.Int64Request, resp *int64planmodifier.RequiresReplaceIfFuncResponse) {
		resp.RequiresReplace = !reinstallsInPlace(ctx, req.Plan)
	}, replaceIfDesc, replaceIfDesc)
}

// reinstallReasons says why an update of a machine with reinstall
// enabled reinstalls it: the install inputs that differ between state
// and plan, or a last workflow that did not succeed. None: no reinstall.
func reinstallReasons(plan, state machineModel) []string {
	out := installChanges(plan, state)
	switch s := state.State.ValueString(); s {
	case "failed", "timed_out", "cancelled":
		out = append(out, "the last workflow "+strings.ReplaceAll(s, "_", " "))
	}
	slices.Sort(out)
	return out
}

// installChanges names the install inputs that differ between state and
// plan ("parameters changed"), unsorted.
func installChanges(plan, state machineModel) []string {
	var out []string
	for name, same := range map[string]bool{
		"template_id":          plan.TemplateID.Equal(state.TemplateID),
		"parameters":           plan.Parameters.Equal(state.Parameters),
		"sensitive_parameters": plan.SensitiveParams.Equal(state.SensitiveParams),
		"user_data":            plan.UserData.Equal(state.UserData),
		"user_data_wo_version": plan.UserDataWOVersion.Equal(state.UserDataWOVersion),
		"ssh_keys":             plan.SSHKeys.Equal(state.SSHKeys),
	} {
		if !same {
			out = append(out, name+" changed")
		}
	}
	return out
}

// planReinstall marks what a reinstall changes as known after apply.
// Power is left alone when configured: the reinstall sets it after.
func planReinstall(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if !reinstallsInPlace(ctx, resp.Plan) {
		return
	}
	var plan, state machineModel
	resp.Diagnostics.Append(resp.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !plan.HardwareID.Equal(state.HardwareID) {
		return // other hardware: a replace (its create plans anew)
	}
	why := reinstallReasons(plan, state)
	if len(why) == 0 {
		return
	}
	tflog.Info(ctx, "plan: reinstall in place", map[string]any{"hardware_id": state.HardwareID.ValueString(), "reasons": strings.Join(why, ", ")})
	for _, a := range []string{"state", "workflow_id", "provisioned_at", "os_ready_at", "error", "output_tail"} {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root(a), types.StringUnknown())...)
	}
	var power types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("power"), &power)...)
	if power.IsNull() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("power"), types.StringUnknown())...)
	}
}

// reinstall is an Update that installs the machine again in place: a new
// provision workflow of the same machine, followed as create follows
// one. A failure leaves the machine in state with its new inputs and the
// failed workflow's state; the next apply reinstalls it again.
func (r *machineResource) reinstall(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse, plan machineModel, why []string) {
	_, preserve, diags := reinstallOpts(ctx, plan.Reinstall)
	resp.Diagnostics.Append(diags...)
	timeout, diags := plan.Timeouts.Update(ctx, defaultReinstallTimeout)
	resp.Diagnostics.Append(diags...)
	preq, diags := provisionRequest(ctx, plan, req.Config)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	preq.Reinstall, preq.PreserveData = true, preserve
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx = tflog.SetField(ctx, "hardware_id", preq.HardwareId)
	waitReady, whyWait := r.waitForOS(wctx, plan.WaitFor, preq)
	pm, err := r.client.ProvisionMachine(wctx, preq)
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot start reinstalling machine "+preq.HardwareId, err)
		return
	}
	wfID := pm.GetWorkflow().GetId()
	tflog.Info(ctx, "reinstall workflow started", map[string]any{"workflow_id": wfID, "reasons": strings.Join(why, ", "),
		"preserve_data": preserve, "timeout": timeout.String(), "waits_for": map[bool]string{false: waitInstalled, true: waitOSReady}[waitReady]})

	want := plan.Power
	fillComputed(&plan, pm, nil)
	resp.Diagnostics.Append(resp.State.Set(ctx, keepPower(plan, want))...)

	w, ready, werr := r.follow(wctx, preq.HardwareId, wfID, false, waitReady)
	rctx, rcancel := detached(ctx)
	defer rcancel()
	if err := r.refresh(rctx, &plan); err != nil {
		tflog.Warn(ctx, "cannot read machine after its workflow", map[string]any{"error": err.Error()})
		if w != nil {
			fillComputed(&plan, &pb.Machine{HardwareId: preq.HardwareId, Workflow: w}, nil)
		}
	}
	observed := plan.Power
	again := "The machine stays in state with its new settings and the workflow's state: the next apply reinstalls it again."
	switch {
	case timedOut(wctx, werr) && w.GetState() == pb.State_STATE_SUCCEEDED && waitReady && !ready:
		resp.Diagnostics.AddError("Machine "+preq.HardwareId+" reinstalled, but its OS never phoned home",
			neverPhonedHome(preq.HardwareId, plan.IP.ValueString(), w, timeout, whyWait))
	case timedOut(wctx, werr):
		resp.Diagnostics.AddError("Timed out reinstalling machine "+preq.HardwareId,
			timeoutDetail(fmt.Sprintf("The reinstall workflow %s did not finish within %s (state %s). Raise timeouts.update if installs take longer, or look at its events with `provisiond ctl events %s`. %s",
				wfID, timeout, plan.State.ValueString(), wfID, again), r.lastSnapshot(rctx, preq.HardwareId, wfID, w)))
	case werr != nil && errors.Is(werr, context.Canceled):
		resp.Diagnostics.AddError("Reinstall of machine "+preq.HardwareId+" interrupted",
			fmt.Sprintf("Terraform stopped waiting for workflow %s, which goes on in provisiond.", wfID))
	case werr != nil:
		addAPIError(&resp.Diagnostics, r.client, "Lost track of reinstalling machine "+preq.HardwareId, werr)
	case w.GetState() != pb.State_STATE_SUCCEEDED:
		resp.Diagnostics.AddError("Reinstall of machine "+preq.HardwareId+" failed", failureDetail("reinstall", w)+"\n\n"+again)
	default:
		tflog.Info(ctx, "machine reinstalled", map[string]any{"workflow_id": wfID, "os_ready": ready})
		plan.Power = observed
		r.applyPower(ctx, wctx, &plan, &resp.Diagnostics, want)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, keepPower(plan, want))...)
}

// keepPower is m with the configured power, when it is configured: that
// is what state holds.
func keepPower(m machineModel, want types.String) machineModel {
	if !want.IsNull() && !want.IsUnknown() {
		m.Power = want
	}
	return m
}
