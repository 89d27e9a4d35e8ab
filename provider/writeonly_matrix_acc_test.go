package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// tfBinary is a Terraform or OpenTofu CLI that knows write-only attributes.
type tfBinary struct {
	Path    string
	Product string // "terraform" or "opentofu"
	Version string // "1.11.4"
}

// Name names the binary's subtest: terraform-1.11.4, opentofu-1.12.6.
func (b tfBinary) Name() string { return b.Product + "-" + b.Version }

// writeOnlyBinaries are the CLIs of TF_ACC_TERRAFORM_WO_PATHS (a list
// separated like PATH; make test gives Terraform 1.11+ and OpenTofu), else
// of TF_ACC_TERRAFORM_WO_PATH. The test skips without any, which fails
// CI's skip gate; a binary that is not 1.11 or later fails it.
func writeOnlyBinaries(t *testing.T) []tfBinary {
	t.Helper()
	list := os.Getenv("TF_ACC_TERRAFORM_WO_PATHS")
	if list == "" {
		list = os.Getenv("TF_ACC_TERRAFORM_WO_PATH")
	}
	var out []tfBinary
	for _, p := range filepath.SplitList(list) {
		if p == "" {
			continue
		}
		b, err := probeBinary(p)
		if err != nil {
			t.Fatalf("TF_ACC_TERRAFORM_WO_PATHS: %v", err)
		}
		var major, minor int
		if _, err := fmt.Sscanf(b.Version, "%d.%d", &major, &minor); err != nil || major < 1 || (major == 1 && minor < 11) {
			t.Fatalf("TF_ACC_TERRAFORM_WO_PATHS: %s is %s %s; write-only attributes need 1.11 or later", p, b.Product, b.Version)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		t.Skip("needs Terraform or OpenTofu 1.11 or later for write-only attributes: set TF_ACC_TERRAFORM_WO_PATHS (or TF_ACC_TERRAFORM_WO_PATH)")
	}
	return out
}

// probeBinary asks a CLI what it is: `version -json` gives the version
// (OpenTofu keeps Terraform's key), `version` the product.
func probeBinary(path string) (tfBinary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := exec.CommandContext(ctx, path, "version", "-json").Output()
	if err != nil {
		return tfBinary{}, fmt.Errorf("%s version -json: %w", path, err)
	}
	var v struct {
		Version string `json:"terraform_version"`
	}
	// OpenTofu prints warnings (a missing TF_CLI_CONFIG_FILE) before the JSON.
	if i := bytes.IndexByte(raw, '{'); i > 0 {
		raw = raw[i:]
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.Version == "" {
		return tfBinary{}, fmt.Errorf("%s version -json printed no version (%v): %.200s", path, err, raw)
	}
	text, err := exec.CommandContext(ctx, path, "version").Output()
	if err != nil {
		return tfBinary{}, fmt.Errorf("%s version: %w", path, err)
	}
	product := ""
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "Terraform v") {
			product = "terraform"
		} else if strings.HasPrefix(line, "OpenTofu v") {
			product = "opentofu"
		}
		if product != "" {
			break
		}
	}
	if product == "" {
		return tfBinary{}, fmt.Errorf("%s is neither Terraform nor OpenTofu: %.200s", path, text)
	}
	return tfBinary{Path: path, Product: product, Version: v.Version}, nil
}

// forEachWriteOnlyBinary runs fn as a subtest per CLI of
// writeOnlyBinaries, with terraform-plugin-testing pointed at it. The
// subtests are sequential: they set the process environment.
func forEachWriteOnlyBinary(t *testing.T, fn func(t *testing.T, b tfBinary)) {
	t.Helper()
	for _, b := range writeOnlyBinaries(t) {
		t.Run(b.Name(), func(t *testing.T) {
			t.Setenv("TF_ACC_TERRAFORM_PATH", b.Path)
			if b.Product == "opentofu" {
				// terraform-plugin-testing reattaches the provider as
				// registry.terraform.io/{-,hashicorp}/baremetal; OpenTofu
				// refuses the legacy "-" namespace outside its own registry
				// and resolves an unqualified "baremetal" in its registry.
				t.Setenv(resource.EnvTfAccProviderNamespace, "hashicorp")
				t.Setenv(resource.EnvTfAccProviderHost, "registry.opentofu.org")
			}
			if f := os.Getenv("TF_CLI_CONFIG_FILE"); f != "" {
				if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
					// Terraform ignores a missing one; OpenTofu warns on
					// stdout, before what `version` prints, which
					// terraform-exec then cannot parse.
					t.Logf("TF_CLI_CONFIG_FILE=%s does not exist: unset for %s", f, b.Name())
					t.Setenv("TF_CLI_CONFIG_FILE", "")
				}
			}
			start := time.Now()
			fn(t, b)
			t.Logf("%s: %.1fs", b.Name(), time.Since(start).Seconds())
		})
	}
}

// writeOnlyConfig is one server whose BMC password is password_wo and whose
// machine's user data is user_data_wo; version is both write-only versions.
func writeOnlyConfig(d *testDaemon, version int) string {
	tpl := "version: \"0.1\"\nname: wo\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n" +
		"      - name: install\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n"
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
variable "bmc_password" {
  type      = string
  ephemeral = true
}

variable "user_data" {
  type      = string
  ephemeral = true
}

resource "baremetal_template" "wo" {
  name    = "wo"
  content = %q
}

resource "baremetal_hardware" "wo" {
  id       = "wo0"
  hostname = "wo0"
  interfaces = [{
    mac = "52:54:00:00:30:01"
    ip  = "10.99.0.30/24"
  }]
  disks = ["/dev/vda"]
  bmc = {
    driver              = "ipmi"
    address             = "127.0.0.1"
    username            = "admin"
    password_wo         = var.bmc_password
    password_wo_version = %[2]d
  }
}

resource "baremetal_machine" "wo" {
  hardware_id          = baremetal_hardware.wo.id
  template_id          = baremetal_template.wo.id
  user_data_wo         = var.user_data
  user_data_wo_version = %[2]d
  power                = "on"
  timeouts {
    create = "2m"
    delete = "2m"
  }
}
`, tpl, version))
}

// TestAccWriteOnlyMatrix applies, changes, imports and destroys a server
// whose BMC password (password_wo) and user data (user_data_wo) are
// write-only, with every CLI of TF_ACC_TERRAFORM_WO_PATHS (Terraform 1.11+
// and OpenTofu in make test; the rest of the suite runs on the Terraform
// of TF_ACC_TERRAFORM_PATH). The secrets come from ephemeral variables,
// reach provisiond, and are never in state; a new version sends new ones;
// import reads the server back without them; destroy releases it.
//
// Not parallel: the subtests set the process environment.
func TestAccWriteOnlyMatrix(t *testing.T) {
	requireAcc(t)
	forEachWriteOnlyBinary(t, func(t *testing.T, _ tfBinary) {
		d, _ := startSimLab(t)
		pw1, pw2 := "bmc-canary-1-"+store.NewID()[:12], "bmc-canary-2-"+store.NewID()[:12]
		ud1 := "#cloud-config\n# ud-canary-1-" + store.NewID()[:12] + "\n"
		ud2 := "#cloud-config\n# ud-canary-2-" + store.NewID()[:12] + "\n"
		t.Setenv("TF_VAR_bmc_password", pw1)
		t.Setenv("TF_VAR_user_data", ud1)
		ctx := context.Background()
		hw, m := "baremetal_hardware.wo", "baremetal_machine.wo"

		daemonHas := func(password, userData string) resource.TestCheckFunc {
			return func(*terraform.State) error {
				h, err := d.Store.GetHardware(ctx, "wo0")
				if err != nil {
					return fmt.Errorf("read hardware wo0: %w", err)
				}
				if h.BMC.Password != password {
					return fmt.Errorf("provisiond's BMC password is not what password_wo sent (%d bytes)", len(h.BMC.Password))
				}
				pm, err := d.Store.GetMachine(ctx, "wo0")
				if err != nil {
					return fmt.Errorf("read machine wo0: %w", err)
				}
				if pm.UserData != userData {
					return fmt.Errorf("provisiond's user data is not what user_data_wo sent (%d bytes)", len(pm.UserData))
				}
				return nil
			}
		}
		noSecrets := func(s *terraform.State) error {
			for _, rs := range s.RootModule().Resources {
				for k, v := range rs.Primary.Attributes {
					for _, sec := range []string{pw1, pw2, strings.TrimSpace(ud1), strings.TrimSpace(ud2)} {
						if strings.Contains(v, sec) {
							return fmt.Errorf("%s.%s holds a write-only secret", rs.Type, k)
						}
					}
				}
			}
			return nil
		}
		woNull := []statecheck.StateCheck{
			statecheck.ExpectKnownValue(hw, tfjsonpath.New("bmc").AtMapKey("password_wo"), knownvalue.Null()),
			statecheck.ExpectKnownValue(hw, tfjsonpath.New("bmc").AtMapKey("password"), knownvalue.Null()),
			statecheck.ExpectKnownValue(hw, tfjsonpath.New("bmc").AtMapKey("password_set"), knownvalue.Bool(true)),
			statecheck.ExpectKnownValue(m, tfjsonpath.New("user_data_wo"), knownvalue.Null()),
			statecheck.ExpectKnownValue(m, tfjsonpath.New("user_data"), knownvalue.Null()),
			statecheck.ExpectKnownValue(m, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
		}
		resource.Test(t, resource.TestCase{
			PreCheck:                 preCheck(t),
			ProtoV6ProviderFactories: protoV6,
			CheckDestroy: func(*terraform.State) error {
				if _, err := d.Store.GetMachine(ctx, "wo0"); !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("machine wo0 after destroy: %v, want not found", err)
				}
				if _, err := d.Store.GetHardware(ctx, "wo0"); !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("hardware wo0 after destroy: %v, want not found", err)
				}
				return nil
			},
			Steps: []resource.TestStep{
				{
					Config:            writeOnlyConfig(d, 1),
					ConfigStateChecks: woNull,
					Check:             resource.ComposeTestCheckFunc(daemonHas(pw1, ud1), noSecrets),
				},
				// Read finds nothing to change: no write-only value drifts.
				{Config: writeOnlyConfig(d, 1), PlanOnly: true},
				// New secrets: only the versions tell the CLI. The password
				// changes in place, the user data reinstalls.
				{
					PreConfig: func() {
						t.Setenv("TF_VAR_bmc_password", pw2)
						t.Setenv("TF_VAR_user_data", ud2)
					},
					Config: writeOnlyConfig(d, 2),
					ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(hw, plancheck.ResourceActionUpdate),
						plancheck.ExpectResourceAction(m, plancheck.ResourceActionReplace),
					}},
					ConfigStateChecks: woNull,
					Check:             resource.ComposeTestCheckFunc(daemonHas(pw2, ud2), noSecrets),
				},
				// Import reads the hardware back from provisiond, which never
				// returns the password: the versions, known only to the
				// configuration, are all that differs.
				{
					ResourceName:            hw,
					ImportState:             true,
					ImportStateVerify:       true,
					ImportStateVerifyIgnore: []string{"bmc.password_wo_version"},
					ImportStateCheck: func(s []*terraform.InstanceState) error {
						if len(s) != 1 || s[0].Attributes["bmc.password_set"] != "true" || s[0].Attributes["bmc.password"] != "" {
							return fmt.Errorf("imported hardware: %v", s)
						}
						return nil
					},
				},
				{
					ResourceName:      m,
					ImportState:       true,
					ImportStateVerify: true,
					// provisiond withholds user data sent write-only, so the
					// import leaves user_data null as the state has it: the
					// verify compares it (the secret in state would fail it).
					// The version is the config's, unknown to an import. Power
					// is what provisiond last saw, and no poller has looked yet.
					ImportStateVerifyIgnore: []string{"user_data_wo_version", "timeouts", "power"},
				},
			},
		})
	})
}
