package provider

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/api"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

// labBMC plays the servers' BMCs: it keeps power state per hardware, and
// powering a server on (or cycling it) with the boot device set to PXE
// "boots" it into the agent OS, that is, starts a simulated agent that
// talks to the workflow engine's agent API as the real agent does over
// gRPC: it takes the token provisiond mints for the boot, asks for actions
// and reports them. An action whose name starts with "broken" fails.
type labBMC struct {
	t   *testing.T
	ctx context.Context

	mu     sync.Mutex
	eng    *workflow.Engine
	power  map[string]string
	boot   map[string]string
	agents sync.WaitGroup
	// ran counts the actions the agents ran, per hardware.
	ran map[string][]string
}

func newLabBMC(t *testing.T) *labBMC {
	ctx, cancel := context.WithCancel(context.Background())
	b := &labBMC{t: t, ctx: ctx, power: map[string]string{}, boot: map[string]string{}, ran: map[string][]string{}}
	t.Cleanup(func() { cancel(); b.agents.Wait() })
	return b
}

func (b *labBMC) PowerState(_ context.Context, hw store.Hardware) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.power[hw.ID]; ok {
		return s, nil
	}
	return "off", nil
}

func (b *labBMC) SetPower(_ context.Context, hw store.Hardware, action string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.power[hw.ID]
	switch action {
	case "on", "cycle", "reset":
		b.power[hw.ID] = "on"
		if (was != "on" || action != "on") && b.boot[hw.ID] == "pxe" {
			b.agents.Add(1)
			go b.runAgent(hw.ID)
		}
	case "off", "soft":
		b.power[hw.ID] = "off"
	default:
		return fmt.Errorf("unknown power action %q", action)
	}
	return nil
}

func (b *labBMC) SetBootDevice(_ context.Context, hw store.Hardware, device string, _, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.boot[hw.ID] = device
	return nil
}

// runAgent is the agent OS of one boot.
func (b *labBMC) runAgent(hwID string) {
	defer b.agents.Done()
	ctx := b.ctx
	var token string
	for token == "" {
		// The iPXE script asks for the token once the engine waits for the agent.
		_, tok, err := b.eng.MintAgentToken(ctx, hwID)
		if err == nil {
			token = tok
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	for ctx.Err() == nil {
		as, err := b.eng.NextAction(ctx, token, hwID)
		if err != nil || as.Done {
			return
		}
		if as.Action == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		act := *as.Action
		b.mu.Lock()
		b.ran[hwID] = append(b.ran[hwID], act.Name)
		b.mu.Unlock()
		r := workflow.Report{Index: as.Index, Task: act.Task, Action: act.Name, Attempt: act.Attempt, State: store.StateSucceeded, OutputTail: "done\n"}
		if strings.HasPrefix(act.Name, "broken") {
			r.State, r.Message, r.OutputTail = store.StateFailed, "exit status 3", "writing image\nerror: no space left on device\n"
		}
		if err := b.eng.ReportAction(ctx, token, r); err != nil {
			return
		}
	}
}

func (b *labBMC) actions(hwID string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.ran[hwID]...)
}

// startLab starts provisiond's API with the real workflow engine, driving
// the simulated BMCs and agents of labBMC.
func startLab(t *testing.T) (*testDaemon, *labBMC) {
	bmc := newLabBMC(t)
	d := startDaemon(t, func(st *store.Store, log *slog.Logger) api.Options {
		eng := workflow.New(st, log, prometheus.NewRegistry(), bmc, workflow.Options{
			PublicURL: "http://127.0.0.1:1", ImagesURL: "http://127.0.0.1:1/images",
			BootTimeout: time.Minute, HeartbeatTimeout: time.Minute, ActionGrace: time.Second,
			PowerAttempts: 2, PowerRetryDelay: 10 * time.Millisecond,
		})
		bmc.eng = eng
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- eng.Serve(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("workflow engine: %v", err)
			}
		})
		return api.Options{Machines: eng, Power: bmc}
	})
	return d, bmc
}

// machineConfig is n servers with one machine each; with n == 1 the
// resources have no count (import addresses cannot carry an index).
func machineConfig(d *testDaemon, n int, actions []string, params, power, wipe string) string {
	cfg := machineConfigCount(d, n, actions, params, power, wipe)
	if n == 1 {
		cfg = regexp.MustCompile(`(?m)^\s*count\s*=.*\n`).ReplaceAllString(cfg, "")
		cfg = strings.NewReplacer("[count.index]", "", "count.index", "0").Replace(cfg)
	}
	return cfg
}

func machineConfigCount(d *testDaemon, n int, actions []string, params, power, wipe string) string {
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
    password = "canary-bmc-pw-9b1c"
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

func TestAccMachine(t *testing.T) {
	requireAcc(t)
	d, bmc := startLab(t)
	addr := "baremetal_machine.node"
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: machineConfig(d, 1, []string{"image", "hostname"}, `image = "a.raw"`, "on", "quick"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("node0")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("ip"), knownvalue.StringExact("10.99.0.10")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("power"), knownvalue.StringExact("on")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("workflow_id"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("provisioned_at"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("error"), knownvalue.Null()),
				},
				Check: func(*terraform.State) error {
					if got := bmc.actions("node0"); strings.Join(got, ",") != "image,hostname" {
						return fmt.Errorf("the agent ran %v, want image, hostname", got)
					}
					return nil
				},
			},
			{
				ResourceName: addr, ImportState: true, ImportStateVerify: true,
				// Terraform-only settings that provisiond does not hold.
				ImportStateVerifyIgnore: []string{"timeouts", "power"},
			},
			{
				// Power changes in place.
				Config: machineConfig(d, 1, []string{"image", "hostname"}, `image = "a.raw"`, "off", "zero"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("power"), knownvalue.StringExact("off")),
				},
				Check: func(*terraform.State) error {
					if s, _ := bmc.PowerState(context.Background(), store.Hardware{ID: "node0"}); s != "off" {
						return fmt.Errorf("BMC says power %s, want off", s)
					}
					return nil
				},
			},
			{Config: machineConfig(d, 1, []string{"image", "hostname"}, `image = "a.raw"`, "off", "zero"), PlanOnly: true},
			{
				// New parameters reinstall.
				Config: machineConfig(d, 1, []string{"image", "hostname"}, `image = "b.raw"`, "on", "zero"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("parameters"), knownvalue.MapExact(map[string]knownvalue.Check{"image": knownvalue.StringExact("b.raw")})),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
				},
			},
		},
		CheckDestroy: func(*terraform.State) error {
			if _, err := d.Store.GetMachine(context.Background(), "node0"); err == nil {
				return fmt.Errorf("machine node0 still exists after destroy")
			}
			return nil
		},
	})
	// The secrets never reached provisiond's log.
	for _, secret := range []string{"canary-bmc-pw-9b1c", d.Token} {
		if strings.Contains(d.Log.String(), secret) {
			t.Errorf("provisiond's log contains a secret")
		}
	}
}

// TestAccMachineFailedActionTaints: a failing action ends the apply with
// an error naming it and its output, and the machine stays in state,
// tainted, so the next plan replaces it.
func TestAccMachineFailedActionTaints(t *testing.T) {
	requireAcc(t)
	d, _ := startLab(t)
	cfg := machineConfig(d, 1, []string{"image", "broken-write"}, `image = "a.raw"`, "on", "none")
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config:      cfg,
				ExpectError: regexp.MustCompile(`(?s)Provisioning of hardware node0 failed.*Failed action: "broken-write".*exit status 3.*no space left on device`),
			},
			{
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					// Tainted: replaced, not dropped.
					plancheck.ExpectResourceAction("baremetal_machine.node", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ExpectError: regexp.MustCompile(`Failed action: "broken-write"`),
			},
		},
	})
}

// TestAccMachineParallel creates many machines in one apply; the apply
// takes about as long as one install, not the sum (figures in the log).
func TestAccMachineParallel(t *testing.T) {
	requireAcc(t)
	d, _ := startLab(t)
	const n = 20
	var start time.Time
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			PreConfig: func() { start = time.Now() },
			Config:    machineConfig(d, n, []string{"image", "hostname"}, `image = "a.raw"`, "on", "quick"),
			Check: func(*terraform.State) error {
				t.Logf("%d machines created in one apply in %s", n, time.Since(start).Round(time.Millisecond))
				ms, err := store.Read(context.Background(), d.Store, func(tx *store.Tx) ([]store.Machine, error) { return tx.ListMachines() })
				if err != nil || len(ms) != n {
					return fmt.Errorf("provisiond holds %d machines (%v), want %d", len(ms), err, n)
				}
				return nil
			},
		}},
	})
}
