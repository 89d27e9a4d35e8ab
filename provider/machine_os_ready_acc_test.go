package provider

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
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

// phoneHomeUserData is the cloud-config a user writes for wait_for's
// default to be os_ready.
func phoneHomeUserData(d *testDaemon) string {
	return "#cloud-config\nphone_home:\n  url: " + d.HTTP + "/phone-home/$INSTANCE_ID\n  post: [instance_id, hostname]\n  tries: 10\n"
}

// simOSConfig is one simulated server on the loopback address ip, whose
// installed OS the test plays; waitFor is the wait_for line ("" for none).
func simOSConfig(d *testDaemon, ip, userData, waitFor, create string) string {
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_template" "lab" {
  name    = "lab"
  content = "version: \"0.1\"\nname: lab\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n      - name: image\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n"
}

resource "baremetal_hardware" "node" {
  id       = "node0"
  hostname = "node0"
  interfaces = [{
    mac = "52:54:00:00:20:01"
    ip  = "%s/8"
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
  hardware_id = baremetal_hardware.node.id
  template_id = baremetal_template.lab.id
  user_data   = %q
  %s
  timeouts {
    create = %q
  }
}
`, ip, userData, waitFor, create))
}

// phoneHome is the installed OS's cloud-init phone_home: a form POST to
// provisiond's HTTP service from the server's own address (its first
// interface's), retried like cloud-init (here 0.2 s apart).
func phoneHome(t *testing.T, base string) func(ctx context.Context, hw store.Hardware) {
	return func(ctx context.Context, hw store.Hardware) {
		ip, _, _ := strings.Cut(hw.Interfaces[0].IP, "/")
		dl := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c := &http.Client{Transport: &http.Transport{DialContext: dl.DialContext}, Timeout: 10 * time.Second}
		form := url.Values{"instance_id": {hw.ID}, "hostname": {hw.Hostname}}
		for try := 0; try < 50 && ctx.Err() == nil; try++ {
			time.Sleep(200 * time.Millisecond) // the OS boots
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/phone-home/"+hw.ID, strings.NewReader(form.Encode()))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.Do(req)
			if err != nil {
				continue
			}
			_ = resp.Body.Close() // nothing to read: the status says it all
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
}

// osReadyEvents returns the os_ready events logged for hardware id.
func osReadyEvents(d *testDaemon, id string) ([]store.Event, error) {
	return store.Read(context.Background(), d.Store, func(tx *store.Tx) ([]store.Event, error) {
		all, err := tx.Events("", 0)
		var out []store.Event
		for _, e := range all {
			if e.Type == store.EventOSReady && e.HardwareID == id {
				out = append(out, e)
			}
		}
		return out, err
	})
}

// TestAccMachineOSReady: user data that sets up cloud-init's phone_home
// to provisiond makes create wait for the installed OS by default; the
// simulated OS phones home from the server's own address and the apply
// completes with os_ready_at set; no drift; wait_for then changes in
// place, without a reinstall; import reads it all back but wait_for,
// which only Terraform knows.
func TestAccMachineOSReady(t *testing.T) {
	requireAcc(t)
	d, bmc := startSimLab(t)
	bmc.OnDiskBoot(phoneHome(t, d.HTTP))
	addr := "baremetal_machine.node"
	ud := phoneHomeUserData(d)
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: simOSConfig(d, "127.0.0.61", ud, "", "2m"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("os_ready_at"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("wait_for"), knownvalue.Null()),
				},
				Check: func(*terraform.State) error {
					evs, err := osReadyEvents(d, "node0")
					if err != nil || len(evs) != 1 {
						return fmt.Errorf("os_ready events of node0: %v (%v), want one", evs, err)
					}
					if !strings.Contains(evs[0].Message, "127.0.0.61") || !strings.Contains(evs[0].Message, "hostname node0") {
						return fmt.Errorf("os_ready event message %q: want the address and host name", evs[0].Message)
					}
					return nil
				},
			},
			{Config: simOSConfig(d, "127.0.0.61", ud, "", "2m"), PlanOnly: true},
			{
				Config: simOSConfig(d, "127.0.0.61", ud, `wait_for = "installed"`, "2m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("wait_for"), knownvalue.StringExact("installed")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("os_ready_at"), knownvalue.NotNull()),
				},
			},
			{
				ResourceName: addr, ImportState: true, ImportStateVerify: true,
				ImportStateVerifyIgnore: []string{"timeouts", "wait_for"},
			},
		},
	})
}

// TestAccMachineNeverPhonesHome: an OS that never phones home fails the
// create when timeouts.create passes, with an error that says the install
// succeeded, what to check, and how not to wait; the machine is tainted,
// and wait_for = "installed" then reinstalls it without waiting.
func TestAccMachineNeverPhonesHome(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t) // no osBoot: the installed OS stays silent
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: simOSConfig(d, "127.0.0.62", phoneHomeUserData(d), "", "15s"),
				ExpectError: regexp.MustCompile(`(?s)installed, but its OS never phoned home.*provision workflow \S+ succeeded\s+at.*` +
					`did\s+not\s+phone\s+home.*timeouts.create\s+\(15s\).*user\s+data\s+mentions\s+/phone-home.*phone_home.*127\.0\.0\.62.*console.*` +
					`wait_for\s+=\s+"installed".*all\s+\d+\s+actions\s+done.*waiting\s+for\s+the\s+installed\s+OS\s+to\s+phone\s+home:\s+\S+`),
			},
			{
				// Tainted, with the succeeded install in its attributes;
				// wait_for = "installed" reinstalls without waiting.
				Config: simOSConfig(d, "127.0.0.62", phoneHomeUserData(d), `wait_for = "installed"`, "15s"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("baremetal_machine.node", plancheck.ResourceActionDestroyBeforeCreate),
					expectTainted{addr: "baremetal_machine.node", attrs: map[string]*regexp.Regexp{"state": regexp.MustCompile(`^succeeded$`)}},
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("baremetal_machine.node", tfjsonpath.New("os_ready_at"), knownvalue.Null()),
				},
			},
		},
	})
}

// TestAccMachineWaitForInstalled: wait_for = "installed" returns once the
// workflow succeeded, though the user data sets up phone_home and the OS
// never calls; a template without any mention of it does the same by
// default.
func TestAccMachineWaitForInstalled(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t)
	addr := "baremetal_machine.node"
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: simOSConfig(d, "127.0.0.63", phoneHomeUserData(d), `wait_for = "installed"`, "1m"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("os_ready_at"), knownvalue.Null()),
				},
			},
			{
				// Reinstall with user data that does not phone home and no
				// wait_for: the default is installed.
				Config: simOSConfig(d, "127.0.0.63", "#cloud-config\n", "", "1m"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("state"), knownvalue.StringExact("succeeded")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("os_ready_at"), knownvalue.Null()),
				},
			},
		},
	})
}
