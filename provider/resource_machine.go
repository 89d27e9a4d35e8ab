package provider

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
)

var (
	_ resource.ResourceWithConfigure      = (*machineResource)(nil)
	_ resource.ResourceWithImportState    = (*machineResource)(nil)
	_ resource.ResourceWithValidateConfig = (*machineResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*machineResource)(nil)
)

// Default timeouts of the machine's operations.
const (
	defaultCreateTimeout = 60 * time.Minute
	defaultUpdateTimeout = 10 * time.Minute
	defaultDeleteTimeout = 30 * time.Minute
)

// Values of wait_for.
const (
	waitInstalled = "installed"
	waitOSReady   = "os_ready"
	// phoneHomePath is provisiond's phone-home path: user data or a
	// template that mentions it sets the installed OS up to call it.
	phoneHomePath = "/phone-home"
)

// machineResource installs an operating system on hardware and wipes it
// on destroy.
type machineResource struct {
	client *apiClient
	// retryWait is the pause before following a workflow again after the
	// stream broke; tests shorten it.
	retryWait time.Duration
	// progressEvery is how often a wait for the installed OS logs that it
	// still waits (0: 30 s).
	progressEvery time.Duration
}

// NewMachineResource returns the baremetal_machine resource.
func NewMachineResource() resource.Resource { return &machineResource{retryWait: 2 * time.Second} }

// ModifyPlan plans id and ip from the hardware when the machine is created
// or replaced: both are known before apply (the id is the hardware id, the
// ip the hardware's boot address), so what reads `.ip` (DNS records,
// inventories) does not churn with "(known after apply)". When the
// hardware is not readable yet (created in the same apply) ip stays
// unknown; a failed read is not an error here, apply reports it.
func (r *machineResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy
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
}

func (r *machineResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_machine"
}

func (r *machineResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Description: "A server installed with a template. Create PXE-boots the hardware into the agent OS, runs the template's actions and waits until the server has booted from its disk; destroy wipes the disks and powers the server off.",
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
				Description:   "Id of the `baremetal_template` to install with. Changing it reinstalls the server.",
				Required:      true,
				PlanModifiers: replace,
			},
			"parameters": schema.MapAttribute{
				Description:   "Values the template reads as `{{ .Params.NAME }}`, e.g. an image URL. Changing them reinstalls the server.",
				Optional:      true,
				ElementType:   types.StringType,
				Validators:    []validator.Map{mapvalidator.SizeAtLeast(1)},
				PlanModifiers: []planmodifier.Map{mapplanmodifier.RequiresReplace()},
			},
			"user_data": schema.StringAttribute{
				Description:   "User data (e.g. cloud-init) that the metadata service serves to the installed server at `/2009-04-04/user-data`. Changing it reinstalls the server. Terraform keeps it in state (marked sensitive); prefer `user_data_wo` with Terraform 1.11 or later when it holds secrets.",
				Optional:      true,
				Sensitive:     true,
				Validators:    []validator.String{stringvalidator.ConflictsWith(path.MatchRoot("user_data_wo"))},
				PlanModifiers: replace,
			},
			"sensitive_parameters": schema.MapAttribute{
				Description:   "Template parameters that are secrets (passwords, tokens, keys). Templates read them as `{{ .Params.NAME }}` exactly like `parameters`, with which provisiond merges them for rendering; a name may not be in both. Marked sensitive: plans and logs never show them. Terraform state holds them (as it holds every sensitive value); provisiond renders them into the workflow but never returns them from its Admin API. Changing them reinstalls the server.",
				Optional:      true,
				Sensitive:     true,
				ElementType:   types.StringType,
				Validators:    []validator.Map{mapvalidator.SizeAtLeast(1)},
				PlanModifiers: []planmodifier.Map{mapplanmodifier.RequiresReplace()},
			},
			"user_data_wo": schema.StringAttribute{
				Description: "User data like `user_data`, write-only: sent to provisiond at install but never stored in Terraform state or plan (Terraform 1.11 or later). Terraform cannot see a change of a write-only value: change `user_data_wo_version` to reinstall with new user data. Conflicts with `user_data`.",
				Optional:    true,
				Sensitive:   true,
				WriteOnly:   true,
				Validators: []validator.String{
					stringvalidator.ConflictsWith(path.MatchRoot("user_data")),
					stringvalidator.AlsoRequires(path.MatchRoot("user_data_wo_version")),
				},
			},
			"user_data_wo_version": schema.Int64Attribute{
				Description:   "Any number, required with `user_data_wo`; changing it reinstalls the server with the current `user_data_wo`.",
				Optional:      true,
				Validators:    []validator.Int64{int64validator.AlsoRequires(path.MatchRoot("user_data_wo"))},
				PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace()},
			},
			"ssh_keys": schema.ListAttribute{
				Description: "SSH public keys served as the EC2-style `public-keys`. Changing them reinstalls the server.",
				Optional:    true,
				ElementType: types.StringType,
				Validators: []validator.List{listvalidator.SizeAtLeast(1),
					listvalidator.ValueStringsAre(stringCheck{desc: "SSH public key", check: hwspec.SSHKey})},
				PlanModifiers: []planmodifier.List{listplanmodifier.RequiresReplace()},
			},
			"wipe": schema.StringAttribute{
				Description: "What destroy does to the disks: `none`, `quick` (partition tables and file system signatures), `zero` (write zeros over every disk: slow) or `discard` (TRIM/UNMAP every block). Changes apply in place; they matter at destroy.",
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
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{
				Create: true, Update: true, Delete: true,
				CreateDescription: "How long to wait for the installation (default 60m). On timeout the machine stays in state as tainted.",
				UpdateDescription: "How long to wait for a power change (default 10m).",
				DeleteDescription: "How long to wait for the wipe (default 30m).",
			}),
		},
	}
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

func (r *machineResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// stateName is the lower-case name of an API state ("succeeded").
func stateName(s pb.State) string {
	if s == pb.State_STATE_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func terminal(s pb.State) bool { return client.Terminal(s) }

// failedAction returns the action that failed or timed out, if any.
func failedAction(w *pb.Workflow) *pb.ActionStatus {
	for _, a := range w.GetActions() {
		if a.GetState() == pb.State_STATE_FAILED || a.GetState() == pb.State_STATE_TIMED_OUT {
			return a
		}
	}
	return nil
}

// fillComputed sets the attributes read from provisiond.
func fillComputed(m *machineModel, pm *pb.Machine, hw *pb.Hardware) {
	m.ID = types.StringValue(pm.GetHardwareId())
	m.HardwareID = types.StringValue(pm.GetHardwareId())
	w := pm.GetWorkflow()
	m.State = strOrNull(stateName(w.GetState()))
	m.WorkflowID = strOrNull(w.GetId())
	m.ProvisionedAt = types.StringNull()
	if pm.GetProvisionedAt() != nil {
		m.ProvisionedAt = types.StringValue(pm.GetProvisionedAt().AsTime().UTC().Format(time.RFC3339))
	}
	m.OSReadyAt = types.StringNull()
	if pm.GetOsReadyAt() != nil {
		m.OSReadyAt = types.StringValue(pm.GetOsReadyAt().AsTime().UTC().Format(time.RFC3339))
	}
	m.Error, m.OutputTail = types.StringNull(), types.StringNull()
	if a := failedAction(w); a != nil {
		msg := fmt.Sprintf("action %q of task %q %s", a.GetName(), a.GetTask(), stateName(a.GetState()))
		if a.GetMessage() != "" {
			msg += ": " + a.GetMessage()
		}
		m.Error = types.StringValue(msg)
		m.OutputTail = strOrNull(a.GetOutputTail())
	} else if w.GetError() != "" {
		m.Error = types.StringValue(w.GetError())
	}
	m.IP = types.StringNull()
	if nics := hw.GetInterfaces(); len(nics) > 0 && nics[0].GetIp() != "" {
		ip, _, _ := strings.Cut(nics[0].GetIp(), "/")
		m.IP = types.StringValue(ip)
	}
	switch hw.GetPower() {
	case pb.PowerState_POWER_STATE_ON:
		m.Power = types.StringValue("on")
	case pb.PowerState_POWER_STATE_OFF:
		m.Power = types.StringValue("off")
	default:
		if m.Power.IsUnknown() {
			m.Power = types.StringNull()
		}
	}
}

// fillDesired sets the configured attributes from provisiond's view, for
// Read: a change made outside Terraform shows as drift. m holds the prior
// state: provisiond returns sensitive parameters among the plain ones, so
// the names in m.SensitiveParams say which are which; and user data sent
// write-only stays out of state.
func fillDesired(m *machineModel, pm *pb.Machine) {
	m.TemplateID = types.StringValue(pm.GetTemplateId())
	m.Parameters, m.SensitiveParams = splitParameters(pm.GetParameters(), m.SensitiveParams)
	if writeOnly := m.UserData.IsNull() && !m.UserDataWOVersion.IsNull(); !writeOnly {
		m.UserData = strOrNull(pm.GetUserData())
	} // else: sent as user_data_wo, never read back into state
	m.UserDataWO = types.StringNull()
	m.SSHKeys = stringList(pm.GetSshKeys())
	if m.Wipe.IsNull() || m.Wipe.IsUnknown() {
		// Import: take provisiond's. Otherwise the state's wins: destroy
		// passes it explicitly.
		m.Wipe = types.StringValue(pm.GetWipe())
		if pm.GetWipe() == "" {
			m.Wipe = types.StringValue("quick")
		}
	}
}

// splitParameters sorts provisiond's parameters into plain and sensitive
// ones by the names of the prior sensitive ones. A prior sensitive name
// that provisiond does not return keeps its prior value (a provisiond
// that hides them). Without prior sensitive names (import) every
// parameter is plain.
func splitParameters(got map[string]string, priorSensitive types.Map) (plain, sensitive types.Map) {
	if priorSensitive.IsNull() || priorSensitive.IsUnknown() || len(priorSensitive.Elements()) == 0 {
		return stringMap(got), types.MapNull(types.StringType)
	}
	rest := maps.Clone(got)
	secret := map[string]string{}
	for k, v := range priorSensitive.Elements() {
		if g, ok := rest[k]; ok {
			secret[k] = g
			delete(rest, k)
		} else if s, ok := v.(types.String); ok {
			secret[k] = s.ValueString()
		}
	}
	return stringMap(rest), stringMap(secret)
}

// failureDetail explains a failed workflow: the action, its message and
// output tail.
func failureDetail(what string, w *pb.Workflow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The %s workflow %s of hardware %s ended %s.", what, w.GetId(), w.GetHardwareId(), stateName(w.GetState()))
	if a := failedAction(w); a != nil {
		fmt.Fprintf(&b, "\n\nFailed action: %q (task %q, image %s, attempt %d)", a.GetName(), a.GetTask(), a.GetImage(), a.GetAttempt())
		if a.GetMessage() != "" {
			fmt.Fprintf(&b, "\nMessage: %s", a.GetMessage())
		}
		if a.GetOutputTail() != "" {
			fmt.Fprintf(&b, "\n\nLast output of the action:\n%s", a.GetOutputTail())
		}
	}
	if w.GetError() != "" {
		fmt.Fprintf(&b, "\n\nError: %s", w.GetError())
	}
	return b.String()
}

// follow streams the events of a workflow into the Terraform log until
// the workflow ends, and returns its final snapshot (client.Follow: a
// broken stream, a provisiond restart, is followed again until ctx ends).
// For a deprovision workflow, the machine being gone means it succeeded.
// With untilReady, a provision that succeeded is followed further, until
// its installed OS phones home (an "os_ready" event, or os_ready_at on the
// machine); ready says whether it did.
func (r *machineResource) follow(ctx context.Context, hardwareID, workflowID string, deprovision, untilReady bool) (w *pb.Workflow, ready bool, err error) {
	lastState := pb.State_STATE_UNSPECIFIED
	stopProgress := func() {}
	defer func() { stopProgress() }()
	f, err := client.Follow(ctx, r.client, client.Watch{
		HardwareID: hardwareID, WorkflowID: workflowID, Deprovision: deprovision, UntilOSReady: untilReady, RetryWait: r.retryWait,
		OnEvent: func(ev *pb.Event) error {
			logEvent(ctx, ev)
			if w := ev.GetWorkflow(); w != nil && w.GetState() != lastState {
				lastState = w.GetState()
				tflog.Info(ctx, "workflow "+stateName(lastState), map[string]any{"workflow_id": w.GetId(), "hardware_id": hardwareID})
			}
			return nil
		},
		OnAwaitOS: func(*pb.Workflow) {
			fields := map[string]any{"workflow_id": workflowID, "hardware_id": hardwareID}
			tflog.Info(ctx, "installed: waiting for the installed OS to phone home (wait_for = \"os_ready\")", fields)
			stopProgress = progress(ctx, r.progressEvery, "still waiting for the installed OS to phone home", fields)
		},
		OnFollowAgain: func(err error) {
			tflog.Debug(ctx, "workflow stream ended early: following again", map[string]any{"workflow_id": workflowID, "error": fmt.Sprint(err)})
		},
	})
	return f.Workflow, f.OSReady, err
}

// progress logs msg every interval, with the time waited, until stop is
// called or ctx ends.
func progress(ctx context.Context, every time.Duration, msg string, fields map[string]any) (stop func()) {
	if every <= 0 {
		every = 30 * time.Second
	}
	stopped := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stopped:
				return
			case <-t.C:
				f := maps.Clone(fields)
				f["waited"] = time.Since(start).Round(time.Second).String()
				tflog.Info(ctx, msg, f)
			}
		}
	}()
	return func() { close(stopped); <-finished }
}

func logEvent(ctx context.Context, ev *pb.Event) {
	fields := map[string]any{"workflow_id": ev.GetWorkflowId(), "hardware_id": ev.GetHardwareId()}
	if ev.GetTask() != "" {
		fields["task"] = ev.GetTask()
	}
	if ev.GetAction() != "" {
		fields["action"] = ev.GetAction()
	}
	switch ev.GetType() {
	case client.EventAction:
		msg := fmt.Sprintf("action %s %s", ev.GetAction(), stateName(ev.GetState()))
		if ev.GetMessage() != "" {
			msg += ": " + ev.GetMessage()
		}
		tflog.Info(ctx, msg, fields)
	case client.EventLog:
		tflog.Debug(ctx, ev.GetMessage(), fields)
	default:
		msg := ev.GetType()
		if s := stateName(ev.GetState()); s != "" {
			msg += " " + s
		}
		if ev.GetMessage() != "" {
			msg += ": " + ev.GetMessage()
		}
		tflog.Info(ctx, msg, fields)
	}
}

// detached is a short context for bookkeeping after ctx ended, so a
// timed-out create still records what it knows.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// refresh reads the machine and its hardware into m.
func (r *machineResource) refresh(ctx context.Context, m *machineModel) error {
	pm, err := r.client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: m.HardwareID.ValueString()})
	if err != nil {
		return err
	}
	hw, err := r.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: pm.GetHardwareId()})
	if err != nil {
		return err
	}
	fillComputed(m, pm, hw)
	return nil
}

func (r *machineResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan machineModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Create(ctx, defaultCreateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	preq := &pb.ProvisionMachineRequest{
		HardwareId: plan.HardwareID.ValueString(), TemplateId: plan.TemplateID.ValueString(),
		UserData: plan.UserData.ValueString(), Wipe: plan.Wipe.ValueString(),
	}
	resp.Diagnostics.Append(plan.Parameters.ElementsAs(ctx, &preq.Parameters, false)...)
	resp.Diagnostics.Append(plan.SensitiveParams.ElementsAs(ctx, &preq.SensitiveParameters, false)...)
	var wo types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("user_data_wo"), &wo)...)
	if !wo.IsNull() && !wo.IsUnknown() {
		preq.UserData = wo.ValueString()
	}
	resp.Diagnostics.Append(plan.SSHKeys.ElementsAs(ctx, &preq.SshKeys, false)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx = tflog.SetField(ctx, "hardware_id", preq.HardwareId)
	waitReady, why := r.waitForOS(wctx, plan.WaitFor, preq)
	tflog.Info(ctx, "create waits for "+map[bool]string{false: waitInstalled, true: waitOSReady}[waitReady], map[string]any{"reason": why})
	pm, err := r.client.ProvisionMachine(wctx, preq)
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot start provisioning hardware "+preq.HardwareId, err)
		return
	}
	wfID := pm.GetWorkflow().GetId()
	tflog.Info(ctx, "provision workflow started", map[string]any{"workflow_id": wfID, "timeout": timeout.String()})

	// From here on the machine exists: save it first, so that any error
	// below leaves it in state, tainted, never orphaned.
	want := plan.Power
	fillComputed(&plan, pm, nil)
	if !want.IsNull() && !want.IsUnknown() {
		plan.Power = want // a configured value is what state holds
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)

	w, ready, werr := r.follow(wctx, preq.HardwareId, wfID, false, waitReady)

	rctx, rcancel := detached(ctx)
	defer rcancel()
	err = r.refresh(rctx, &plan)
	observed := plan.Power
	if !want.IsNull() && !want.IsUnknown() {
		plan.Power = want
	}
	if err != nil {
		tflog.Warn(ctx, "cannot read machine after its workflow", map[string]any{"error": err.Error()})
		if w != nil {
			fillComputed(&plan, &pb.Machine{HardwareId: preq.HardwareId, Workflow: w}, nil)
		}
	}
	installed := w.GetId() == wfID && w.GetState() == pb.State_STATE_SUCCEEDED
	switch {
	case werr != nil && errors.Is(werr, context.DeadlineExceeded) && installed && waitReady && !ready:
		resp.Diagnostics.AddError("Hardware "+preq.HardwareId+" installed, but its OS never phoned home",
			neverPhonedHome(preq.HardwareId, plan.IP.ValueString(), w, timeout, why))
	case werr != nil && errors.Is(werr, context.DeadlineExceeded):
		resp.Diagnostics.AddError("Timed out provisioning hardware "+preq.HardwareId,
			fmt.Sprintf("The provision workflow %s did not finish within %s (state %s). The machine stays in Terraform state as tainted: the next apply reinstalls it. Raise timeouts.create if installs take longer, or look at the workflow's events with `provisiond ctl events %s`.",
				wfID, timeout, plan.State.ValueString(), wfID))
	case werr != nil && errors.Is(werr, context.Canceled):
		resp.Diagnostics.AddError("Provisioning of hardware "+preq.HardwareId+" interrupted",
			fmt.Sprintf("Terraform stopped waiting for workflow %s, which goes on in provisiond. The machine stays in state as tainted: the next apply replaces it.", wfID))
	case werr != nil:
		addAPIError(&resp.Diagnostics, r.client, "Lost track of provisioning hardware "+preq.HardwareId, werr)
	case w.GetState() != pb.State_STATE_SUCCEEDED:
		resp.Diagnostics.AddError("Provisioning of hardware "+preq.HardwareId+" failed",
			failureDetail("provision", w)+"\n\nThe machine stays in Terraform state as tainted: fix the cause and apply again to reinstall it.")
	default:
		tflog.Info(ctx, "machine provisioned", map[string]any{"workflow_id": wfID, "os_ready": ready})
		plan.Power = observed
		r.applyPower(ctx, wctx, &plan, &resp.Diagnostics, want)
		if !want.IsNull() && !want.IsUnknown() {
			plan.Power = want
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// waitForOS decides whether create waits for the installed OS to phone
// home, and says why: wait_for when set, else whether the user data or the
// template's content mention provisiond's phone-home path (they set the
// OS up to call it). A template that cannot be read counts as not
// mentioning it: the provision call reports that error.
func (r *machineResource) waitForOS(ctx context.Context, waitFor types.String, preq *pb.ProvisionMachineRequest) (bool, string) {
	if !waitFor.IsNull() && !waitFor.IsUnknown() {
		return waitFor.ValueString() == waitOSReady, "wait_for = \"" + waitFor.ValueString() + "\""
	}
	if strings.Contains(preq.GetUserData(), phoneHomePath) {
		return true, "wait_for is unset and the user data mentions " + phoneHomePath
	}
	tpl, err := r.client.GetTemplate(ctx, &pb.GetTemplateRequest{Id: preq.GetTemplateId()})
	if err != nil {
		tflog.Warn(ctx, "cannot read the template to choose what to wait for: waiting until installed", map[string]any{"error": err.Error()})
		return false, "wait_for is unset and the template could not be read"
	}
	if strings.Contains(tpl.GetContent(), phoneHomePath) {
		return true, "wait_for is unset and template " + tpl.GetName() + " mentions " + phoneHomePath
	}
	return false, "wait_for is unset and neither the user data nor the template mention " + phoneHomePath
}

// neverPhonedHome explains a create that timed out waiting for the
// installed OS: the install itself succeeded.
func neverPhonedHome(hwID, ip string, w *pb.Workflow, timeout time.Duration, why string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The provision workflow %s succeeded", w.GetId())
	if w.GetFinishedAt() != nil {
		fmt.Fprintf(&b, " at %s", w.GetFinishedAt().AsTime().UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, " (the server was switched to its disk), but the installed OS did not phone home to provisiond within timeouts.create (%s). Terraform waited for it because %s.\n\n", timeout, why)
	b.WriteString("What to check:\n")
	b.WriteString("- cloud-init's phone_home in the user data or the image: `phone_home: {url: \"http://PROVISIOND:PORT/phone-home\", post: [instance_id, hostname], tries: 10}`, with the address and port machines reach provisiond's HTTP service at (--public-ip, --http-listen), and the module in cloud_final_modules;\n")
	from := "its address in the hardware record"
	if ip != "" {
		from = ip + " (its address in the hardware record)"
	}
	fmt.Fprintf(&b, "- the server's network: it must reach provisiond from %s, as provisiond accepts a phone-home only from the machine's own address (provisiond's log says \"phone-home refused\" with the reason when a call came but was refused);\n", from)
	b.WriteString("- the server's console (BMC serial-over-LAN or KVM), and on the server `cloud-init status --long` and /var/log/cloud-init.log: did the OS boot, did cloud-init run?\n\n")
	fmt.Fprintf(&b, "Set wait_for = \"installed\" to return once the install succeeded without waiting for the OS. The machine stays in Terraform state as tainted: the next apply reinstalls it (`terraform untaint baremetal_machine.NAME` keeps the install as it is; hardware %s).", hwID)
	return b.String()
}

// applyPower sets the power state when want is configured and differs
// from what provisiond last saw.
func (r *machineResource) applyPower(logCtx, ctx context.Context, m *machineModel, diags *diag.Diagnostics, want types.String) {
	if want.IsNull() || want.IsUnknown() {
		return
	}
	if !m.Power.IsNull() && !m.Power.IsUnknown() && m.Power.ValueString() == want.ValueString() {
		return
	}
	if m.Power.IsNull() && want.ValueString() == "on" {
		// Unknown power after an install that ended in a reboot: on.
		m.Power = want
		return
	}
	action := pb.PowerAction_POWER_ACTION_ON
	if want.ValueString() == "off" {
		action = pb.PowerAction_POWER_ACTION_OFF
	}
	tflog.Info(logCtx, "setting power", map[string]any{"power": want.ValueString()})
	ps, err := r.client.SetPower(ctx, &pb.SetPowerRequest{HardwareId: m.HardwareID.ValueString(), Action: action})
	if err != nil {
		addAPIError(diags, r.client, "Cannot power "+want.ValueString()+" hardware "+m.HardwareID.ValueString(), err)
		return
	}
	if ps.GetState() == pb.PowerState_POWER_STATE_UNKNOWN || ps.GetState() == pb.PowerState_POWER_STATE_UNSPECIFIED {
		m.Power = want
		return
	}
	got := "on"
	if ps.GetState() == pb.PowerState_POWER_STATE_OFF {
		got = "off"
	}
	if got != want.ValueString() {
		diags.AddError("Power of hardware "+m.HardwareID.ValueString()+" did not change",
			fmt.Sprintf("The BMC accepted power %s but reports the server %s. Look at the BMC, then apply again.", want.ValueString(), got))
	}
	m.Power = want
}

func (r *machineResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state machineModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	pm, err := r.client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: id})
	if isNotFound(err) {
		tflog.Warn(ctx, "machine is gone from provisiond (released outside Terraform): removing it from state", map[string]any{"hardware_id": id})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot read machine "+id, err)
		return
	}
	hw, err := r.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: id})
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot read hardware of machine "+id, err)
		return
	}
	fillDesired(&state, pm)
	fillComputed(&state, pm, hw)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// Update changes what changes in place: power, and the wipe and timeouts
// that only Terraform uses.
func (r *machineResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan, state machineModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Update(ctx, defaultUpdateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := plan.Power
	plan.Power = state.Power
	if !want.IsUnknown() && !want.IsNull() && !want.Equal(state.Power) {
		r.applyPower(ctx, wctx, &plan, &resp.Diagnostics, want)
		if resp.Diagnostics.HasError() {
			return
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *machineResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state machineModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := state.Timeouts.Delete(ctx, defaultDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := state.ID.ValueString()
	ctx = tflog.SetField(ctx, "hardware_id", id)

	pm, err := r.client.DeprovisionMachine(wctx, &pb.DeprovisionMachineRequest{HardwareId: id, Wipe: state.Wipe.ValueString()})
	if isNotFound(err) {
		tflog.Info(ctx, "machine already gone")
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot start deprovisioning machine "+id, err)
		return
	}
	wfID := pm.GetWorkflow().GetId()
	tflog.Info(ctx, "deprovision workflow started", map[string]any{"workflow_id": wfID, "wipe": state.Wipe.ValueString(), "timeout": timeout.String()})
	w, _, err := r.follow(wctx, id, wfID, true, false)
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		resp.Diagnostics.AddError("Timed out deprovisioning machine "+id,
			fmt.Sprintf("The deprovision workflow %s (wipe %s) did not finish within %s. The machine stays in state; destroy again to keep waiting, or raise timeouts.delete.", wfID, state.Wipe.ValueString(), timeout))
		return
	case err != nil:
		addAPIError(&resp.Diagnostics, r.client, "Lost track of deprovisioning machine "+id, err)
		return
	case w.GetState() != pb.State_STATE_SUCCEEDED:
		resp.Diagnostics.AddError("Deprovisioning of machine "+id+" failed",
			failureDetail("deprovision", w)+"\n\nThe machine stays in state: fix the cause and destroy again.")
		return
	}
	// The machine is released once its deprovision workflow succeeded.
	for {
		_, err := r.client.GetMachine(wctx, &pb.GetMachineRequest{HardwareId: id})
		if isNotFound(err) {
			tflog.Info(ctx, "machine deprovisioned", map[string]any{"workflow_id": wfID})
			return
		}
		if err != nil && status.Code(err) != codes.Unavailable {
			addAPIError(&resp.Diagnostics, r.client, "Cannot confirm machine "+id+" is released", err)
			return
		}
		select {
		case <-wctx.Done():
			resp.Diagnostics.AddError("Timed out deprovisioning machine "+id,
				"The wipe finished but provisiond still lists the machine. Destroy again.")
			return
		case <-time.After(r.retryWait / 4):
		}
	}
}

func (r *machineResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("hardware_id"), req.ID)...)
}
