package benchfloor

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	baremetal "github.com/rackform/terraform-provider-baremetal/provider"
)

// TestLikeResources: every baremetal resource has its floor_like_ twin
// with the same attributes and blocks and none of their validators, plan
// modifiers or defaults (a schema type the floor does not know panics
// here, not in make bench-scale).
func TestLikeResources(t *testing.T) {
	ctx := context.Background()
	ours := map[string]resource.SchemaResponse{}
	for _, f := range baremetal.New("test")().Resources(ctx) {
		r := f()
		var md resource.MetadataResponse
		r.Metadata(ctx, resource.MetadataRequest{ProviderTypeName: "floor"}, &md)
		var sr resource.SchemaResponse
		r.Schema(ctx, resource.SchemaRequest{}, &sr)
		ours[md.TypeName] = sr
	}
	likes := likeResources()
	if len(likes) != len(ours) || len(likes) == 0 {
		t.Fatalf("%d floor_like_ resources for %d of ours", len(likes), len(ours))
	}
	for _, f := range likes {
		r := f()
		var md resource.MetadataResponse
		r.Metadata(ctx, resource.MetadataRequest{ProviderTypeName: "floor"}, &md)
		var sr resource.SchemaResponse
		r.Schema(ctx, resource.SchemaRequest{}, &sr)
		name := "floor_" + md.TypeName[len("floor_like_"):]
		want, ok := ours[name]
		if !ok {
			t.Fatalf("%s: no resource of ours named %s", md.TypeName, name)
		}
		if got, want := slices.Sorted(maps.Keys(sr.Schema.Attributes)), slices.Sorted(maps.Keys(want.Schema.Attributes)); !slices.Equal(got, want) {
			t.Errorf("%s attributes %v, want %v", md.TypeName, got, want)
		}
		if got, want := sr.Schema.Type().TerraformType(ctx), want.Schema.Type().TerraformType(ctx); !got.Equal(want) {
			t.Errorf("%s type %s, want %s", md.TypeName, got, want)
		}
		for k, a := range sr.Schema.Attributes {
			if s, ok := a.(schema.StringAttribute); ok && (len(s.Validators) > 0 || len(s.PlanModifiers) > 0 || s.Default != nil) {
				t.Errorf("%s.%s kept its validators, plan modifiers or default", md.TypeName, k)
			}
		}
	}
	v, err := known(tftypes.NewValue(tftypes.Object{AttributeTypes: map[string]tftypes.Type{"s": tftypes.String, "n": tftypes.Number}},
		map[string]tftypes.Value{"s": tftypes.NewValue(tftypes.String, tftypes.UnknownValue), "n": tftypes.NewValue(tftypes.Number, tftypes.UnknownValue)}))
	if err != nil || !v.IsFullyKnown() {
		t.Fatalf("known: %v, %v", v, err)
	}
}
