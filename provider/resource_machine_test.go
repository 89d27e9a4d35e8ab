package provider

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/simbmc"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// simBMC is the test kit's simulated BMCs and agents (simbmc.BMC),
// for tests of Terraform's parallelism where twenty ipmi_sim BMCs and
// agents would cost more than they prove (the real peers are in
// lab_acc_test.go).
type simBMC = simbmc.BMC

// startSimLab starts provisiond's API with the real workflow engine, driving
// the simulated BMCs and agents of simBMC.
func startSimLab(t *testing.T) (*testDaemon, *simBMC) {
	bmc := simbmc.New(t)
	d := startDaemon(t, nil, daemon.WithPower(bmc))
	bmc.Engine = d.Engine
	return d, bmc
}

// simMachineConfig is n servers with one machine each, for simBMC.
func simMachineConfig(d *testDaemon, n int, actions []string, params, power, wipe string) string {
	var tpl strings.Builder
	tpl.WriteString("version: \"0.1\"\nname: lab\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n")
	for _, a := range actions {
		fmt.Fprintf(&tpl, "      - name: %s\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n", a)
	}
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_template" "lab" {
  name    = "lab"
  content = %q
}

resource "baremetal_hardware" "node" {
  count    = %d
  id       = "node${count.index}"
  hostname = "node${count.index}"
  interfaces = [{
    mac = format("52:54:00:00:10:%%02x", count.index)
    ip  = "10.99.0.${count.index + 10}/24"
  }]
  disks = ["/dev/vda"]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    username = "admin"
    password = "bmc-pw"
  }
}

resource "baremetal_machine" "node" {
  count       = %d
  hardware_id = baremetal_hardware.node[count.index].id
  template_id = baremetal_template.lab.id
  parameters  = { %s }
  user_data   = "#cloud-config\n"
  power       = %q
  wipe        = %q
  timeouts {
    create = "2m"
    delete = "2m"
  }
}
`, tpl.String(), n, n, params, power, wipe))
}

// TestAccMachine drives one machine through its life with real peers (see
// lab_acc_test.go): create installs image v1 with the real agent and
// boots the disk, and shows no drift once provisiond's power poller has
// looked; import reads back the same state; power changes in place through
// ipmi_sim, again without drift; new parameters reinstall (v2); destroy
// wipes the disk with the wipe mode in state (changed from zero to quick)
// and powers the server off.
func TestAccMachine(t *testing.T) {
	requireRealLab(t)
	t.Parallel()
	l := startRealLab(t)
	m := l.addMachine(t, "node0", 0, "bmc-pw-"+store.NewID()[:8])
	password := strconv.Quote(m.BMC.Password)
	addr := "baremetal_machine.node"
	ctx := context.Background()
	start := time.Now()
	mark := func(what string) { t.Logf("%-34s %6.2fs", what, time.Since(start).Seconds()) }

	// installed checks what a finished install leaves: image v on the disk
	// and then tail as the last byte (the old data, or zero after a quick
	// wipe), the check action's output from the machine, the server on and
	// booted from its disk, and provisiond's power poller seeing it on.
	installed := func(v string, tail byte) func(*terraform.State) error {
		return func(*terraform.State) error {
			mark("installed " + v)
			disk, err := os.ReadFile(m.Disk)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(disk, labImage(v)) || disk[len(disk)-1] != tail {
				return fmt.Errorf("disk %s does not hold image %s and then %#x: %q...%#x", m.Disk, v, tail, disk[:40], disk[len(disk)-1])
			}
			// The agent ran the check on the machine and streamed its output.
			pm, err := l.Store.GetMachine(ctx, m.ID)
			if err != nil {
				return err
			}
			w, err := l.Store.GetWorkflow(ctx, pm.WorkflowID)
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(w.Actions, func(a store.Action) bool { return a.Name == "check-image" }); i < 0 || !strings.Contains(w.Actions[i].OutputTail, "baremetal-os-image-"+v+" is on "+m.Disk) {
				return fmt.Errorf("no output of check-image on the machine in workflow %s: %+v", w.ID, w.Actions)
			}
			if p, err := m.Power(ctx); err != nil || p != "on" {
				return fmt.Errorf("BMC says power %q (%v) after the install, want on", p, err)
			}
			if b := m.LastBoot(); b != "disk" {
				return fmt.Errorf("the server last powered on with boot device %q, want disk (the installed OS)", b)
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if p, err := l.waitPolled(pctx, m.ID, time.Now()); err != nil || p != "on" {
				return fmt.Errorf("provisiond's power poller sees %s %q (%v) after the install, want on: the workflow's last power step left the server off", m.ID, p, err)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: labConfig(l.ProviderConfig(), m, false, password, "v1", "on", "zero"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("node0")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("ip"), knownvalue.StringExact(m.IP)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("power"), knownvalue.StringExact("on")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("workflow_id"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("provisioned_at"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("error"), knownvalue.Null()),
				},
				Check: installed("v1", labOldData),
			},
			{
				// The workflow power-cycled the server: once provisiond's
				// poller has looked (installed waits for it), power shows
				// no drift.
				Config:   labConfig(l.ProviderConfig(), m, false, password, "v1", "on", "zero"),
				PlanOnly: true,
			},
			{
				// Everything but the Terraform-only timeouts comes back from
				// provisiond, power included (its poller saw the server on).
				ResourceName: addr, ImportState: true, ImportStateVerify: true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
			{
				// Power and wipe change in place.
				Config: labConfig(l.ProviderConfig(), m, false, password, "v1", "off", "quick"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("power"), knownvalue.StringExact("off")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("wipe"), knownvalue.StringExact("quick")),
				},
				Check: func(*terraform.State) error {
					mark("powered off")
					if p, err := m.Power(ctx); err != nil || p != "off" {
						return fmt.Errorf("BMC says power %q (%v), want off", p, err)
					}
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					defer cancel()
					if p, err := l.waitPolled(pctx, m.ID, time.Now()); err != nil || p != "off" {
						return fmt.Errorf("provisiond's power poller sees %q (%v), want off", p, err)
					}
					return nil
				},
			},
			{
				// The poller has looked since: still no drift.
				Config:   labConfig(l.ProviderConfig(), m, false, password, "v1", "off", "quick"),
				PlanOnly: true,
			},
			{
				// New parameters reinstall: a quick wipe, then image v2.
				Config: labConfig(l.ProviderConfig(), m, false, password, "v2", "on", "quick"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("parameters"), knownvalue.MapExact(map[string]knownvalue.Check{"version": knownvalue.StringExact("v2")})),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
				},
				Check: installed("v2", 0),
			},
		},
		CheckDestroy: func(*terraform.State) error {
			mark("destroyed")
			if _, err := l.Store.GetMachine(ctx, "node0"); err == nil {
				return fmt.Errorf("machine node0 still exists after destroy")
			}
			// Quick wipe: the first and last MiB are zero, the middle is not.
			first, middle, last, err := m.diskRegions()
			if err != nil {
				return err
			}
			if !first || !last || middle {
				return fmt.Errorf("after a quick wipe: first MiB zero %t, last MiB zero %t, middle zero %t; want true, true, false", first, last, middle)
			}
			if p, err := m.Power(ctx); err != nil || p != "off" {
				return fmt.Errorf("BMC says power %q (%v) after destroy, want off", p, err)
			}
			return nil
		},
	})
	for _, want := range []string{"stream-image", "check-image", "wipe-disks"} {
		if !strings.Contains(m.Console(), want) {
			t.Errorf("the machine's console does not mention %q:\n%s", want, m.Console())
		}
	}
}

// TestAccMachineFailedActionTaints: an action that fails on the machine
// ends the apply with an error naming it and its output, and the machine
// stays in state, tainted, with the action and its output tail in its
// attributes, so the next plan replaces it.
func TestAccMachineFailedActionTaints(t *testing.T) {
	requireRealLab(t)
	t.Parallel()
	l := startRealLab(t)
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	cfg := labConfig(l.ProviderConfig(), m, true, `"bmc-pw"`, "v1", "on", "none")
	failed := regexp.MustCompile(`(?s)Provisioning of hardware node0 failed.*Failed action: "broken-write".*exit status 3.*Last output of the action:.*writing partition table.*error: no space left on device.*` +
		`Where\s+workflow\s+\S+\s+got\s+to:\s+failed,\s+at\s+action\s+"broken-write".*boot\s+into\s+the\s+agent\s+OS:\s+\S+,\s+until\s+the\s+agent\s+called\s+in`)
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{Config: cfg, ExpectError: failed},
			{
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("baremetal_machine.node", plancheck.ResourceActionDestroyBeforeCreate),
					expectTainted{
						addr:  "baremetal_machine.node",
						attrs: map[string]*regexp.Regexp{"state": regexp.MustCompile(`^failed$`), "error": regexp.MustCompile(`^action "broken-write" of task "install" failed: .*exit status 3`), "output_tail": regexp.MustCompile(`no space left on device`)},
					},
				}},
				ExpectError: failed,
			},
		},
	})
}

// expectTainted checks that the prior state holds addr tainted, with
// attributes matching attrs.
type expectTainted struct {
	addr  string
	attrs map[string]*regexp.Regexp
}

func (e expectTainted) CheckPlan(_ context.Context, req plancheck.CheckPlanRequest, resp *plancheck.CheckPlanResponse) {
	if ps := req.Plan.PriorState; ps != nil && ps.Values != nil && ps.Values.RootModule != nil {
		for _, r := range ps.Values.RootModule.Resources {
			if r.Address != e.addr {
				continue
			}
			if !r.Tainted {
				resp.Error = fmt.Errorf("%s is in state but not tainted", e.addr)
				return
			}
			for name, re := range e.attrs {
				if v, _ := r.AttributeValues[name].(string); !re.MatchString(v) {
					resp.Error = fmt.Errorf("%s.%s = %q, want a match of %s", e.addr, name, v, re)
					return
				}
			}
			return
		}
	}
	resp.Error = fmt.Errorf("%s is not in the prior state", e.addr)
}

// TestAccMachineParallel creates one machine, then 19 more in one apply;
// the 19 take about as long as the one, not the sum (figures in the log).
func TestAccMachineParallel(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t)
	const n = 20
	var start time.Time
	var one time.Duration
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			PreConfig: func() { start = time.Now() },
			Config:    simMachineConfig(d, 1, []string{"image", "hostname"}, `image = "a.raw"`, "on", "quick"),
			Check: func(*terraform.State) error {
				one = time.Since(start)
				t.Logf("1 machine created in %s", one.Round(time.Millisecond))
				return nil
			},
		}, {
			PreConfig: func() { start = time.Now() },
			Config:    simMachineConfig(d, n, []string{"image", "hostname"}, `image = "a.raw"`, "on", "quick"),
			Check: func(*terraform.State) error {
				took := time.Since(start)
				t.Logf("%d more machines created in one apply in %s (%.1f times the single one)", n-1, took.Round(time.Millisecond), took.Seconds()/one.Seconds())
				ms, err := store.Read(context.Background(), d.Store, func(tx *store.Tx) ([]store.Machine, error) { return tx.ListMachines() })
				if err != nil || len(ms) != n {
					return fmt.Errorf("provisiond holds %d machines (%v), want %d", len(ms), err, n)
				}
				return nil
			},
		}},
	})
}

// TestAccMachineParallelism50 creates 50 machines in one apply with
// terraform's -parallelism=50: 50 provision workflows and 50 WatchMachine
// streams at once against one provisiond.
func TestAccMachineParallelism50(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t)
	const n = 50
	t.Setenv("TF_CLI_ARGS_apply", "-parallelism=50") // not parallel: it sets the environment
	var start time.Time
	resource.Test(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			PreConfig: func() { start = time.Now() },
			Config:    simMachineConfig(d, n, []string{"image", "hostname"}, `image = "a.raw"`, "on", "quick"),
			Check: func(*terraform.State) error {
				t.Logf("%d machines created in one apply with -parallelism=50 in %s", n, time.Since(start).Round(time.Millisecond))
				ms, err := store.Read(context.Background(), d.Store, func(tx *store.Tx) ([]store.Machine, error) { return tx.ListMachines() })
				if err != nil || len(ms) != n {
					return fmt.Errorf("provisiond holds %d machines (%v), want %d", len(ms), err, n)
				}
				for _, m := range ms {
					if m.ProvisionedAt.IsZero() {
						return fmt.Errorf("machine %s not provisioned", m.HardwareID)
					}
				}
				return nil
			},
		}},
	})
}

// TestAccMachineReplacePlansIP: a machine replaced because its parameters
// changed shows its id and ip in the plan, known from the hardware, not
// "(known after apply)" (issue 15: anything reading .ip churned).
func TestAccMachineReplacePlansIP(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t)
	res := "baremetal_machine.node[0]"
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			Config: simMachineConfig(d, 1, []string{"image"}, `image = "a.raw"`, "on", "quick"),
		}, {
			Config: simMachineConfig(d, 1, []string{"image"}, `image = "b.raw"`, "on", "quick"),
			ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
				plancheck.ExpectResourceAction(res, plancheck.ResourceActionDestroyBeforeCreate),
				plancheck.ExpectKnownValue(res, tfjsonpath.New("id"), knownvalue.StringExact("node0")),
				plancheck.ExpectKnownValue(res, tfjsonpath.New("ip"), knownvalue.StringExact("10.99.0.10")),
			}},
		}},
	})
}
