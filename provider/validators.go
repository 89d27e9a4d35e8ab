package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-jsontypes/jsontypes"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
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
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid "+v.desc, fmt.Sprintf("%q: %v.", req.ConfigValue.ValueString(), err))
	}
}

// normalizeMAC returns mac in provisiond's spelling: lower case, colons.
func normalizeMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("not a MAC address (want 6 bytes like 52:54:00:12:34:56)")
	}
	if len(hw) != 6 {
		return "", fmt.Errorf("want a 6-byte Ethernet MAC address like 52:54:00:12:34:56, got %d bytes", len(hw))
	}
	return hw.String(), nil
}

func macValidator() validator.String {
	return stringCheck{desc: "MAC address", check: func(s string) error { _, err := normalizeMAC(s); return err }}
}

// cidrValidator accepts an IPv4 address with prefix length, as provisiond does.
func cidrValidator() validator.String {
	return stringCheck{desc: "IPv4 address with prefix length", check: func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("want an IPv4 address with prefix length, like 10.0.0.5/24")
		}
		if p.String() != s {
			return fmt.Errorf("write it as %s", p.String())
		}
		return nil
	}}
}

func ipv4Validator() validator.String {
	return stringCheck{desc: "IPv4 address", check: func(s string) error {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || a.String() != s {
			return fmt.Errorf("want an IPv4 address like 10.0.0.1")
		}
		return nil
	}}
}

func ipValidator() validator.String {
	return stringCheck{desc: "IP address", check: func(s string) error {
		a, err := netip.ParseAddr(s)
		if err != nil || a.String() != s {
			return fmt.Errorf("want an IP address like 10.0.0.1")
		}
		return nil
	}}
}

var (
	idRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	hostnameRE = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)
)

func idValidator() validator.String {
	return stringCheck{desc: "id", check: func(s string) error {
		if !idRE.MatchString(s) {
			return fmt.Errorf("use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
		}
		return nil
	}}
}

func hostnameValidator() validator.String {
	return stringCheck{desc: "host name", check: func(s string) error {
		if len(s) > 253 || !hostnameRE.MatchString(s) {
			return fmt.Errorf("not an RFC 1123 host name")
		}
		return nil
	}}
}

func diskValidator() validator.String {
	return stringCheck{desc: "disk device", check: func(s string) error {
		if !strings.HasPrefix(s, "/dev/") || len(s) <= len("/dev/") {
			return fmt.Errorf("want a block device path under /dev/, like /dev/sda")
		}
		return nil
	}}
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
