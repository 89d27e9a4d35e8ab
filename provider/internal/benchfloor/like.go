package benchfloor

import (
	"context"
	"fmt"
	"math/big"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	baremetal "github.com/rackform/terraform-provider-baremetal/provider"
)

// likeResources are floor_like_hardware, floor_like_template and
// floor_like_machine: the baremetal provider's resources with the same
// schemas, less their validators, plan modifiers and defaults, that keep
// what they are given and talk to nothing. Their no-change plan is what
// Terraform and the framework cost for data of that shape; the baremetal
// provider's cost above it is its own code's (validators, plan modifiers,
// reads from provisiond).
func likeResources() []func() resource.Resource {
	ctx := context.Background()
	var out []func() resource.Resource
	for _, f := range baremetal.New("floor")().Resources(ctx) {
		r := f()
		var md resource.MetadataResponse
		r.Metadata(ctx, resource.MetadataRequest{ProviderTypeName: "baremetal"}, &md)
		var sr resource.SchemaResponse
		r.Schema(ctx, resource.SchemaRequest{}, &sr)
		l := like{
			name: "_like_" + strings.TrimPrefix(md.TypeName, "baremetal_"),
			schema: schema.Schema{
				Attributes: stripAttributes(sr.Schema.Attributes),
				Blocks:     stripBlocks(sr.Schema.Blocks),
				Version:    sr.Schema.Version,
			},
		}
		out = append(out, func() resource.Resource { return l })
	}
	return out
}

// stripAttributes is attrs without validators, plan modifiers and
// defaults, at every depth.
func stripAttributes(attrs map[string]schema.Attribute) map[string]schema.Attribute {
	out := make(map[string]schema.Attribute, len(attrs))
	for k, a := range attrs {
		switch a := a.(type) {
		case schema.StringAttribute:
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.BoolAttribute:
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.Int64Attribute:
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.ListAttribute:
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.MapAttribute:
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.SetAttribute:
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.SingleNestedAttribute:
			a.Attributes = stripAttributes(a.Attributes)
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		case schema.ListNestedAttribute:
			a.NestedObject.Attributes = stripAttributes(a.NestedObject.Attributes)
			a.NestedObject.Validators, a.NestedObject.PlanModifiers = nil, nil
			a.Validators, a.PlanModifiers, a.Default = nil, nil, nil
			out[k] = a
		default:
			panic(fmt.Sprintf("benchfloor: attribute %s: %T is not handled", k, a))
		}
	}
	return out
}

func stripBlocks(blocks map[string]schema.Block) map[string]schema.Block {
	out := make(map[string]schema.Block, len(blocks))
	for k, b := range blocks {
		switch b := b.(type) {
		case schema.SingleNestedBlock:
			b.Attributes = stripAttributes(b.Attributes)
			b.Blocks = stripBlocks(b.Blocks)
			b.Validators, b.PlanModifiers = nil, nil
			out[k] = b
		default:
			panic(fmt.Sprintf("benchfloor: block %s: %T is not handled", k, b))
		}
	}
	return out
}

// like is a resource of a given schema that keeps what it is given.
type like struct {
	name   string
	schema schema.Schema
}

func (r like) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + r.name
}

func (r like) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = r.schema
}

// known is v with its unknown values (computed attributes not yet set)
// made known: a string "{}" (valid for the JSON ones too), a number 1, false, or null.
func known(v tftypes.Value) (tftypes.Value, error) {
	return tftypes.Transform(v, func(_ *tftypes.AttributePath, v tftypes.Value) (tftypes.Value, error) {
		if v.IsKnown() {
			return v, nil
		}
		switch t := v.Type(); {
		case t.Is(tftypes.String):
			return tftypes.NewValue(t, "{}"), nil
		case t.Is(tftypes.Number):
			return tftypes.NewValue(t, big.NewFloat(1)), nil
		case t.Is(tftypes.Bool):
			return tftypes.NewValue(t, false), nil
		default:
			return tftypes.NewValue(t, nil), nil
		}
	})
}

func (like) Create(_ context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	v, err := known(req.Plan.Raw)
	if err != nil {
		resp.Diagnostics.AddError("floor create", err.Error())
		return
	}
	resp.State.Raw = v
}

// Read keeps the state: the response starts as a copy of it.
func (like) Read(context.Context, resource.ReadRequest, *resource.ReadResponse) {}

func (like) Update(_ context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	v, err := known(req.Plan.Raw)
	if err != nil {
		resp.Diagnostics.AddError("floor update", err.Error())
		return
	}
	resp.State.Raw = v
}

func (like) Delete(context.Context, resource.DeleteRequest, *resource.DeleteResponse) {}
