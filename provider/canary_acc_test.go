package provider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestAccSecretsCanary runs a full apply and destroy of a real machine with
// every log at TRACE and checks that neither the BMC password nor the API
// token, both unique to this run, appears in provisiond's log, in the log
// file that Terraform and the in-process provider write, or in the plan
// output (which terraform-plugin-testing writes to that file at TRACE, as
// `terraform show` renders it).
//
// The secrets reach Terraform as users pass them, through TF_VAR_
// variables that are not declared sensitive: only the provider's schema
// keeps them out of plans and logs. They are not literals in the test's
// configuration because terraform-plugin-testing logs that text at TRACE.
//
// Not parallel: it sets the process environment.
func TestAccSecretsCanary(t *testing.T) {
	requireRealLab(t)
	l := startRealLab(t)
	// IPMI passwords are at most 20 bytes: 48 random bits.
	bmcPassword := "canary-" + store.NewID()[:12]
	m := l.addMachine(t, "canary0", 0, bmcPassword)
	logFile := filepath.Join(t.TempDir(), "terraform.log")
	t.Setenv("TF_LOG", "TRACE")          // the provider's and the test harness's log, plans included
	t.Setenv("TF_ACC_LOG", "TRACE")      // terraform's own log
	t.Setenv("TF_ACC_LOG_PATH", logFile) // both go to one file
	t.Setenv("TF_VAR_api_token", l.Token)
	t.Setenv("TF_VAR_bmc_password", bmcPassword)
	provider := fmt.Sprintf(`
variable "api_token" {
  type = string
}

variable "bmc_password" {
  type = string
}

provider "baremetal" {
  endpoint = %q
  token    = var.api_token
  ca_cert  = file(%q)
}
`, l.Endpoint, l.PKI.CACertFile)
	cfg := labConfig(provider, m, false, "var.bmc_password", "v1", "on", "zero")
	for _, s := range []string{l.Token, bmcPassword} {
		if strings.Contains(cfg, s) {
			t.Fatal("a secret is a literal of the configuration")
		}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{Config: cfg},
			{Config: cfg, PlanOnly: true},
		},
		CheckDestroy: func(*terraform.State) error {
			// Zero wipe: every byte.
			first, middle, last, err := m.diskRegions()
			if err != nil {
				return err
			}
			if !first || !middle || !last {
				return fmt.Errorf("after a zero wipe: first MiB zero %t, middle zero %t, last MiB zero %t", first, middle, last)
			}
			return nil
		},
	})
	if _, err := l.Store.GetMachine(context.Background(), m.ID); err == nil {
		t.Fatal("the machine is still there: the apply and destroy did not run")
	}

	tfLog, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := map[string]struct {
		text string
		// controls show that the log holds what the canary looks through.
		controls []string
	}{
		"provisiond's log": {l.Log.String(), []string{"hardware created", "agent token issued", "kind=deprovision"}},
		"the Terraform log file": {string(tfLog), []string{
			"[INFO]  Terraform version",                 // terraform's own log
			"provision workflow started",                // the provider's tflog
			"Created plan with changes",                 // the plan output ...
			"# baremetal_hardware.node will be created", // ... as terraform renders it
			"(sensitive value)",
		}},
	}
	for name, log := range logs {
		for _, c := range log.controls {
			if !strings.Contains(log.text, c) {
				t.Errorf("%s does not contain %q: the canary does not look where it should", name, c)
			}
		}
		for what, secret := range map[string]string{"the BMC password": bmcPassword, "the API token": l.Token} {
			if i := strings.Index(log.text, secret); i >= 0 {
				t.Errorf("%s leaks %s: ...%s...", name, what, log.text[max(0, i-300):i])
			}
		}
	}
	t.Logf("looked through %d bytes of provisiond's log and %d bytes of the Terraform log", len(l.Log.String()), len(tfLog))
}
