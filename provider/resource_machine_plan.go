// The baremetal_machine resource: its plan modifier and config validation.

package provider

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

// ModifyPlan plans an update that reinstalls in place (planReinstall),
// and plans id and ip from the hardware when the machine is created
// or replaced: both are known before apply (the id is the hardware id, the
// ip the hardware's boot address), so what reads `.ip` (DNS records,
// inventories) does not churn with "(known after apply)". When the
// hardware is not readable yet (created in the same apply) ip stays
// unknown; a failed read is not an error here, apply reports it.
func (r *machineResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy
	}
	if !req.State.Raw.IsNull() {
		planReinstall(ctx, req, resp)
	}
	var hwID types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("hardware_id"), &hwID)...)
	if resp.Diagnostics.HasError() || hwID.IsUnknown() || hwID.IsNull() {
		return
	}
	var id, ip types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("id"), &id)...)
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("ip"), &ip)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if id.IsUnknown() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("id"), hwID)...)
	}
	if r.client == nil {
		return
	}
	r.checkInstall(ctx, req, resp)
	if !ip.IsUnknown() {
		return
	}
	hw, err := r.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: hwID.ValueString()})
	if err != nil {
		tflog.Debug(ctx, "ip stays unknown in the plan: hardware not readable yet", map[string]any{"hardware_id": hwID.ValueString(), "error": err.Error()})
		return
	}
	planned := types.StringNull()
	if nics := hw.GetInterfaces(); len(nics) > 0 && nics[0].GetIp() != "" {
		addr, _, _ := strings.Cut(nics[0].GetIp(), "/")
		planned = types.StringValue(addr)
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("ip"), planned)...)
}

// checkInstallTimeout bounds the plan-time check of an install.
const checkInstallTimeout = 15 * time.Second

// checkInstall has provisiond render the template for the hardware with
// the planned inputs, as the install will, when the plan creates,
// replaces or reinstalls the machine and every input is known: a missing
// parameter or a template error shows at plan time, not minutes into the
// apply. provisiond renders the template and hardware as they stand, so
// an apply that changes them first may render differently: what it
// refuses is a warning, with that said. Hardware or a template not yet
// created, or provisiond unreachable, skip the check: apply reports them.
func (r *machineResource) checkInstall(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if !req.State.Raw.IsNull() && req.State.Raw.Equal(resp.Plan.Raw) {
		return // no change: the cheap test first, as most plans are this
	}
	var plan machineModel
	if resp.Diagnostics.Append(resp.Plan.Get(ctx, &plan)...); resp.Diagnostics.HasError() {
		return
	}
	if !req.State.Raw.IsNull() {
		var state machineModel
		if resp.Diagnostics.Append(req.State.Get(ctx, &state)...); resp.Diagnostics.HasError() {
			return
		}
		if plan.HardwareID.Equal(state.HardwareID) && len(installChanges(plan, state)) == 0 {
			return // nothing new to install
		}
	}
	for _, v := range []attr.Value{plan.TemplateID, plan.Parameters, plan.SensitiveParams, plan.UserData, plan.SSHKeys, plan.Wipe} {
		if v.IsUnknown() {
			tflog.Debug(ctx, "install not checked at plan: an input is known only after apply", map[string]any{"hardware_id": plan.HardwareID.ValueString()})
			return
		}
	}
	preq, diags := provisionRequest(ctx, plan, req.Config)
	if diags.HasError() {
		return // ValidateConfig and apply report them
	}
	preq.DryRun = true
	cctx, cancel := context.WithTimeout(ctx, checkInstallTimeout)
	defer cancel()
	_, err := r.client.ProvisionMachine(cctx, preq)
	if status.Code(err) != codes.InvalidArgument {
		if err != nil {
			tflog.Debug(ctx, "install not checked at plan", map[string]any{"hardware_id": preq.HardwareId, "error": err.Error()})
		}
		return
	}
	resp.Diagnostics.AddWarning("The install of machine "+preq.HardwareId+" will fail",
		fmt.Sprintf("provisiond checked the install this plan starts against the machine's template and hardware as they stand now, and refused it:\n\n%s\n\n"+
			"Unless this apply changes the template or the hardware first, the install will fail with this error when the apply starts it; nothing is booted before.",
			status.Convert(err).Message()))
}

// ValidateConfig refuses a parameter name given both as a plain and as a
// sensitive parameter, as provisiond does; the error names the parameter,
// never a value.
func (r *machineResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var plain, secret types.Map
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("parameters"), &plain)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("sensitive_parameters"), &secret)...)
	if plain.IsNull() || plain.IsUnknown() || secret.IsNull() || secret.IsUnknown() {
		return
	}
	var names []string
	for k := range secret.Elements() {
		if _, dup := plain.Elements()[k]; dup {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		resp.Diagnostics.AddAttributeError(path.Root("sensitive_parameters"), "Parameter given twice",
			fmt.Sprintf("Parameter %q is both in parameters and in sensitive_parameters. Templates see one map of parameters: give it once, in sensitive_parameters if it is a secret.", k))
	}
}
