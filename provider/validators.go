package provider

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-jsontypes/jsontypes"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
)

// stringCheck is a string validator backed by a function; it skips null and
// unknown values, which other validators (Required) handle.
type stringCheck struct {
	desc  string
	check func(string) error
}

var _ validator.String = stringCheck{}

func (v stringCheck) Description(context.Context) string         { return v.desc }
func (v stringCheck) MarkdownDescription(context.Context) string { return v.desc }

func (v stringCheck) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := v.check(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid "+v.desc, err.Error())
	}
}

// The hardware checks are internal/hwspec's, which provisiond runs too:
// what passes plan also passes the Admin API, and a refusal reads the
// same in both.

// normalizeMAC returns mac in provisiond's spelling: lower case, colons.
func normalizeMAC(mac string) (string, error) { return hwspec.MAC(mac) }

func macValidator() validator.String {
	return stringCheck{desc: "MAC address", check: func(s string) error { _, err := hwspec.MAC(s); return err }}
}

// cidrValidator accepts an interface's IPv4 address with prefix length.
func cidrValidator() validator.String {
	return stringCheck{desc: "IPv4 address with prefix length", check: hwspec.IPv4Prefix}
}

func gatewayValidator() validator.String {
	return stringCheck{desc: "gateway", check: hwspec.Gateway}
}

func nameServerValidator() validator.String {
	return stringCheck{desc: "name server", check: hwspec.NameServer}
}

func idValidator() validator.String { return stringCheck{desc: "id", check: hwspec.ID} }

func hostnameValidator() validator.String {
	return stringCheck{desc: "host name", check: hwspec.Hostname}
}

func diskValidator() validator.String {
	return stringCheck{desc: "disk device", check: hwspec.Disk}
}

func archValidator() validator.String { return stringCheck{desc: "arch", check: hwspec.Arch} }

func bmcDriverValidator() validator.String {
	return stringCheck{desc: "BMC driver", check: hwspec.BMCDriver}
}

func bmcAddressValidator() validator.String {
	return stringCheck{desc: "BMC address", check: hwspec.BMCAddress}
}

func wipeValidator() validator.String { return stringCheck{desc: "wipe mode", check: hwspec.Wipe} }

func labelKeyValidator() validator.String {
	return stringCheck{desc: "label key", check: hwspec.LabelKey}
}

func labelValueValidator() validator.String {
	return stringCheck{desc: "label value", check: hwspec.LabelValue}
}

// jsonObjectValidator checks that metadata is a JSON object.
func jsonObjectValidator() validator.String {
	return stringCheck{desc: "JSON object", check: func(s string) error {
		var obj map[string]any
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return fmt.Errorf("want a JSON object (use jsonencode({...})): %v", err)
		}
		return nil
	}}
}

// jsonPlanModifier plans the prior state's spelling of metadata when the
// configuration holds the same JSON written differently, so reformatting
// (or jsonencode versus a heredoc) shows no diff. metadata is Optional
// and Computed so the plan may differ from the configuration's text; a
// null configuration still plans null.
type jsonPlanModifier struct{}

func (jsonPlanModifier) Description(context.Context) string {
	return "keeps the prior value when the configured JSON is equal to it"
}

func (m jsonPlanModifier) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (jsonPlanModifier) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if req.ConfigValue.IsNull() {
		resp.PlanValue = jsontypes.NewNormalizedNull().StringValue
		return
	}
	if req.ConfigValue.IsUnknown() || req.StateValue.IsNull() || req.StateValue.IsUnknown() {
		return
	}
	eq, diags := jsontypes.NewNormalizedValue(req.StateValue.ValueString()).StringSemanticEquals(ctx, jsontypes.NewNormalizedValue(req.ConfigValue.ValueString()))
	resp.Diagnostics.Append(diags...)
	if eq {
		resp.PlanValue = req.StateValue
	}
}
