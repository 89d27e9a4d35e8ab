// Package provider is the Terraform provider for provisiond: the
// baremetal_hardware, baremetal_template and baremetal_machine resources
// and data sources of the same names.
package provider

import (
	"context"
	"os"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
)

var _ provider.Provider = (*baremetalProvider)(nil)

// baremetalProvider is the provider; it holds no state besides its version.
type baremetalProvider struct {
	version string
}

// New returns the constructor of the provider for providerserver.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &baremetalProvider{version: version} }
}

// providerModel is the provider block.
type providerModel struct {
	Endpoint   types.String `tfsdk:"endpoint"`
	Token      types.String `tfsdk:"token"`
	CACert     types.String `tfsdk:"ca_cert"`
	ClientCert types.String `tfsdk:"client_cert"`
	ClientKey  types.String `tfsdk:"client_key"`
	Insecure   types.Bool   `tfsdk:"insecure"`
}

// apiClient is what resources and data sources are configured with.
type apiClient struct {
	pb.AdminClient
	// endpoint is the address talked to, for error messages.
	endpoint string
}

func (p *baremetalProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "baremetal"
	resp.Version = p.version
}

func (p *baremetalProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Provisions physical servers through provisiond: registers hardware and workflow templates, installs machines over PXE and wipes them on destroy.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				Description: "Address of provisiond's gRPC API as `host:port`, optionally with a scheme: `https://` or `grpcs://` ask for TLS, `http://` or `grpc://` for plain text; without a scheme TLS is used when `ca_cert`, `client_cert` or `insecure` is set. Default: the `BAREMETAL_ENDPOINT` environment variable.",
				Optional:    true,
			},
			"token": schema.StringAttribute{
				Description: "Admin API token: the content of provisiond's `--token-file`. Default: the `BAREMETAL_TOKEN` environment variable.",
				Optional:    true,
				Sensitive:   true,
			},
			"ca_cert": schema.StringAttribute{
				Description: "PEM bundle of the CA that signed provisiond's TLS certificate (use `file(\"ca.pem\")`); empty means the system roots. Default: the `BAREMETAL_CA_CERT` environment variable.",
				Optional:    true,
			},
			"client_cert": schema.StringAttribute{
				Description: "PEM client certificate for mutual TLS, when provisiond runs with `--tls-client-ca`. Default: the `BAREMETAL_CLIENT_CERT` environment variable.",
				Optional:    true,
			},
			"client_key": schema.StringAttribute{
				Description: "PEM private key of `client_cert`. Default: the `BAREMETAL_CLIENT_KEY` environment variable.",
				Optional:    true,
				Sensitive:   true,
			},
			"insecure": schema.BoolAttribute{
				Description: "Use TLS but skip verification of provisiond's certificate. For labs only. Default: the `BAREMETAL_INSECURE` environment variable, else false.",
				Optional:    true,
			},
		},
	}
}

// stringOrEnv returns the configured value, else the environment variable.
func stringOrEnv(v types.String, env string) string {
	if !v.IsNull() && !v.IsUnknown() {
		return v.ValueString()
	}
	return os.Getenv(env)
}

func (p *baremetalProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var cfg providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	for name, v := range map[string]interface{ IsUnknown() bool }{
		"endpoint": cfg.Endpoint, "token": cfg.Token, "ca_cert": cfg.CACert,
		"client_cert": cfg.ClientCert, "client_key": cfg.ClientKey, "insecure": cfg.Insecure,
	} {
		if v.IsUnknown() {
			// Known only after apply of another resource: configure later.
			tflog.Debug(ctx, "provider configuration not known yet", map[string]any{"attribute": name})
			return
		}
	}
	cc := client.Config{
		Endpoint:   stringOrEnv(cfg.Endpoint, "BAREMETAL_ENDPOINT"),
		Token:      stringOrEnv(cfg.Token, "BAREMETAL_TOKEN"),
		CACert:     stringOrEnv(cfg.CACert, "BAREMETAL_CA_CERT"),
		ClientCert: stringOrEnv(cfg.ClientCert, "BAREMETAL_CLIENT_CERT"),
		ClientKey:  stringOrEnv(cfg.ClientKey, "BAREMETAL_CLIENT_KEY"),
	}
	if !cfg.Insecure.IsNull() {
		cc.Insecure = cfg.Insecure.ValueBool()
	} else if s := os.Getenv("BAREMETAL_INSECURE"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("insecure"), "Invalid BAREMETAL_INSECURE",
				"BAREMETAL_INSECURE must be true or false, got "+strconv.Quote(s)+".")
			return
		}
		cc.Insecure = b
	}
	if cc.Endpoint == "" {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Missing provisiond endpoint",
			"Set endpoint in the provider block or the BAREMETAL_ENDPOINT environment variable to provisiond's gRPC address, e.g. \"provisiond.example:7777\".")
		return
	}
	if cc.Token == "" {
		resp.Diagnostics.AddAttributeError(path.Root("token"), "Missing provisiond token",
			"Set token in the provider block or the BAREMETAL_TOKEN environment variable to the content of provisiond's --token-file.")
		return
	}
	tflog.Debug(ctx, "connecting to provisiond", map[string]any{"endpoint": cc.Endpoint, "tls_ca": cc.CACert != "", "mtls": cc.ClientCert != "", "insecure": cc.Insecure})
	c, err := client.New(ctx, cc)
	if err != nil {
		resp.Diagnostics.AddError("Cannot connect to provisiond", connectDetail(cc, err))
		return
	}
	// The connection lives as long as the provider process: Terraform
	// stops the plugin when it is done, which closes it.
	data := &apiClient{AdminClient: c.AdminClient, endpoint: c.Addr()}
	resp.ResourceData = data
	resp.DataSourceData = data
}

// connectDetail explains a failed connection: TLS, refused, or timed out.
func connectDetail(cc client.Config, err error) string {
	hint := map[client.Problem]string{
		client.ProblemTLS:      "This is a TLS problem: provisiond's certificate did not verify, or one side speaks TLS and the other does not. Check ca_cert (the CA that signed provisiond's --tls-cert), that the endpoint's host name is in the certificate, and client_cert/client_key when provisiond requires mutual TLS.",
		client.ProblemRefused:  "Nothing listens at that address: check that provisiond runs and that endpoint names its --grpc-listen address.",
		client.ProblemNoHost:   "The endpoint's host name does not resolve.",
		client.ProblemTimeout:  "provisiond did not answer in time: check the endpoint, firewalls, and whether provisiond expects TLS (set ca_cert) or plain text (use an http:// endpoint).",
		client.ProblemEndpoint: "The endpoint is malformed.",
		client.ProblemOther:    "Check the endpoint and TLS settings.",
	}[client.Diagnose(err)]
	return hint + "\n\nEndpoint: " + cc.Endpoint + "\nError: " + err.Error()
}

func (p *baremetalProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		NewHardwareResource,
		NewTemplateResource,
		NewMachineResource,
	}
}

func (p *baremetalProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewHardwareDataSource,
		NewTemplateDataSource,
		NewMachineDataSource,
	}
}
