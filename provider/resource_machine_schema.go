// The baremetal_machine resource: its schema and state model.

package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
)

// Values of wait_for.
const (
	waitInstalled = "installed"
	waitOSReady   = "os_ready"
	// phoneHomePath is provisiond's phone-home path: user data or a
	// template that mentions it sets the installed OS up to call it.
	phoneHomePath = "/phone-home"
)

type machineModel struct {
	ID                types.String   `tfsdk:"id"`
	HardwareID        types.String   `tfsdk:"hardware_id"`
	TemplateID        types.String   `tfsdk:"template_id"`
	Parameters        types.Map      `tfsdk:"parameters"`
	SensitiveParams   types.Map      `tfsdk:"sensitive_parameters"`
	UserData          types.String   `tfsdk:"user_data"`
	UserDataWO        types.String   `tfsdk:"user_data_wo"`
	UserDataWOVersion types.Int64    `tfsdk:"user_data_wo_version"`
	SSHKeys           types.List     `tfsdk:"ssh_keys"`
	Wipe              types.String   `tfsdk:"wipe"`
	Power             types.String   `tfsdk:"power"`
	Timeouts          timeouts.Value `tfsdk:"timeouts"`
	State             types.String   `tfsdk:"state"`
	IP                types.String   `tfsdk:"ip"`
	WorkflowID        types.String   `tfsdk:"workflow_id"`
	ProvisionedAt     types.String   `tfsdk:"provisioned_at"`
	WaitFor           types.String   `tfsdk:"wait_for"`
	OSReadyAt         types.String   `tfsdk:"os_ready_at"`
	Error             types.String   `tfsdk:"error"`
	OutputTail        types.String   `tfsdk:"output_tail"`
	Reinstall         types.Object   `tfsdk:"reinstall"`
}

func (r *machineResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A server installed with a template. Create PXE-boots the hardware into the agent OS, runs the template's actions and waits until the server has booted from its disk; destroy wipes the disks and powers the server off, or only powers it off and frees the hardware when the install never started an action that writes disks (provisiond knows which ran; its events say so). With `reinstall.enabled`, a change of what is installed reinstalls the same machine in place instead of replacing it. A plan that creates, replaces or reinstalls a machine has provisiond render its template for the hardware with the planned inputs, as the install will: a template error or a missing parameter shows as a warning in the plan, before anything boots.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Description:   "The machine id: its hardware id.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"hardware_id": schema.StringAttribute{
				Description:   "Id of the `baremetal_hardware` to install. Changing it replaces the machine.",
				Required:      true,
				Validators:    []validator.String{idValidator()},
				PlanModifiers: replace,
			},
			"template_id": schema.StringAttribute{
				Description:   "Id of the `baremetal_template` to install with. " + reinstallDoc,
				Required:      true,
				PlanModifiers: []planmodifier.String{replaceUnlessReinstallString()},
			},
			"parameters": schema.MapAttribute{
				Description:   "Values the template reads as `{{ .Params.NAME }}`, e.g. an image URL. Changing them replaces the machine, or with `reinstall.enabled` reinstalls it in place.",
				Optional:      true,
				ElementType:   types.StringType,
				Validators:    []validator.Map{mapvalidator.SizeAtLeast(1)},
				PlanModifiers: []planmodifier.Map{replaceUnlessReinstallMap()},
			},
			"user_data": schema.StringAttribute{
				Description:   "User data (e.g. cloud-init) that the metadata service serves to the installed server at `/2009-04-04/user-data`. " + reinstallDoc + " Terraform keeps it in state (marked sensitive); prefer `user_data_wo` with Terraform 1.11 or later when it holds secrets.",
				Optional:      true,
				Sensitive:     true,
				Validators:    []validator.String{stringvalidator.ConflictsWith(path.MatchRoot("user_data_wo"))},
				PlanModifiers: []planmodifier.String{replaceUnlessReinstallString()},
			},
			"sensitive_parameters": schema.MapAttribute{
				Description:   "Template parameters that are secrets (passwords, tokens, keys). Templates read them as `{{ .Params.NAME }}` exactly like `parameters`, with which provisiond merges them for rendering; a name may not be in both. Marked sensitive: plans and logs never show them. Terraform state holds them (as it holds every sensitive value); provisiond renders them into the workflow but never returns them from its Admin API. Changing them replaces the machine, or with `reinstall.enabled` reinstalls it in place.",
				Optional:      true,
				Sensitive:     true,
				ElementType:   types.StringType,
				Validators:    []validator.Map{mapvalidator.SizeAtLeast(1)},
				PlanModifiers: []planmodifier.Map{replaceUnlessReinstallMap()},
			},
			"user_data_wo": schema.StringAttribute{
				Description: "User data like `user_data`, write-only: sent to provisiond at install but never stored in Terraform state or plan (Terraform 1.11 or later). Terraform cannot see a change of a write-only value: change `user_data_wo_version` to install again with new user data. Conflicts with `user_data`.",
				Optional:    true,
				Sensitive:   true,
				WriteOnly:   true,
				Validators: []validator.String{
					stringvalidator.ConflictsWith(path.MatchRoot("user_data")),
					stringvalidator.AlsoRequires(path.MatchRoot("user_data_wo_version")),
				},
			},
			"user_data_wo_version": schema.Int64Attribute{
				Description:   "Any number, required with `user_data_wo`; changing it installs the server again with the current `user_data_wo`: it replaces the machine, or with `reinstall.enabled` reinstalls it in place.",
				Optional:      true,
				Validators:    []validator.Int64{int64validator.AlsoRequires(path.MatchRoot("user_data_wo"))},
				PlanModifiers: []planmodifier.Int64{replaceUnlessReinstallInt64()},
			},
			"ssh_keys": schema.ListAttribute{
				Description: "SSH public keys served as the EC2-style `public-keys`. Changing them replaces the machine, or with `reinstall.enabled` reinstalls it in place.",
				Optional:    true,
				ElementType: types.StringType,
				Validators: []validator.List{listvalidator.SizeAtLeast(1),
					listvalidator.ValueStringsAre(stringCheck{desc: "SSH public key", check: hwspec.SSHKey})},
				PlanModifiers: []planmodifier.List{replaceUnlessReinstallList()},
			},
			"wipe": schema.StringAttribute{
				Description: "What destroy does to the disks: `none`, `quick` (partition tables and file system signatures), `zero` (write zeros over every disk: slow) or `discard` (TRIM/UNMAP every block). Changes apply in place; they matter at destroy. A machine whose install never started an action that writes disks (`image2disk`, `writefile`, `cexec`, `exec`) is not wiped whatever this says: there is nothing of it on the disks, so destroy only powers it off (no wipe boot).",
				Optional:    true,
				Computed:    true,
				Default:     stringdefault.StaticString("quick"),
				Validators:  []validator.String{wipeValidator()},
			},
			"power": schema.StringAttribute{
				Description:   "Desired power state once installed: `on` or `off`. Changes in place through the BMC. Unset: not managed, and the attribute shows the state provisiond last saw.",
				Optional:      true,
				Computed:      true,
				Validators:    []validator.String{stringvalidator.OneOf("on", "off")},
				PlanModifiers: keep,
			},
			"state": schema.StringAttribute{
				Description:   "State of the machine's last workflow: `pending`, `booting`, `running`, `succeeded`, `failed`, `timed_out` or `cancelled`.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"ip": schema.StringAttribute{
				Description:   "IPv4 address of the boot interface, without prefix length (null when the hardware has no reservation).",
				Computed:      true,
				PlanModifiers: keep,
			},
			"workflow_id": schema.StringAttribute{
				Description:   "Id of the workflow that installed the machine; provisiond's log and events name it.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"provisioned_at": schema.StringAttribute{
				Description:   "When the installation finished (RFC 3339), null until it succeeded.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"wait_for": schema.StringAttribute{
				Description: "What create waits for: `installed` (the workflow succeeded: the server was reset into its disk, or the agent started the installed kernel by kexec) or `os_ready` (then also until the installed OS phoned home to provisiond's `POST /phone-home`, e.g. with cloud-init's `phone_home` module). " +
					"Unset: `os_ready` when the machine's user data or the template's content mention provisiond's phone-home path `/phone-home` (they set the OS up to call it), else `installed`. " +
					"`timeouts.create` bounds the whole wait. Changes apply in place and only affect waiting.",
				Optional:   true,
				Validators: []validator.String{stringvalidator.OneOf(waitInstalled, waitOSReady)},
			},
			"os_ready_at": schema.StringAttribute{
				Description:   "When the installed OS phoned home to provisiond (RFC 3339), null until it did.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"error": schema.StringAttribute{
				Description:   "Why the last workflow failed, null when it did not.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"output_tail": schema.StringAttribute{
				Description:   "The last lines of output of the action that failed, null when none failed.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"reinstall": reinstallAttribute(),
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{
				Create: true, Update: true, Delete: true,
				CreateDescription: "How long to wait for the installation (default 60m). On timeout the machine stays in state as tainted.",
				UpdateDescription: "How long to wait for a power change (default 10m) or a reinstall (`reinstall.enabled`; default 60m).",
				DeleteDescription: "How long to wait for the wipe (default 30m).",
			}),
		},
	}
}
