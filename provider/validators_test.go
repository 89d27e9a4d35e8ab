package provider

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/rackform/terraform-provider-baremetal/internal/hwspec"
)

// TestValidatorsSayWhatHWSpecSays: each plan-time validator reports
// hwspec's text, the one provisiond's Admin API answers with, as the
// detail of an attribute diagnostic.
func TestValidatorsSayWhatHWSpecSays(t *testing.T) {
	type diag struct{ Summary, Detail string }
	for name, tc := range map[string]struct {
		v    validator.String
		in   string
		spec func(string) error
		sum  string
	}{
		"disk ..":        {v: diskValidator(), in: "/dev/../etc/passwd", spec: hwspec.Disk, sum: "Invalid disk device"},
		"disk list":      {v: diskValidator(), in: "/dev/sda,/dev/sdb", spec: hwspec.Disk, sum: "Invalid disk device"},
		"network addr":   {v: cidrValidator(), in: "10.0.0.0/24", spec: hwspec.IPv4Prefix, sum: "Invalid IPv4 address with prefix length"},
		"broadcast addr": {v: cidrValidator(), in: "10.0.0.255/24", spec: hwspec.IPv4Prefix, sum: "Invalid IPv4 address with prefix length"},
		"BMC port":       {v: bmcAddressValidator(), in: "10.0.0.5:623", spec: hwspec.BMCAddress, sum: "Invalid BMC address"},
		"BMC v6 port":    {v: bmcAddressValidator(), in: "[fe80::1]:443", spec: hwspec.BMCAddress, sum: "Invalid BMC address"},
		"label key":      {v: labelKeyValidator(), in: "rack\nrow", spec: hwspec.LabelKey, sum: "Invalid label key"},
		"label value":    {v: labelValueValidator(), in: strings.Repeat("x", 1<<20), spec: hwspec.LabelValue, sum: "Invalid label value"},
		"wipe":           {v: wipeValidator(), in: "secure", spec: hwspec.Wipe, sum: "Invalid wipe mode"},
		"MAC":            {v: macValidator(), in: "ff:ff:ff:ff:ff:ff", spec: func(s string) error { _, err := hwspec.MAC(s); return err }, sum: "Invalid MAC address"},
		"valid disk":     {v: diskValidator(), in: "/dev/disk/by-id/nvme-x_1", spec: hwspec.Disk},
	} {
		t.Run(name, func(t *testing.T) {
			at := path.Root("x")
			resp := &validator.StringResponse{}
			tc.v.ValidateString(context.Background(), validator.StringRequest{Path: at, ConfigValue: types.StringValue(tc.in)}, resp)
			var got []diag
			for _, d := range resp.Diagnostics {
				got = append(got, diag{d.Summary(), d.Detail()})
			}
			var want []diag
			if err := tc.spec(tc.in); err != nil {
				want = []diag{{tc.sum, err.Error()}}
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("diagnostics (-want +got):\n%s", d)
			}
		})
	}
}

// TestAccHardwareRejectsAtPlan: input that provisiond refuses is refused
// at plan time already, at the attribute, before anything is created.
func TestAccHardwareRejectsAtPlan(t *testing.T) {
	requireAcc(t)
	d := startDaemon(t, nil)
	for name, tc := range map[string]struct {
		nic, disks, bmc, labels string
		want                    string
	}{
		"disk escaping /dev": {disks: `["/dev/../etc/passwd"]`, want: `(?s)Invalid disk device.*write the path without`},
		"two disks in one":   {disks: `["/dev/sda,/dev/sdb"]`, want: `(?s)Invalid disk device.*one device per entry`},
		"network address":    {nic: `ip = "10.99.0.0/24"`, want: `(?s)is the network address of 10.99.0.0/24`},
		"broadcast address":  {nic: `ip = "10.99.0.255/24"`, want: `(?s)is the broadcast address of 10.99.0.0/24`},
		"gateway is the interface": {
			nic: `ip = "10.99.0.10/24"
    gateway = "10.99.0.10"`, want: `(?s)Invalid gateway.*the interface's own address`,
		},
		"BMC address with port":  {bmc: `address = "10.0.0.5:623"`, want: `(?s)Invalid BMC address.*has a port`},
		"BMC v6 with port":       {bmc: `address = "[fe80::1]:443"`, want: `(?s)Invalid BMC address.*has a port`},
		"BMC without address":    {bmc: `port = 623`, want: `(?s)Missing BMC address`},
		"1 MiB label value":      {labels: fmt.Sprintf(`{ rack = %q }`, strings.Repeat("x", 1<<20)), want: `(?s)Invalid label value.*at most 256 allowed`},
		"label key with newline": {labels: `{ "rack\nrow" = "r1" }`, want: `(?s)Invalid label key`},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.disks == "" {
				tc.disks = `["/dev/vda"]`
			}
			if tc.labels == "" {
				tc.labels = `{ rack = "r1" }`
			}
			if tc.bmc == "" {
				tc.bmc = `address = "127.0.0.1"`
			}
			cfg := hcl(d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_hardware" "bad" {
  interfaces = [{
    mac = "52:54:00:99:00:01"
    %s
  }]
  disks  = %s
  bmc    = {
    driver = "ipmi"
    %s
  }
  labels = %s
}
`, tc.nic, tc.disks, tc.bmc, tc.labels))
			resource.Test(t, resource.TestCase{
				PreCheck:                 preCheck(t),
				ProtoV6ProviderFactories: protoV6,
				Steps:                    []resource.TestStep{{Config: cfg, PlanOnly: true, ExpectError: regexp.MustCompile(tc.want)}},
			})
		})
	}
}
