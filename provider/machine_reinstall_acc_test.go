package provider

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// reinstallConfig is one server with one machine for the simulated BMC
// and agents: a template of two exec actions, user data and parameters
// as given, and reinstall as given ("" : unset). create is its
// timeouts.create.
func reinstallConfig(d *testDaemon, userData, version, reinstall, create string) string {
	const tpl = "version: \"0.1\"\nname: lab\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n" +
		"      - name: image\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n" +
		"      - name: hostname\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n"
	if reinstall != "" {
		reinstall = "reinstall = " + reinstall
	}
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_template" "lab" {
  name    = "lab"
  content = %q
}

resource "baremetal_hardware" "node" {
  id       = "node0"
  hostname = "node0"
  interfaces = [{
    mac = "52:54:00:00:10:00"
    ip  = "10.99.0.10/24"
  }]
  disks = ["/dev/vda", "/dev/vdb"]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    username = "admin"
    password = "bmc-pw"
  }
}

resource "baremetal_machine" "node" {
  hardware_id = baremetal_hardware.node.id
  template_id = baremetal_template.lab.id
  parameters  = { version = %q }
  user_data   = %q
  power       = "on"
  %s
  timeouts {
    create = %q
    update = "2m"
    delete = "2m"
  }
}
`, tpl, version, userData, reinstall, create))
}

// workflowsOf returns the workflows of hardware hwID, oldest first.
func workflowsOf(d *testDaemon, hwID string) ([]store.Workflow, error) {
	all, err := store.Read(context.Background(), d.Store, func(tx *store.Tx) ([]store.Workflow, error) { return tx.ListWorkflows() })
	if err != nil {
		return nil, err
	}
	var out []store.Workflow
	for _, w := range all {
		if w.HardwareID == hwID {
			out = append(out, w)
		}
	}
	slices.SortStableFunc(out, func(a, b store.Workflow) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// eventSaid reports whether an event of workflow id has a message
// containing all of parts.
func eventSaid(d *testDaemon, id string, parts ...string) (bool, error) {
	evs, err := store.Read(context.Background(), d.Store, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
	if err != nil {
		return false, err
	}
	for _, ev := range evs {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(ev.Message, p)
		}
		if all {
			return true, nil
		}
	}
	return false, nil
}

func actionNames(w store.Workflow) []string {
	var out []string
	for _, a := range w.Actions {
		out = append(out, a.Task+"/"+a.Name)
	}
	return out
}

// TestAccMachineReinstall: with reinstall enabled, a change of user_data
// (then of parameters, with preserve_data) plans an in-place update, not
// a replace; apply runs a new provision workflow of the same machine (a
// quick wipe first unless preserve_data), with no deprovision; the id
// stays, workflow_id changes; no drift after. Turned off again, a change
// replaces the machine as before.
func TestAccMachineReinstall(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t)
	addr := "baremetal_machine.node"
	workflowID := statecheck.CompareValue(compare.ValuesDiffer())
	// reinstalled checks the machine's current workflow: a provision that
	// succeeded with actions want and its user data, and that the
	// hardware saw no deprovision so far.
	reinstalled := func(userData string, want ...string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			m, err := d.Store.GetMachine(context.Background(), "node0")
			if err != nil {
				return err
			}
			if m.UserData != userData {
				return fmt.Errorf("provisiond serves user data %q, want %q", m.UserData, userData)
			}
			ws, err := workflowsOf(d, "node0")
			if err != nil {
				return err
			}
			for _, w := range ws {
				if w.Kind != store.KindProvision {
					return fmt.Errorf("workflow %s is a %s: a reinstall must not deprovision", w.ID, w.Kind)
				}
			}
			cur := ws[len(ws)-1]
			if cur.ID != m.WorkflowID || cur.State != store.StateSucceeded || strings.Join(actionNames(cur), " ") != strings.Join(want, " ") {
				return fmt.Errorf("current workflow %s (machine's %s) %s with actions %v, want succeeded with %v", cur.ID, m.WorkflowID, cur.State, actionNames(cur), want)
			}
			if said, err := eventSaid(d, cur.ID, "reinstall: provision workflow created"); err != nil || !said {
				return fmt.Errorf("no event of workflow %s says it is a reinstall (%v)", cur.ID, err)
			}
			return nil
		}
	}
	on := `{ enabled = true }`
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: reinstallConfig(d, "#cloud-config\nhostname: one\n", "v1", on, "2m"),
				ConfigStateChecks: []statecheck.StateCheck{
					workflowID.AddStateValue(addr, tfjsonpath.New("workflow_id")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("reinstall"), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"enabled": knownvalue.Bool(true), "preserve_data": knownvalue.Bool(false)})),
				},
			},
			{
				Config: reinstallConfig(d, "#cloud-config\nhostname: two\n", "v1", on, "2m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(addr, tfjsonpath.New("workflow_id")),
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("node0")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("node0")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("provisioned_at"), knownvalue.NotNull()),
					workflowID.AddStateValue(addr, tfjsonpath.New("workflow_id")),
				},
				Check: reinstalled("#cloud-config\nhostname: two\n", "reinstall/wipe-disks", "install/image", "install/hostname"),
			},
			{
				Config:   reinstallConfig(d, "#cloud-config\nhostname: two\n", "v1", on, "2m"),
				PlanOnly: true,
			},
			{
				Config: reinstallConfig(d, "#cloud-config\nhostname: two\n", "v2", `{ enabled = true, preserve_data = true }`, "2m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("parameters"), knownvalue.MapExact(map[string]knownvalue.Check{"version": knownvalue.StringExact("v2")})),
					workflowID.AddStateValue(addr, tfjsonpath.New("workflow_id")),
				},
				Check: reinstalled("#cloud-config\nhostname: two\n", "install/image", "install/hostname"),
			},
			{
				// Off again: a change of user_data replaces, as without reinstall.
				Config: reinstallConfig(d, "#cloud-config\nhostname: three\n", "v2", `{ enabled = false }`, "2m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: func(*terraform.State) error {
					ws, err := workflowsOf(d, "node0")
					if err != nil {
						return err
					}
					if n := len(ws); n < 2 || ws[n-2].Kind != store.KindDeprovision || len(ws[n-2].Actions) != 1 || ws[n-2].Actions[0].Image != "wipe" {
						return fmt.Errorf("the replace did not deprovision with a wipe boot first: %+v", ws)
					}
					return nil
				},
			},
			{
				// Unset: the same.
				Config: reinstallConfig(d, "#cloud-config\nhostname: four\n", "v2", "", "2m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
			},
		},
	})
}

// TestAccMachineReplaceSkipsWipe: a machine whose install never started
// (its agent booted but never asked for an action, and create timed out)
// is tainted; the replace that follows powers it off and frees the
// hardware without a wipe boot, with events that say why, then installs
// it. Once installed, destroy wipes as before.
func TestAccMachineReplaceSkipsWipe(t *testing.T) {
	requireAcc(t)
	d, bmc := startSimLab(t)
	addr := "baremetal_machine.node"
	gate := make(chan struct{}) // never closed: the first boot's agent waits
	bmc.Hold("node0", gate)
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: reinstallConfig(d, "#cloud-config\n", "v1", "", "3s"),
				// The diagnostic names the phase reached and its time.
				ExpectError: regexp.MustCompile(`(?s)Timed out provisioning hardware node0.*Where\s+workflow\s+\S+\s+got\s+to:\s+booting,\s+in\s+the\s+boot\s+into\s+the\s+agent\s+OS.*` +
					`boot\s+into\s+the\s+agent\s+OS:\s+\S+\s+so\s+far;\s+the\s+agent\s+has\s+not\s+called\s+in`),
			},
			{
				PreConfig: func() { bmc.Hold("node0", nil) },
				Config:    reinstallConfig(d, "#cloud-config\n", "v1", "", "2m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
				},
				Check: func(*terraform.State) error {
					ws, err := workflowsOf(d, "node0")
					if err != nil {
						return err
					}
					var kinds []string
					for _, w := range ws {
						kinds = append(kinds, string(w.Kind)+":"+string(w.State))
					}
					if want := "provision:cancelled deprovision:succeeded provision:succeeded"; strings.Join(kinds, " ") != want {
						return fmt.Errorf("workflows of node0: %s, want %s", strings.Join(kinds, " "), want)
					}
					dw := ws[1]
					if len(dw.Actions) != 0 || dw.Wipe != "quick" {
						return fmt.Errorf("deprovision %s: wipe %q with actions %v, want wipe quick skipped (no actions)", dw.ID, dw.Wipe, actionNames(dw))
					}
					if said, err := eventSaid(d, dw.ID, "wipe quick skipped", "no action that writes disks ever started"); err != nil || !said {
						return fmt.Errorf("no event of deprovision %s says why the wipe was skipped (%v)", dw.ID, err)
					}
					return nil
				},
			},
		},
		CheckDestroy: func(*terraform.State) error {
			ws, err := workflowsOf(d, "node0")
			if err != nil {
				return err
			}
			last := ws[len(ws)-1]
			if last.Kind != store.KindDeprovision || last.State != store.StateSucceeded || len(last.Actions) != 1 || last.Actions[0].Image != "wipe" {
				return fmt.Errorf("destroy of an installed machine: last workflow %s %s %s with actions %v, want a deprovision that wiped", last.ID, last.Kind, last.State, actionNames(last))
			}
			return nil
		},
	})
}

// TestAccMachineReinstallFailed: a reinstall whose action fails ends the
// apply with an error naming it; the machine stays in state, not
// tainted, with the failed workflow's state, and the next plan is an
// in-place update that reinstalls it again.
func TestAccMachineReinstallFailed(t *testing.T) {
	requireAcc(t)
	d, bmc := startSimLab(t)
	addr := "baremetal_machine.node"
	on := `{ enabled = true, preserve_data = true }`
	cfg := reinstallConfig(d, "#cloud-config\nhostname: two\n", "v1", on, "2m")
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{Config: reinstallConfig(d, "#cloud-config\nhostname: one\n", "v1", on, "2m")},
			{
				PreConfig:   func() { bmc.Fail("node0", "hostname") },
				Config:      cfg,
				ExpectError: regexp.MustCompile(`(?s)Reinstall of machine node0 failed.*Failed action: "hostname".*next apply reinstalls it again`),
			},
			{
				PreConfig: func() { bmc.Fail("node0", "") },
				Config:    cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(addr, tfjsonpath.New("state")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("error"), knownvalue.Null()),
				},
			},
			{Config: cfg, PlanOnly: true},
		},
	})
}

// TestAccMachineReinstallLab reinstalls one machine in place with the real
// peers (ipmi_sim, the real agent, see lab_acc_test.go): a new image with
// preserve_data keeps the disk's old tail; without it the reinstall's own
// boot wipes quick first (the tail is zero). Neither deprovisions.
func TestAccMachineReinstallLab(t *testing.T) {
	requireRealLab(t)
	t.Parallel()
	l := startRealLab(t)
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	addr := "baremetal_machine.node"
	cfg := func(version, preserve string) string {
		c := labConfig(l.ProviderConfig(), m, false, `"bmc-pw"`, version, "on", "quick")
		return strings.Replace(c, "  timeouts {", "  reinstall = { enabled = true, preserve_data = "+preserve+" }\n  timeouts {", 1)
	}
	disk := func(v string, tail byte, wiped bool) resource.TestCheckFunc {
		return func(*terraform.State) error {
			b, err := os.ReadFile(m.Disk)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(b, labImage(v)) || b[len(b)-1] != tail {
				return fmt.Errorf("disk %s does not hold image %s and then %#x: %q...%#x", m.Disk, v, tail, b[:40], b[len(b)-1])
			}
			ws, err := workflowsOf(l.testDaemon, "node0")
			if err != nil {
				return err
			}
			for _, w := range ws {
				if w.Kind != store.KindProvision {
					return fmt.Errorf("workflow %s is a %s: a reinstall must not deprovision", w.ID, w.Kind)
				}
			}
			cur := ws[len(ws)-1]
			if got := slices.Contains(actionNames(cur), "reinstall/wipe-disks"); got != wiped || cur.State != store.StateSucceeded {
				return fmt.Errorf("workflow %s %s with actions %v: want succeeded, with the wipe %t", cur.ID, cur.State, actionNames(cur), wiped)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{Config: cfg("v1", "true"), Check: disk("v1", labOldData, false)},
			{
				Config: cfg("v2", "true"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("power"), knownvalue.StringExact("on")),
				},
				Check: disk("v2", labOldData, false),
			},
			{
				Config: cfg("v1", "false"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				Check: disk("v1", 0, true),
			},
		},
	})
	if !strings.Contains(m.Console(), "wipe-disks") {
		t.Errorf("the machine's console does not mention the reinstall's wipe-disks:\n%s", m.Console())
	}
}
