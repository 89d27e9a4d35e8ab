package provider

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-jsontypes/jsontypes"
	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

var (
	_ datasource.DataSourceWithConfigure        = (*hardwareDataSource)(nil)
	_ datasource.DataSourceWithConfigValidators = (*hardwareDataSource)(nil)
)

// hardwareDataSource looks up hardware by id, MAC or host name.
type hardwareDataSource struct {
	client *apiClient
}

// NewHardwareDataSource returns the baremetal_hardware data source.
func NewHardwareDataSource() datasource.DataSource { return &hardwareDataSource{} }

type hardwareDataModel struct {
	ID         types.String         `tfsdk:"id"`
	MAC        types.String         `tfsdk:"mac"`
	Hostname   types.String         `tfsdk:"hostname"`
	WithLabels types.Map            `tfsdk:"with_labels"`
	Interfaces types.List           `tfsdk:"interfaces"`
	Arch       types.String         `tfsdk:"arch"`
	UEFI       types.Bool           `tfsdk:"uefi"`
	Disks      types.List           `tfsdk:"disks"`
	BMC        types.Object         `tfsdk:"bmc"`
	Labels     types.Map            `tfsdk:"labels"`
	Metadata   jsontypes.Normalized `tfsdk:"metadata"`
	Power      types.String         `tfsdk:"power"`
	Allocated  types.Bool           `tfsdk:"allocated"`
	Netboot    types.Object         `tfsdk:"netboot"`
}

var interfaceType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"mac": types.StringType, "ip": types.StringType, "gateway": types.StringType,
	"name_servers": types.ListType{ElemType: types.StringType},
}}

var netbootType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"allow_pxe": types.BoolType, "allow_workflow": types.BoolType,
}}

var bmcDataType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"driver": types.StringType, "address": types.StringType, "port": types.Int64Type,
	"username": types.StringType, "insecure_tls": types.BoolType, "password_set": types.BoolType,
}}

func (d *hardwareDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_hardware"
}

func (d *hardwareDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Looks up hardware registered with provisiond by id, MAC address, host name or labels. The BMC password is never returned.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Description: "Hardware id to look up.",
				Optional:    true, Computed: true,
			},
			"mac": schema.StringAttribute{
				Description: "Look up the hardware that has an interface with this MAC address.",
				Optional:    true,
				Validators:  []validator.String{macValidator()},
			},
			"hostname": schema.StringAttribute{
				Description: "Look up the hardware with this host name (it must be unique).",
				Optional:    true, Computed: true,
			},
			"with_labels": schema.MapAttribute{
				Description: "Look up the only hardware that carries all of these labels, each with its value (`{ rack = \"r12\", role = \"db\" }`; other labels may be present). " +
					"provisiond filters on them; none or several matches are an error that names them.",
				Optional:    true,
				ElementType: types.StringType,
				Validators:  []validator.Map{mapvalidator.SizeAtLeast(1), mapvalidator.KeysAre(labelKeyValidator()), mapvalidator.ValueStringsAre(labelValueValidator())},
			},
			"interfaces": schema.ListNestedAttribute{
				Description: "Network interfaces; the first is the boot interface.",
				Computed:    true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"mac":          schema.StringAttribute{Description: "MAC address.", Computed: true},
					"ip":           schema.StringAttribute{Description: "IPv4 address with prefix length.", Computed: true},
					"gateway":      schema.StringAttribute{Description: "IPv4 default gateway.", Computed: true},
					"name_servers": schema.ListAttribute{Description: "DNS servers.", Computed: true, ElementType: types.StringType},
				}},
			},
			"arch":  schema.StringAttribute{Description: "CPU architecture: `x86_64` or `aarch64`.", Computed: true},
			"uefi":  schema.BoolAttribute{Description: "Whether the server boots with UEFI.", Computed: true},
			"disks": schema.ListAttribute{Description: "Block devices in template order.", Computed: true, ElementType: types.StringType},
			"bmc": schema.SingleNestedAttribute{
				Description: "The BMC settings (without the password).",
				Computed:    true,
				Attributes: map[string]schema.Attribute{
					"driver":       schema.StringAttribute{Description: "`ipmi`, `redfish` or `manual`.", Computed: true},
					"address":      schema.StringAttribute{Description: "BMC address.", Computed: true},
					"port":         schema.Int64Attribute{Description: "BMC port; null for the driver's default.", Computed: true},
					"username":     schema.StringAttribute{Description: "BMC user name.", Computed: true},
					"insecure_tls": schema.BoolAttribute{Description: "Whether the BMC's TLS certificate is not verified.", Computed: true},
					"password_set": schema.BoolAttribute{Description: "Whether provisiond holds a BMC password.", Computed: true},
				},
			},
			"labels":    schema.MapAttribute{Description: "Labels.", Computed: true, ElementType: types.StringType},
			"metadata":  schema.StringAttribute{Description: "The JSON metadata served to the machine.", Computed: true, CustomType: jsontypes.NormalizedType{}},
			"power":     schema.StringAttribute{Description: "Power state provisiond last saw: `on`, `off`, `unknown`, or null if never asked.", Computed: true},
			"allocated": schema.BoolAttribute{Description: "Whether a machine is installed on this hardware.", Computed: true},
			"netboot": schema.SingleNestedAttribute{
				Description: "provisiond's netboot gates for the server, as its workflows set them: both on from the start of a provision or deprovision workflow until its actions are done, both off otherwise. Read-only: no resource sets them.",
				Computed:    true,
				Attributes: map[string]schema.Attribute{
					"allow_pxe": schema.BoolAttribute{
						Description: "The server may netboot: provisiond's DHCP hands it the boot file (iPXE) and `/ipxe/{mac}` answers it. Off: DHCP leaves the boot file out, so the firmware moves on to the local disk.",
						Computed:    true,
					},
					"allow_workflow": schema.BoolAttribute{
						Description: "The server may run a workflow: the iPXE script boots the agent OS with a one-time agent token only when this and `allow_pxe` are both on; otherwise the script boots the local disk and mints no token.",
						Computed:    true,
					},
				},
			},
		},
	}
}

func (d *hardwareDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.ExactlyOneOf(path.MatchRoot("id"), path.MatchRoot("mac"), path.MatchRoot("hostname"), path.MatchRoot("with_labels")),
	}
}

func (d *hardwareDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.client = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func powerName(p pb.PowerState) string {
	switch p {
	case pb.PowerState_POWER_STATE_ON:
		return "on"
	case pb.PowerState_POWER_STATE_OFF:
		return "off"
	case pb.PowerState_POWER_STATE_UNKNOWN:
		return "unknown"
	}
	return ""
}

func (d *hardwareDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	if d.client == nil {
		notConfigured(&resp.Diagnostics)
		return
	}
	var cfg hardwareDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var h *pb.Hardware
	var err error
	switch {
	case !cfg.ID.IsNull():
		h, err = d.client.GetHardware(ctx, &pb.GetHardwareRequest{Id: cfg.ID.ValueString()})
		if isNotFound(err) {
			resp.Diagnostics.AddError("No hardware "+cfg.ID.ValueString(), "provisiond knows no hardware with that id.")
			return
		}
	case !cfg.MAC.IsNull():
		mac, _ := normalizeMAC(cfg.MAC.ValueString())
		h, err = hardwareByMAC(ctx, d.client, mac)
		if err == nil && h == nil {
			resp.Diagnostics.AddError("No hardware with MAC "+mac, "provisiond knows no hardware with an interface of that MAC address.")
			return
		}
	case !cfg.WithLabels.IsNull():
		want := map[string]string{}
		resp.Diagnostics.Append(cfg.WithLabels.ElementsAs(ctx, &want, false)...)
		if resp.Diagnostics.HasError() {
			return
		}
		var found *pb.ListHardwareResponse
		found, err = d.client.ListHardware(ctx, &pb.ListHardwareRequest{Labels: want})
		if err == nil && len(found.GetHardware()) != 1 {
			resp.Diagnostics.AddError("No unique hardware with labels "+sortedLabels(want), labelMatches(found.GetHardware()))
			return
		}
		if err == nil {
			h = found.GetHardware()[0]
		}
	default:
		var all *pb.ListHardwareResponse
		all, err = d.client.ListHardware(ctx, &pb.ListHardwareRequest{})
		var found []*pb.Hardware
		for _, x := range all.GetHardware() {
			if x.GetHostname() == cfg.Hostname.ValueString() {
				found = append(found, x)
			}
		}
		if err == nil && len(found) != 1 {
			resp.Diagnostics.AddError("No unique hardware with host name "+cfg.Hostname.ValueString(),
				"provisiond knows "+itoa(len(found))+" hardware records with that host name; look it up by id or MAC instead.")
			return
		}
		if err == nil {
			h = found[0]
		}
	}
	if err != nil {
		addAPIError(&resp.Diagnostics, d.client, "Cannot look up hardware", err)
		return
	}
	out := hardwareDataModel{
		ID: types.StringValue(h.GetId()), MAC: cfg.MAC, Hostname: strOrNull(h.GetHostname()), WithLabels: cfg.WithLabels,
		Arch: types.StringValue(h.GetArch()), UEFI: types.BoolValue(h.GetUefi()),
		Disks: stringList(h.GetDisks()), Labels: stringMap(h.GetLabels()),
		Metadata: jsontypes.NewNormalizedNull(), Power: strOrNull(powerName(h.GetPower())),
		Allocated: types.BoolValue(h.GetAllocated()),
	}
	if h.GetMetadata() != "" {
		out.Metadata = jsontypes.NewNormalizedValue(h.GetMetadata())
	}
	var nics []attr.Value
	for _, n := range h.GetInterfaces() {
		o, diags := types.ObjectValue(interfaceType.AttrTypes, map[string]attr.Value{
			"mac": types.StringValue(n.GetMac()), "ip": strOrNull(n.GetIp()), "gateway": strOrNull(n.GetGateway()),
			"name_servers": stringList(n.GetNameServers()),
		})
		resp.Diagnostics.Append(diags...)
		nics = append(nics, o)
	}
	l, diags := types.ListValue(interfaceType, nics)
	resp.Diagnostics.Append(diags...)
	out.Interfaces = l
	b := h.GetBmc()
	port := types.Int64Null()
	if b.GetPort() != 0 {
		port = types.Int64Value(int64(b.GetPort()))
	}
	o, diags := types.ObjectValue(bmcDataType.AttrTypes, map[string]attr.Value{
		"driver": strOrNull(b.GetDriver()), "address": strOrNull(b.GetAddress()), "port": port,
		"username": strOrNull(b.GetUsername()), "insecure_tls": types.BoolValue(b.GetInsecureTls()),
		"password_set": types.BoolValue(b.GetPasswordSet()),
	})
	resp.Diagnostics.Append(diags...)
	out.BMC = o
	nb, diags := types.ObjectValue(netbootType.AttrTypes, map[string]attr.Value{
		"allow_pxe": types.BoolValue(h.GetNetboot().GetAllowPxe()), "allow_workflow": types.BoolValue(h.GetNetboot().GetAllowWorkflow()),
	})
	resp.Diagnostics.Append(diags...)
	out.Netboot = nb
	resp.Diagnostics.Append(resp.State.Set(ctx, out)...)
}

// sortedLabels prints labels as k=v,k=v in key order.
func sortedLabels(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// labelMatches explains a with_labels lookup that found none or several:
// the matches by id and host name, at most ten.
func labelMatches(hw []*pb.Hardware) string {
	if len(hw) == 0 {
		return "provisiond knows no hardware that carries all of these labels."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "provisiond knows %d hardware records that carry all of these labels; add a label that tells them apart, or look one up by id:", len(hw))
	for i, h := range hw {
		if i == 10 {
			fmt.Fprintf(&b, "\n- and %d more", len(hw)-i)
			break
		}
		fmt.Fprintf(&b, "\n- %s (%s)", h.GetId(), h.GetHostname())
	}
	return b.String()
}
