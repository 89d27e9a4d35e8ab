// The baremetal_machine resource: its plan modifier and config validation.

package provider

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

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
	if !ip.IsUnknown() || r.client == nil {
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
