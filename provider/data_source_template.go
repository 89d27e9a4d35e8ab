package provider

import (
	"context"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

var (
	_ datasource.DataSourceWithConfigure        = (*templateDataSource)(nil)
	_ datasource.DataSourceWithConfigValidators = (*templateDataSource)(nil)
)

// templateDataSource looks up a workflow template by id or name.
type templateDataSource struct {
	client *apiClient
}

// NewTemplateDataSource returns the baremetal_template data source.
func NewTemplateDataSource() datasource.DataSource { return &templateDataSource{} }

func (d *templateDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_template"
}

func (d *templateDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Looks up a workflow template by id or name.",
		Attributes: map[string]schema.Attribute{
			"id":      schema.StringAttribute{Description: "Template id to look up.", Optional: true, Computed: true},
			"name":    schema.StringAttribute{Description: "Template name to look up.", Optional: true, Computed: true},
			"content": schema.StringAttribute{Description: "The template's YAML.", Computed: true},
			"tasks": schema.ListAttribute{
				Description: "The parsed task names and their action names.",
				Computed:    true,
				ElementType: taskType,
			},
		},
	}
}

func (d *templateDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("name"))}
}

func (d *templateDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func itoa(n int) string { return strconv.Itoa(n) }

func (d *templateDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	if d.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var cfg templateModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var t *pb.Template
	if !cfg.ID.IsNull() {
		var err error
		t, err = d.client.GetTemplate(ctx, &pb.GetTemplateRequest{Id: cfg.ID.ValueString()})
		if isNotFound(err) {
			resp.Diagnostics.AddError("No template "+cfg.ID.ValueString(), "provisiond knows no template with that id.")
			return
		}
		if err != nil {
			addAPIError(&resp.Diagnostics, d.client, "Cannot read template "+cfg.ID.ValueString(), err)
			return
		}
	} else {
		all, err := d.client.ListTemplates(ctx, &pb.ListTemplatesRequest{})
		if err != nil {
			addAPIError(&resp.Diagnostics, d.client, "Cannot list templates", err)
			return
		}
		for _, x := range all.GetTemplates() {
			if x.GetName() == cfg.Name.ValueString() {
				t = x
			}
		}
		if t == nil {
			resp.Diagnostics.AddError("No template named "+cfg.Name.ValueString(), "provisiond knows no template with that name.")
			return
		}
	}
	m, diags := templateFromPB(t)
	resp.Diagnostics.Append(diags...)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}
