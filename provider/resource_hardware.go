package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-jsontypes/jsontypes"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
)

var (
	_ resource.ResourceWithConfigure      = (*hardwareResource)(nil)
	_ resource.ResourceWithImportState    = (*hardwareResource)(nil)
	_ resource.ResourceWithValidateConfig = (*hardwareResource)(nil)
)

// hardwareResource manages a server known to provisiond.
type hardwareResource struct {
	client *apiClient
}

// NewHardwareResource returns the baremetal_hardware resource.
func NewHardwareResource() resource.Resource { return &hardwareResource{} }

type hardwareModel struct {
	ID         types.String         `tfsdk:"id"`
	Hostname   types.String         `tfsdk:"hostname"`
	Interfaces []interfaceModel     `tfsdk:"interfaces"`
	Arch       types.String         `tfsdk:"arch"`
	UEFI       types.Bool           `tfsdk:"uefi"`
	Disks      types.List           `tfsdk:"disks"`
	BMC        *bmcModel            `tfsdk:"bmc"`
	Labels     types.Map            `tfsdk:"labels"`
	Metadata   jsontypes.Normalized `tfsdk:"metadata"`
}

type interfaceModel struct {
	MAC         types.String `tfsdk:"mac"`
	IP          types.String `tfsdk:"ip"`
	Gateway     types.String `tfsdk:"gateway"`
	NameServers types.List   `tfsdk:"name_servers"`
}

type bmcModel struct {
	Driver            types.String `tfsdk:"driver"`
	Address           types.String `tfsdk:"address"`
	Port              types.Int64  `tfsdk:"port"`
	Username          types.String `tfsdk:"username"`
	Password          types.String `tfsdk:"password"`
	PasswordWO        types.String `tfsdk:"password_wo"`
	PasswordWOVersion types.Int64  `tfsdk:"password_wo_version"`
	InsecureTLS       types.Bool   `tfsdk:"insecure_tls"`
	PasswordSet       types.Bool   `tfsdk:"password_set"`
	Verify            types.Bool   `tfsdk:"verify"`
}

func (r *hardwareResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_hardware"
}

func interfacesSchema() schema.ListNestedAttribute {
	return schema.ListNestedAttribute{
		Description: "Network interfaces; the first is the boot interface that PXE-boots and that DHCP reservations and the metadata service identify the server by.",
		Required:    true,
		Validators:  []validator.List{listvalidator.SizeAtLeast(1)},
		NestedObject: schema.NestedAttributeObject{
			Attributes: map[string]schema.Attribute{
				"mac": schema.StringAttribute{
					Description:   "MAC address, e.g. `52:54:00:12:34:56`. It is the server's identity on the network: changing it replaces the hardware.",
					Required:      true,
					Validators:    []validator.String{macValidator()},
					PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
				},
				"ip": schema.StringAttribute{
					Description: "IPv4 address with prefix length (`10.0.0.5/24`) that DHCP reserves for this interface; not the network or broadcast address of the prefix. Unset: no reservation.",
					Optional:    true,
					Validators:  []validator.String{cidrValidator()},
				},
				"gateway": schema.StringAttribute{
					Description: "IPv4 default gateway handed out with the address; not the interface's own address, nor the network or broadcast address of its prefix.",
					Optional:    true,
					Validators:  []validator.String{gatewayValidator()},
				},
				"name_servers": schema.ListAttribute{
					Description: "DNS servers handed out with the address.",
					Optional:    true,
					ElementType: types.StringType,
					Validators:  []validator.List{listvalidator.SizeAtLeast(1), listvalidator.ValueStringsAre(nameServerValidator())},
				},
			},
		},
	}
}

func (r *hardwareResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A physical server registered with provisiond: its network interfaces, disks and BMC. Registering hardware does not touch the server; a `baremetal_machine` installs it.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Description:   "Hardware id. Chosen by provisiond unless set; changing it replaces the hardware.",
				Optional:      true,
				Computed:      true,
				Validators:    []validator.String{idValidator()},
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplace()},
			},
			"hostname": schema.StringAttribute{
				Description: "Host name handed out by DHCP and the metadata service.",
				Optional:    true,
				Validators:  []validator.String{hostnameValidator()},
			},
			"interfaces": interfacesSchema(),
			"arch": schema.StringAttribute{
				Description: "CPU architecture: `x86_64` or `aarch64`. Picks the iPXE binary and agent OS.",
				Optional:    true,
				Computed:    true,
				Default:     stringdefault.StaticString("x86_64"),
				Validators:  []validator.String{archValidator()},
			},
			"uefi": schema.BoolAttribute{
				Description: "Whether the server boots with UEFI firmware (false: legacy BIOS).",
				Optional:    true,
				Computed:    true,
				Default:     booldefault.StaticBool(false),
			},
			"disks": schema.ListAttribute{
				Description: "Block devices in the order templates index them (`{{ .Hardware.Disks 0 }}`), e.g. `[\"/dev/sda\"]`: one clean path under `/dev/` per entry (`/dev/nvme0n1`, `/dev/disk/by-id/...`).",
				Optional:    true,
				ElementType: types.StringType,
				Validators:  []validator.List{listvalidator.SizeAtLeast(1), listvalidator.ValueStringsAre(diskValidator())},
			},
			"bmc": schema.SingleNestedAttribute{
				Description: "How provisiond reaches the server's baseboard management controller to set the boot device and power. Without it, the driver is `manual`: someone powers the server on by hand.",
				Optional:    true,
				Attributes: map[string]schema.Attribute{
					"driver": schema.StringAttribute{
						Description: "`ipmi`, `redfish` or `manual`.",
						Required:    true,
						Validators:  []validator.String{bmcDriverValidator()},
					},
					"address": schema.StringAttribute{
						Description: "BMC host name or IP address, without a port (that is `port`) or URL scheme, e.g. `10.0.1.5`, `fe80::1` or `bmc-r1-u12.example.com`. Required for `ipmi` and `redfish`.",
						Optional:    true,
						Validators:  []validator.String{bmcAddressValidator()},
					},
					"port": schema.Int64Attribute{
						Description: "BMC port; unset means the driver's default (623 for IPMI, 443 for Redfish).",
						Optional:    true,
						Validators:  []validator.Int64{int64validator.Between(1, 65535)},
					},
					"username": schema.StringAttribute{
						Description: "BMC user name.",
						Optional:    true,
					},
					"password": schema.StringAttribute{
						Description: "BMC password. provisiond never returns it, so Terraform keeps the configured value in state (marked sensitive) and cannot see a change made outside Terraform. Prefer `password_wo` with Terraform 1.11 or later to keep it out of state.",
						Optional:    true,
						Sensitive:   true,
						Validators:  []validator.String{stringvalidator.ConflictsWith(path.MatchRelative().AtParent().AtName("password_wo"))},
					},
					"password_wo": schema.StringAttribute{
						Description: "BMC password, write-only: sent to provisiond but never stored in Terraform state or plan (Terraform 1.11 or later). Change `password_wo_version` to send a new one.",
						Optional:    true,
						Sensitive:   true,
						WriteOnly:   true,
						Validators:  []validator.String{stringvalidator.ConflictsWith(path.MatchRelative().AtParent().AtName("password"))},
					},
					"password_wo_version": schema.Int64Attribute{
						Description: "Any number; change it to send `password_wo` again (Terraform cannot see changes of a write-only value).",
						Optional:    true,
						Validators:  []validator.Int64{int64validator.AlsoRequires(path.MatchRelative().AtParent().AtName("password_wo"))},
					},
					"insecure_tls": schema.BoolAttribute{
						Description: "Skip verification of the BMC's TLS certificate (Redfish).",
						Optional:    true,
						Computed:    true,
						Default:     booldefault.StaticBool(false),
					},
					"password_set": schema.BoolAttribute{
						Description:   "Whether provisiond holds a password for this BMC.",
						Computed:      true,
						PlanModifiers: []planmodifier.Bool{boolplanmodifier.UseStateForUnknown()},
					},
					"verify": schema.BoolAttribute{
						Description: "Check the BMC when the hardware is created: provisiond reads its power state (`ipmi` and `redfish`; `manual` has nothing to contact), " +
							"and the create fails, with the BMC's address and what it said, when the BMC refuses the credentials or does not answer within 15 seconds; nothing is registered then. " +
							"Set it to false to register a server whose BMC is not reachable yet. Updates do not check again. Default: true.",
						Optional: true,
						Computed: true,
						Default:  booldefault.StaticBool(true),
					},
				},
			},
			"labels": schema.MapAttribute{
				Description: "Labels, e.g. rack or role; the `baremetal_hardware` data source finds hardware by them (`with_labels`), as does provisiond's `ListHardware`. A key is an optional DNS-name prefix and `/`, then 1-63 letters, digits, `.`, `_` or `-` that start and end with a letter or digit (`rack`, `example.com/role`); a value is at most 256 printable characters (no line breaks), and may be empty.",
				Optional:    true,
				ElementType: types.StringType,
				Validators:  []validator.Map{mapvalidator.SizeAtLeast(1), mapvalidator.KeysAre(labelKeyValidator()), mapvalidator.ValueStringsAre(labelValueValidator())},
			},
			"metadata": schema.StringAttribute{
				Description:   "A JSON object (use `jsonencode`) that the metadata service serves to the machine at `/metadata`. Compared as JSON: formatting changes show no diff.",
				Optional:      true,
				Computed:      true,
				CustomType:    jsontypes.NormalizedType{},
				Validators:    []validator.String{jsonObjectValidator()},
				PlanModifiers: []planmodifier.String{jsonPlanModifier{}},
			},
		},
	}
}

// ValidateConfig runs the checks that span attributes, as provisiond
// does: a MAC listed twice, a gateway that is its interface's own or
// its subnet's network or broadcast address, a BMC driver that needs an
// address without one.
func (r *hardwareResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var nics types.List
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("interfaces"), &nics)...)
	if !nics.IsNull() && !nics.IsUnknown() {
		seen := map[string]int{}
		for i, el := range nics.Elements() {
			obj, ok := el.(types.Object)
			if !ok || obj.IsNull() || obj.IsUnknown() {
				continue
			}
			var nic interfaceModel
			if diags := obj.As(ctx, &nic, basetypes.ObjectAsOptions{}); diags.HasError() {
				continue
			}
			at := path.Root("interfaces").AtListIndex(i)
			if known(nic.MAC) {
				if mac, err := hwspec.MAC(nic.MAC.ValueString()); err == nil {
					if j, dup := seen[mac]; dup {
						resp.Diagnostics.AddAttributeError(at.AtName("mac"), "Duplicate MAC address",
							fmt.Sprintf("MAC address %s is also interfaces[%d]'s: each interface needs its own.", mac, j))
					}
					seen[mac] = i
				}
			}
			if known(nic.Gateway) && known(nic.IP) && hwspec.Gateway(nic.Gateway.ValueString()) == nil && hwspec.IPv4Prefix(nic.IP.ValueString()) == nil {
				if err := hwspec.GatewayFor(nic.Gateway.ValueString(), nic.IP.ValueString()); err != nil {
					resp.Diagnostics.AddAttributeError(at.AtName("gateway"), "Invalid gateway", err.Error())
				}
			}
		}
	}
	var bmc types.Object
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("bmc"), &bmc)...)
	if bmc.IsNull() || bmc.IsUnknown() {
		return
	}
	var b bmcModel
	if diags := bmc.As(ctx, &b, basetypes.ObjectAsOptions{}); diags.HasError() {
		return
	}
	if known(b.Driver) && b.Driver.ValueString() != "manual" && b.Address.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("bmc").AtName("address"), "Missing BMC address",
			fmt.Sprintf("Driver %q reaches the BMC over the network: set bmc.address to its host name or IP address (or use driver \"manual\").", b.Driver.ValueString()))
	}
}

// known reports whether v holds a value (neither null nor unknown).
func known(v types.String) bool { return !v.IsNull() && !v.IsUnknown() }

func (r *hardwareResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// hardwareToPB builds the API message from a plan; password is the BMC
// password to send ("" keeps the stored one).
func hardwareToPB(ctx context.Context, m hardwareModel, password string) (*pb.Hardware, diag.Diagnostics) {
	var diags diag.Diagnostics
	h := &pb.Hardware{
		Id:       m.ID.ValueString(),
		Hostname: m.Hostname.ValueString(),
		Arch:     m.Arch.ValueString(),
		Uefi:     m.UEFI.ValueBool(),
		Metadata: m.Metadata.ValueString(),
		// Netboot is switched by provisiond's workflows, never by hand here.
		Netboot: &pb.Netboot{},
	}
	if m.ID.IsUnknown() {
		h.Id = ""
	}
	for _, nic := range m.Interfaces {
		i := &pb.Interface{Mac: nic.MAC.ValueString(), Ip: nic.IP.ValueString(), Gateway: nic.Gateway.ValueString()}
		diags.Append(nic.NameServers.ElementsAs(ctx, &i.NameServers, false)...)
		h.Interfaces = append(h.Interfaces, i)
	}
	diags.Append(m.Disks.ElementsAs(ctx, &h.Disks, false)...)
	diags.Append(m.Labels.ElementsAs(ctx, &h.Labels, false)...)
	if m.BMC != nil {
		h.Bmc = &pb.BMC{
			Driver:      m.BMC.Driver.ValueString(),
			Address:     m.BMC.Address.ValueString(),
			Port:        uint32(m.BMC.Port.ValueInt64()),
			Username:    m.BMC.Username.ValueString(),
			Password:    password,
			InsecureTls: m.BMC.InsecureTLS.ValueBool(),
		}
	}
	return h, diags
}

// strOrNull maps provisiond's "" to null.
func strOrNull(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

// stringList maps an empty list to null, as the schema does not allow [].
func stringList(ss []string) types.List {
	if len(ss) == 0 {
		return types.ListNull(types.StringType)
	}
	vals := make([]attr.Value, len(ss))
	for i, s := range ss {
		vals[i] = types.StringValue(s)
	}
	return types.ListValueMust(types.StringType, vals)
}

func stringMap(m map[string]string) types.Map {
	if len(m) == 0 {
		return types.MapNull(types.StringType)
	}
	vals := make(map[string]attr.Value, len(m))
	for k, v := range m {
		vals[k] = types.StringValue(v)
	}
	return types.MapValueMust(types.StringType, vals)
}

// keepSpelling returns prior when it means the same MAC as got, so a
// configured "52:54:00:AA:..." does not diff against provisiond's lower case.
func keepSpelling(prior types.String, got string) types.String {
	if !prior.IsNull() && !prior.IsUnknown() {
		if n, err := normalizeMAC(prior.ValueString()); err == nil && n == got {
			return prior
		}
	}
	return types.StringValue(got)
}

// hardwareFromPB fills m from provisiond's answer. prior is the state or
// plan it replaces: the BMC password is never returned, so the prior one
// is kept.
func hardwareFromPB(h *pb.Hardware, prior hardwareModel) hardwareModel {
	m := hardwareModel{
		ID:       types.StringValue(h.GetId()),
		Hostname: strOrNull(h.GetHostname()),
		Arch:     types.StringValue(h.GetArch()),
		UEFI:     types.BoolValue(h.GetUefi()),
		Disks:    stringList(h.GetDisks()),
		Labels:   stringMap(h.GetLabels()),
		Metadata: jsontypes.NewNormalizedNull(),
	}
	if h.GetMetadata() != "" {
		m.Metadata = jsontypes.NewNormalizedValue(h.GetMetadata())
	}
	for i, nic := range h.GetInterfaces() {
		im := interfaceModel{
			MAC:         types.StringValue(nic.GetMac()),
			IP:          strOrNull(nic.GetIp()),
			Gateway:     strOrNull(nic.GetGateway()),
			NameServers: stringList(nic.GetNameServers()),
		}
		if i < len(prior.Interfaces) {
			im.MAC = keepSpelling(prior.Interfaces[i].MAC, nic.GetMac())
		}
		m.Interfaces = append(m.Interfaces, im)
	}
	b := h.GetBmc()
	// provisiond stores "manual" when no BMC was given: keep a null block null.
	// (The getters are nil-safe.)
	noneGiven := prior.BMC == nil && b.GetDriver() == "manual" && b.GetAddress() == "" && b.GetUsername() == "" && !b.GetPasswordSet()
	if b != nil && !noneGiven {
		bm := &bmcModel{
			Driver:            types.StringValue(b.GetDriver()),
			Address:           strOrNull(b.GetAddress()),
			Port:              types.Int64Null(),
			Username:          strOrNull(b.GetUsername()),
			Password:          types.StringNull(),
			PasswordWO:        types.StringNull(),
			PasswordWOVersion: types.Int64Null(),
			InsecureTLS:       types.BoolValue(b.GetInsecureTls()),
			PasswordSet:       types.BoolValue(b.GetPasswordSet()),
			// Only Terraform knows it: provisiond checks at create and keeps nothing.
			Verify: types.BoolValue(true),
		}
		if b.GetPort() != 0 {
			bm.Port = types.Int64Value(int64(b.GetPort()))
		}
		if prior.BMC != nil {
			bm.Password = prior.BMC.Password
			bm.PasswordWOVersion = prior.BMC.PasswordWOVersion
			if !prior.BMC.Verify.IsNull() && !prior.BMC.Verify.IsUnknown() {
				bm.Verify = prior.BMC.Verify
			}
		}
		m.BMC = bm
	}
	return m
}

// configPasswordWO reads the write-only BMC password from the configuration
// (write-only values are never in the plan or state).
func configPasswordWO(ctx context.Context, get func(context.Context, path.Path, any) diag.Diagnostics, diags *diag.Diagnostics) string {
	var wo types.String
	diags.Append(get(ctx, path.Root("bmc").AtName("password_wo"), &wo)...)
	return wo.ValueString()
}

// planPassword is the password kept in state, when not write-only.
func planPassword(m hardwareModel) string {
	if m.BMC == nil {
		return ""
	}
	return m.BMC.Password.ValueString()
}

func (r *hardwareResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan hardwareModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	password := planPassword(plan)
	if wo := configPasswordWO(ctx, req.Config.GetAttribute, &resp.Diagnostics); wo != "" {
		password = wo
	}
	h, diags := hardwareToPB(ctx, plan, password)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	verify := plan.BMC != nil && plan.BMC.Verify.ValueBool()
	out, err := r.client.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: h, VerifyBmc: verify})
	if verify && isFailedPrecondition(err) {
		resp.Diagnostics.AddAttributeError(path.Root("bmc"), "BMC check failed",
			"provisiond could not read the power state of this server's BMC, so it registered nothing. Check bmc.address, bmc.port, bmc.username and the password, "+
				"and that provisiond's host reaches the BMC; or set bmc.verify = false to register the server without contacting its BMC.\n\nError: "+status.Convert(err).Message())
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot create hardware", err)
		return
	}
	tflog.Info(ctx, "hardware created", map[string]any{"id": out.GetId()})
	resp.Diagnostics.Append(resp.State.Set(ctx, hardwareFromPB(out, plan))...)
}

func (r *hardwareResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state hardwareModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: state.ID.ValueString()})
	if isNotFound(err) {
		tflog.Warn(ctx, "hardware is gone from provisiond: removing it from state", map[string]any{"id": state.ID.ValueString()})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot read hardware "+state.ID.ValueString(), err)
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, hardwareFromPB(out, state))...)
}

func (r *hardwareResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var plan, state hardwareModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	password := planPassword(plan)
	if wo := configPasswordWO(ctx, req.Config.GetAttribute, &resp.Diagnostics); wo != "" {
		password = wo
	}
	plan.ID = state.ID
	h, diags := hardwareToPB(ctx, plan, password)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := r.client.UpdateHardware(ctx, &pb.UpdateHardwareRequest{Hardware: h})
	if err != nil {
		addAPIError(&resp.Diagnostics, r.client, "Cannot update hardware "+state.ID.ValueString(), err)
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, hardwareFromPB(out, plan))...)
}

func (r *hardwareResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if r.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var state hardwareModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	_, err := r.client.DeleteHardware(ctx, &pb.DeleteHardwareRequest{Id: id})
	switch {
	case err == nil, isNotFound(err):
	case isFailedPrecondition(err):
		resp.Diagnostics.AddError("Hardware "+id+" is in use",
			"A machine is installed on this hardware, so provisiond refuses to forget it. Destroy the baremetal_machine that uses it first (Terraform does so by itself when the machine references this hardware's id).\n\n"+apiErrorDetail(r.client, err))
	default:
		addAPIError(&resp.Diagnostics, r.client, "Cannot delete hardware "+id, err)
	}
}

// ImportState takes a hardware id, or the MAC address of one of its interfaces.
func (r *hardwareResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	id := req.ID
	if mac, err := normalizeMAC(req.ID); err == nil {
		if r.client == nil {
			notConfigured(&resp.Diagnostics)
			return
		}
		found, err := hardwareByMAC(ctx, r.client, mac)
		if err != nil {
			addAPIError(&resp.Diagnostics, r.client, "Cannot import hardware by MAC "+mac, err)
			return
		}
		if found == nil {
			resp.Diagnostics.AddError("No hardware with MAC "+mac, "provisiond knows no hardware with an interface of that MAC address. Import by hardware id, or check the address.")
			return
		}
		id = found.GetId()
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

// hardwareByMAC finds the hardware with an interface of MAC mac; nil if none.
func hardwareByMAC(ctx context.Context, c *apiClient, mac string) (*pb.Hardware, error) {
	all, err := c.ListHardware(ctx, &pb.ListHardwareRequest{})
	if err != nil {
		return nil, fmt.Errorf("list hardware: %w", err)
	}
	for _, h := range all.GetHardware() {
		for _, nic := range h.GetInterfaces() {
			if n, err := normalizeMAC(nic.GetMac()); err == nil && n == mac {
				return h, nil
			}
		}
	}
	return nil, nil
}
