package provider

import (
	"context"
	"errors"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/template"
)

var (
	_ resource.ResourceWithConfigure      = (*templateResource)(nil)
	_ resource.ResourceWithImportState    = (*templateResource)(nil)
	_ resource.ResourceWithValidateConfig = (*templateResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*templateResource)(nil)
)

// templateResource manages a workflow template.
type templateResource struct {
	client *apiClient
}

// NewTemplateResource returns the baremetal_template resource.
func NewTemplateResource() resource.Resource { return &templateResource{} }

type templateModel struct {
	ID      types.String `tfsdk:"id"`
	Name    types.String `tfsdk:"name"`
	Content types.String `tfsdk:"content"`
	Tasks   types.List   `tfsdk:"tasks"`
}

// taskType is the object type of one element of tasks.
var taskType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"name":    types.StringType,
	"actions": types.ListType{ElemType: types.StringType},
}}

func (r *templateResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_template"
}

func (r *templateResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A workflow template: the YAML (Tinkerbell-compatible) that lists the tasks and actions a machine runs to install. It is checked at plan time by the same code provisiond runs.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Description:   "Template id, chosen by provisiond.",
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Description: "Unique name of the template.",
				Required:    true,
				Validators:  []validator.String{stringCheck{desc: "template name", check: nonEmpty}},
			},
			"content": schema.StringAttribute{
				Description: "The template: YAML with `version`, `name`, `global_timeout` and `tasks[]` of `actions[]`, rendered with Go text/template against the hardware, the machine's parameters and provisiond's facts. Errors are reported at plan time with their line. Machines already installed keep the actions they ran; changing the content does not reinstall them.",
				Required:    true,
			},
			"tasks": schema.ListAttribute{
				Description: "The parsed task names and their action names, in the order they run; known at plan time unless the template shapes its YAML with `{{ if }}` or `{{ range }}`.",
				Computed:    true,
				ElementType: taskType,
			},
		},
	}
}

func nonEmpty(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func (r *templateResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig parses the content with internal/template, the code
// provisiond runs, so mistakes surface at plan time with their line.
func (r *templateResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var content types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("content"), &content)...)
	if content.IsNull() || content.IsUnknown() {
		return
	}
	if _, err := template.Parse(content.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("content"), "Invalid workflow template", templateErrorDetail(err))
	}
}

func templateErrorDetail(err error) string {
	detail := err.Error()
	var te *template.Error
	if errors.As(err, &te) && te.Line > 0 {
		detail += "\n\nThe line number counts from the first line of content (a heredoc starts at the line after <<EOT)."
	}
	return detail
}

// ModifyPlan plans tasks from the content, with the same parser.
func (r *templateResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy
	}
	var plan templateModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || plan.Content.IsUnknown() {
		return
	}
	t, err := template.Parse(plan.Content.ValueString())
	if err != nil || t.Dynamic {
		return // ValidateConfig reported it, or only rendering knows the tasks
	}
	var summary []*pb.TemplateTask
	for _, s := range t.Summary() {
		summary = append(summary, &pb.TemplateTask{Name: s.Name, Actions: s.Actions})
	}
	tasks, diags := tasksValue(summary)
	resp.Diagnostics.Append(diags...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("tasks"), tasks)...)
}

func tasksValue(tasks []*pb.TemplateTask) (types.List, diag.Diagnostics) {
	var diags diag.Diagnostics
	elems := make([]attr.Value, 0, len(tasks))
	for _, t := range tasks {
		actions := make([]attr.Value, 0, len(t.GetActions()))
		for _, a := range t.GetActions() {
			actions = append(actions, types.StringValue(a))
		}
		al, d := types.ListValue(types.StringType, actions)
		diags.Append(d...)
		o, d := types.ObjectValue(taskType.AttrTypes, map[string]attr.Value{"name": types.StringValue(t.GetName()), "actions": al})
		diags.Append(d...)
		elems = append(elems, o)
	}
	l, d := types.ListValue(taskType, elems)
	diags.Append(d...)
	return l, diags
}

func templateFromPB(t *pb.Template) (templateModel, diag.Diagnostics) {
	tasks, diags := tasksValue(t.GetTasks())
	return templateModel{
		ID:      types.StringValue(t.GetId()),
		Name:    types.StringValue(t.GetName()),
		Content: types.StringValue(t.GetContent()),
		Tasks:   tasks,
	}, diags
}

func (r *templateResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan templateModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Name: plan.Name.ValueString(), Content: plan.Content.ValueString()}})
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot create template "+plan.Name.ValueString(), err)
		return
	}
	tflog.Info(ctx, "template created", map[string]any{"id": out.GetId(), "name": out.GetName()})
	m, diags := templateFromPB(out)
	resp.Diagnostics.Append(diags...)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func (r *templateResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state templateModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.GetTemplate(ctx, &pb.GetTemplateRequest{Id: state.ID.ValueString()})
	if isNotFound(err) {
		tflog.Warn(ctx, "template is gone from provisiond: removing it from state", map[string]any{"id": state.ID.ValueString()})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot read template "+state.ID.ValueString(), err)
		return
	}
	m, diags := templateFromPB(out)
	resp.Diagnostics.Append(diags...)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func (r *templateResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan, state templateModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.UpdateTemplate(ctx, &pb.UpdateTemplateRequest{Template: &pb.Template{
		Id: state.ID.ValueString(), Name: plan.Name.ValueString(), Content: plan.Content.ValueString(),
	}})
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot update template "+state.ID.ValueString(), err)
		return
	}
	m, diags := templateFromPB(out)
	resp.Diagnostics.Append(diags...)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func (r *templateResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state templateModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	_, err := r.client.DeleteTemplate(ctx, &pb.DeleteTemplateRequest{Id: id})
	switch {
	case err == nil, isNotFound(err):
	case isFailedPrecondition(err):
		resp.Diagnostics.AddError("Template "+id+" is in use",
			"A machine installed with this template still exists, so provisiond keeps the template. Destroy the baremetal_machine resources that use it first.\n\n"+apiErrorDetail(r.client, err))
	default:
		addAPIError(&resp.Diagnostics, r.client, "Cannot delete template "+id, err)
	}
}

func (r *templateResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
