package provider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// secretsMachineConfig is one simulated server installed with a template
// that reads a sensitive parameter; the secrets come in through TF_VAR_
// variables that are not declared sensitive, so only the provider's
// schema keeps them out of plans (terraform-plugin-testing logs the
// configuration's text at TRACE, so they are not literals in it).
func secretsMachineConfig(d *testDaemon, version int) string {
	tpl := "version: \"0.1\"\nname: sec\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n" +
		"      - name: set-password\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n" +
		"        environment:\n          ROOT_PASSWORD: \"{{ .Params.root_password }}\"\n          IMAGE: \"{{ .Params.image }}\"\n"
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
variable "root_password" {
  type = string
}

variable "user_data" {
  type = string
}

resource "baremetal_template" "sec" {
  name    = "sec"
  content = %q
}

resource "baremetal_hardware" "sec" {
  id       = "sec0"
  hostname = "sec0"
  interfaces = [{
    mac = "52:54:00:00:20:01"
    ip  = "10.99.0.20/24"
  }]
  disks = ["/dev/vda"]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    username = "admin"
    password = "bmc-pw"
  }
}

resource "baremetal_machine" "sec" {
  hardware_id          = baremetal_hardware.sec.id
  template_id          = baremetal_template.sec.id
  parameters           = { image = "v1" }
  sensitive_parameters = { root_password = var.root_password }
  user_data_wo         = var.user_data
  user_data_wo_version = %d
  power                = "on"
  timeouts {
    create = "2m"
    delete = "2m"
  }
}
`, tpl, version))
}

// TestAccMachineSecrets: sensitive_parameters reach the template but no
// plan output or log; user_data_wo reaches provisiond but not Terraform's
// state; user_data_wo_version reinstalls with the new user data; and
// reading the machine back shows no drift (the sensitive parameter that
// provisiond returns among the plain ones stays sensitive).
//
// It runs with every CLI of TF_ACC_TERRAFORM_WO_PATHS (Terraform 1.11+ and
// OpenTofu in make test). Not parallel: it sets the process environment.
func TestAccMachineSecrets(t *testing.T) {
	requireAcc(t)
	forEachWriteOnlyBinary(t, func(t *testing.T, _ tfBinary) { testMachineSecrets(t) })
}

func testMachineSecrets(t *testing.T) {
	d, _ := startSimLab(t)
	password := "pw-canary-" + store.NewID()[:12]
	userData1 := "#cloud-config\n# ud-canary-1-" + store.NewID()[:12] + "\n"
	userData2 := "#cloud-config\n# ud-canary-2-" + store.NewID()[:12] + "\n"
	logFile := filepath.Join(t.TempDir(), "terraform.log")
	t.Setenv("TF_LOG", "TRACE")          // the provider's and the harness's log, rendered plans included
	t.Setenv("TF_ACC_LOG", "TRACE")      // terraform's own log
	t.Setenv("TF_ACC_LOG_PATH", logFile) // both in one file
	t.Setenv("TF_VAR_root_password", password)
	t.Setenv("TF_VAR_user_data", userData1)

	ctx := context.Background()
	daemonHas := func(wantUserData string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			m, err := d.Store.GetMachine(ctx, "sec0")
			if err != nil {
				return err
			}
			if m.Parameters["root_password"] != password || m.Parameters["image"] != "v1" {
				return fmt.Errorf("provisiond's parameters lack the merged sensitive one: keys %v", keys(m.Parameters))
			}
			if m.UserData != wantUserData {
				return fmt.Errorf("provisiond's user data is not what user_data_wo sent (%d bytes)", len(m.UserData))
			}
			return nil
		}
	}
	notInState := func(secrets ...string) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			for _, rs := range s.RootModule().Resources {
				for k, v := range rs.Primary.Attributes {
					for _, sec := range secrets {
						if strings.Contains(v, strings.TrimSpace(sec)) {
							return fmt.Errorf("%s.%s holds the write-only user data", rs.Type, k)
						}
					}
				}
			}
			return nil
		}
	}
	afterSensitive := func(addr string, attr string) plancheck.PlanCheck {
		return sensitiveInPlan{addr: addr, attr: attr}
	}
	res := "baremetal_machine.sec"
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: secretsMachineConfig(d, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					afterSensitive(res, "sensitive_parameters"),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("user_data_wo"), knownvalue.Null()),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("user_data"), knownvalue.Null()),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("user_data_wo_version"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("parameters"), knownvalue.MapExact(map[string]knownvalue.Check{"image": knownvalue.StringExact("v1")})),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
				},
				Check: resource.ComposeTestCheckFunc(daemonHas(userData1), notInState(userData1)),
			},
			// Read splits provisiond's parameters back: no drift.
			{Config: secretsMachineConfig(d, 1), PlanOnly: true},
			// New write-only user data: only the version tells Terraform.
			{
				PreConfig: func() { t.Setenv("TF_VAR_user_data", userData2) },
				Config:    secretsMachineConfig(d, 2),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace),
					afterSensitive(res, "sensitive_parameters"),
				}},
				Check: resource.ComposeTestCheckFunc(daemonHas(userData2), notInState(userData1, userData2)),
			},
		},
	})

	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(raw)
	if !strings.Contains(log, "sensitive_parameters") || !strings.Contains(log, "(sensitive value)") {
		t.Fatalf("the log holds no rendered plan of sensitive_parameters (%d bytes): the check below would prove nothing", len(log))
	}
	for name, sec := range map[string]string{"sensitive parameter": password, "user_data_wo 1": strings.TrimSpace(userData1), "user_data_wo 2": strings.TrimSpace(userData2)} {
		if strings.Contains(log, sec) {
			t.Errorf("the %s appears in Terraform's log or plan output", name)
		}
		if strings.Contains(d.Log.String(), sec) {
			t.Errorf("the %s appears in provisiond's log", name)
		}
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// sensitiveInPlan checks that the plan marks a resource's attribute as
// sensitive, which is what makes Terraform print "(sensitive value)".
type sensitiveInPlan struct{ addr, attr string }

func (c sensitiveInPlan) CheckPlan(_ context.Context, req plancheck.CheckPlanRequest, resp *plancheck.CheckPlanResponse) {
	for _, rc := range req.Plan.ResourceChanges {
		if rc.Address != c.addr {
			continue
		}
		marks, ok := rc.Change.AfterSensitive.(map[string]any)
		if !ok || marks[c.attr] != true {
			resp.Error = fmt.Errorf("%s: %s is not marked sensitive in the plan (after_sensitive %v)", c.addr, c.attr, rc.Change.AfterSensitive)
		}
		return
	}
	resp.Error = fmt.Errorf("%s is not in the plan", c.addr)
}

// TestAccMachineParameterTwice: a name in both parameters and
// sensitive_parameters is refused at plan time, naming only the name.
func TestAccMachineParameterTwice(t *testing.T) {
	requireAcc(t)
	d := startDaemon(t, nil)
	cfg := hcl(d.ProviderConfig(), `
resource "baremetal_machine" "twice" {
  hardware_id          = "n1"
  template_id          = "t1"
  parameters           = { root_password = "plain" }
  sensitive_parameters = { root_password = "hidden-value" }
}
`)
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{Config: cfg, PlanOnly: true,
			ExpectError: regexp.MustCompile(`(?s)Parameter given twice.*"root_password" is both in parameters and in\s+sensitive_parameters`)}},
	})
}

func TestSplitParameters(t *testing.T) {
	sens := func(m map[string]string) types.Map { return stringMap(m) }
	for name, tc := range map[string]struct {
		got           map[string]string
		prior         types.Map
		plain, secret types.Map
	}{
		"import: all plain": {
			got: map[string]string{"image": "v1", "pw": "s"}, prior: types.MapNull(types.StringType),
			plain: sens(map[string]string{"image": "v1", "pw": "s"}), secret: types.MapNull(types.StringType),
		},
		"returned among the plain ones": {
			got: map[string]string{"image": "v1", "pw": "s"}, prior: sens(map[string]string{"pw": "old"}),
			plain: sens(map[string]string{"image": "v1"}), secret: sens(map[string]string{"pw": "s"}),
		},
		"hidden by provisiond: prior kept": {
			got: map[string]string{"image": "v1"}, prior: sens(map[string]string{"pw": "old"}),
			plain: sens(map[string]string{"image": "v1"}), secret: sens(map[string]string{"pw": "old"}),
		},
		"only sensitive ones": {
			got: map[string]string{"pw": "s"}, prior: sens(map[string]string{"pw": "s"}),
			plain: types.MapNull(types.StringType), secret: sens(map[string]string{"pw": "s"}),
		},
	} {
		t.Run(name, func(t *testing.T) {
			plain, secret := splitParameters(tc.got, tc.prior)
			if !plain.Equal(tc.plain) || !secret.Equal(tc.secret) {
				t.Errorf("splitParameters = %v, %v; want %v, %v", plain, secret, tc.plain, tc.secret)
			}
		})
	}
}
