package provider

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// TestTemplateValidateConfigRefusesUnboundedRender: what CreateTemplate
// refuses (issue 13's attack) fails at plan time, through ValidateConfig
// and the same internal/template.Parse.
func TestTemplateValidateConfigRefusesUnboundedRender(t *testing.T) {
	ctx := context.Background()
	r := &templateResource{}
	var sresp resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sresp)
	for name, tc := range map[string]struct{ fragment, want string }{
		"issue 13":     {`{{ $n := 200000000 }}{{ range $n }}{{ end }}`, "range over $n: more than the limit of 100000 iterations"},
		"printf width": {`{{ printf "%0999999999d" 1 }}`, "is more than the limit of 4096"},
		"valid":        {`{{ range 10 }}{{ end }}`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			content := strings.Replace(minimalTemplate("t", "one"), "tasks:", tc.fragment+"\ntasks:", 1)
			typ := sresp.Schema.Type().TerraformType(ctx)
			raw := tftypes.NewValue(typ, map[string]tftypes.Value{
				"id":      tftypes.NewValue(tftypes.String, nil),
				"name":    tftypes.NewValue(tftypes.String, "t"),
				"content": tftypes.NewValue(tftypes.String, content),
				"tasks":   tftypes.NewValue(typ.(tftypes.Object).AttributeTypes["tasks"], nil),
			})
			var resp resource.ValidateConfigResponse
			r.ValidateConfig(ctx, resource.ValidateConfigRequest{Config: tfsdk.Config{Schema: sresp.Schema, Raw: raw}}, &resp)
			got := ""
			for _, d := range resp.Diagnostics.Errors() {
				got += d.Detail()
			}
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("ValidateConfig diagnostics = %q, want %q", got, tc.want)
			}
		})
	}
}
