package provider

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// minimalTemplate is a valid template with one task "install" whose exec
// actions are named by actions.
func minimalTemplate(name string, actions ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: \"0.1\"\nname: %s\nglobal_timeout: 600\ntasks:\n  - name: install\n    worker: \"{{ .Hardware.MAC }}\"\n    actions:\n", name)
	for _, a := range actions {
		fmt.Fprintf(&b, "      - name: %s\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n", a)
	}
	return b.String()
}

func templateConfig(d *testDaemon, name, content string) string {
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_template" "test" {
  name    = %q
  content = <<-EOT
%sEOT
}
`, name, content))
}

func tasksCheck(actions ...string) knownvalue.Check {
	var as []knownvalue.Check
	for _, a := range actions {
		as = append(as, knownvalue.StringExact(a))
	}
	return knownvalue.ListExact([]knownvalue.Check{knownvalue.ObjectExact(map[string]knownvalue.Check{
		"name":    knownvalue.StringExact("install"),
		"actions": knownvalue.ListExact(as),
	})})
}

func TestAccTemplate(t *testing.T) {
	requireAcc(t)
	d := startDaemon(t, nil)
	addr := "baremetal_template.test"
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: templateConfig(d, "ubuntu", minimalTemplate("ubuntu", "one")),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					// The tasks are known at plan time: parsed by internal/template.
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("tasks"), tasksCheck("one")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("tasks"), tasksCheck("one")),
				},
			},
			{ResourceName: addr, ImportState: true, ImportStateVerify: true},
			{
				Config: templateConfig(d, "ubuntu-2", minimalTemplate("ubuntu", "one", "two")),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("tasks"), tasksCheck("one", "two")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("name"), knownvalue.StringExact("ubuntu-2")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("tasks"), tasksCheck("one", "two")),
				},
			},
			{Config: templateConfig(d, "ubuntu-2", minimalTemplate("ubuntu", "one", "two")), PlanOnly: true},
		},
	})
}

// TestAccTemplateInvalid: a broken template fails at plan time, with the
// line of the mistake, before anything reaches provisiond.
func TestAccTemplateInvalid(t *testing.T) {
	requireAcc(t)
	d := startDaemon(t, nil)
	bad := strings.Replace(minimalTemplate("bad", "one"), "        timeout: 60\n", "        timeout: soon\n", 1)
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			Config:      templateConfig(d, "bad", bad),
			PlanOnly:    true,
			ExpectError: regexp.MustCompile(`(?s)Invalid workflow template.*line 10: tasks\[0\]\.actions\[0\]\.timeout`),
		}},
	})
}

func TestAccTemplateDataSource(t *testing.T) {
	requireAcc(t)
	d := startDaemon(t, nil)
	cfg := hcl(templateConfig(d, "ds", minimalTemplate("ds", "a", "b")), `
data "baremetal_template" "by_name" {
  name = baremetal_template.test.name
}
data "baremetal_template" "by_id" {
  id = baremetal_template.test.id
}
`)
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			Config: cfg,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("data.baremetal_template.by_name", tfjsonpath.New("tasks"), tasksCheck("a", "b")),
				statecheck.ExpectKnownValue("data.baremetal_template.by_id", tfjsonpath.New("name"), knownvalue.StringExact("ds")),
			},
		}},
	})
}
