package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

var _ datasource.DataSourceWithConfigure = (*machineDataSource)(nil)

// machineDataSource reads a machine: what is installed on some hardware.
type machineDataSource struct {
	client *apiClient
}

// NewMachineDataSource returns the baremetal_machine data source.
func NewMachineDataSource() datasource.DataSource { return &machineDataSource{} }

type machineDataModel struct {
	HardwareID    types.String `tfsdk:"hardware_id"`
	TemplateID    types.String `tfsdk:"template_id"`
	Parameters    types.Map    `tfsdk:"parameters"`
	SSHKeys       types.List   `tfsdk:"ssh_keys"`
	Wipe          types.String `tfsdk:"wipe"`
	Power         types.String `tfsdk:"power"`
	State         types.String `tfsdk:"state"`
	IP            types.String `tfsdk:"ip"`
	WorkflowID    types.String `tfsdk:"workflow_id"`
	ProvisionedAt types.String `tfsdk:"provisioned_at"`
	OSReadyAt     types.String `tfsdk:"os_ready_at"`
	Error         types.String `tfsdk:"error"`
	OutputTail    types.String `tfsdk:"output_tail"`
}

func (d *machineDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine"
}

func (d *machineDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	c := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Description: desc, Computed: true}
	}
	resp.Schema = schema.Schema{
		Description: "Reads the machine installed on a piece of hardware: its template, parameters and the state of its last workflow. User data is not exposed.",
		Attributes: map[string]schema.Attribute{
			"hardware_id":    schema.StringAttribute{Description: "Hardware id of the machine.", Required: true},
			"template_id":    c("Id of the template it was installed with."),
			"parameters":     schema.MapAttribute{Description: "Template parameters, the machine's `sensitive_parameters` included (provisiond does not yet tell them apart), so the whole map is marked sensitive.", Computed: true, Sensitive: true, ElementType: types.StringType},
			"ssh_keys":       schema.ListAttribute{Description: "SSH public keys.", Computed: true, ElementType: types.StringType},
			"wipe":           c("Wipe applied when the machine is deprovisioned."),
			"power":          c("Power state provisiond last saw: `on`, `off`, `unknown`, or null."),
			"state":          c("State of the machine's last workflow."),
			"ip":             c("IPv4 address of the boot interface."),
			"workflow_id":    c("Id of the machine's current workflow."),
			"provisioned_at": c("When the installation finished (RFC 3339)."),
			"os_ready_at":    c("When the installed OS phoned home to provisiond (RFC 3339), null until it did."),
			"error":          c("Why the last workflow failed, if it did."),
			"output_tail":    c("Last output lines of the failed action, if any."),
		},
	}
}

func (d *machineDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *machineDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	if d.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var cfg machineDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := cfg.HardwareID.ValueString()
	pm, err := d.client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: id})
	if isNotFound(err) {
		resp.Diagnostics.AddError("No machine on hardware "+id, "Nothing is installed on that hardware (or it does not exist).")
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, d.client, "Cannot read machine "+id, err)
		return
	}
	hw, err := d.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: id})
	if err != nil {
		addAPIError(&resp.Diagnostics, d.client, "Cannot read hardware "+id, err)
		return
	}
	var m machineModel
	m.Power = types.StringUnknown()
	fillDesired(&m, pm)
	fillComputed(&m, pm, hw)
	out := machineDataModel{
		HardwareID: m.HardwareID, TemplateID: m.TemplateID, Parameters: m.Parameters, SSHKeys: m.SSHKeys,
		Wipe: m.Wipe, Power: strOrNull(powerName(hw.GetPower())), State: m.State, IP: m.IP, WorkflowID: m.WorkflowID,
		ProvisionedAt: m.ProvisionedAt, OSReadyAt: m.OSReadyAt, Error: m.Error, OutputTail: m.OutputTail,
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, out)...)
}
