package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-jsontypes/jsontypes"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc"
	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc/bmctest"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

func hardwareConfig(d *testDaemon, mac, hostname, metadata string) string {
	return hcl(d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_hardware" "test" {
  hostname = %q
  interfaces = [{
    mac          = %q
    ip           = "10.99.0.10/24"
    gateway      = "10.99.0.1"
    name_servers = ["10.99.0.1"]
  }]
  disks = ["/dev/vda"]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    port     = 9623
    username = "admin"
    password = "bmc-secret-1"
  }
  labels   = { rack = "r1" }
  metadata = %s
}
`, hostname, mac, metadata))
}

func TestAccHardware(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t) // the BMC check at create reads the simulated BMC
	addr := "baremetal_hardware.test"
	var id string
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				// Upper-case MAC: provisiond stores lower case, and no diff follows.
				Config: hardwareConfig(d, "52:54:00:AA:00:01", "node1", `jsonencode({ role = "web", n = 1 })`),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("arch"), knownvalue.StringExact("x86_64")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("interfaces").AtSliceIndex(0).AtMapKey("mac"), knownvalue.StringExact("52:54:00:AA:00:01")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("bmc").AtMapKey("password_set"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("labels"), knownvalue.MapExact(map[string]knownvalue.Check{"rack": knownvalue.StringExact("r1")})),
				},
				Check: func(s *terraform.State) error {
					id = s.RootModule().Resources[addr].Primary.ID
					h := d.mustHardware(t, id)
					if h.BMC.Password != "bmc-secret-1" || h.Interfaces[0].MAC != "52:54:00:aa:00:01" {
						return fmt.Errorf("provisiond holds password set=%t mac %s", h.BMC.Password != "", h.Interfaces[0].MAC)
					}
					return nil
				},
			},
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateVerify: true,
				// provisiond never returns the password; the MAC comes back in its spelling.
				ImportStateVerifyIgnore: []string{"bmc.password", "interfaces.0.mac"},
			},
			{
				// Import by MAC, in another spelling.
				ResourceName:            addr,
				ImportState:             true,
				ImportStateId:           "52-54-00-aa-00-01",
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"bmc.password", "interfaces.0.mac"},
			},
			{
				// In place: new host name; the same JSON written differently shows no diff.
				Config: hardwareConfig(d, "52:54:00:AA:00:01", "node1b", `"{\"n\": 1,  \"role\": \"web\"}"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("hostname"), knownvalue.StringExact("node1b")),
				},
				Check: func(s *terraform.State) error {
					if got := s.RootModule().Resources[addr].Primary.ID; got != id {
						return fmt.Errorf("id changed from %s to %s: replaced instead of updated", id, got)
					}
					if h := d.mustHardware(t, id); h.Hostname != "node1b" || h.BMC.Password != "bmc-secret-1" {
						return fmt.Errorf("provisiond holds hostname %q, password kept %t", h.Hostname, h.BMC.Password == "bmc-secret-1")
					}
					return nil
				},
			},
			{
				Config:   hardwareConfig(d, "52:54:00:AA:00:01", "node1b", `jsonencode({ role = "web", n = 1 })`),
				PlanOnly: true,
			},
			{
				// A new MAC is a new server: replace.
				Config: hardwareConfig(d, "52:54:00:aa:00:02", "node1b", `jsonencode({ role = "web", n = 1 })`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
			},
		},
	})
}

func TestAccHardwareInUseRefusesDelete(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t) // the BMC check at create reads the simulated BMC
	var id string
	hold := func(held bool) func() {
		return func() {
			err := d.Store.Update(context.Background(), func(tx *store.Tx) error {
				if held {
					if err := tx.CreateTemplate(store.Template{ID: "held", Name: "held", Content: minimalTemplate("held", "one")}); err != nil {
						return err
					}
					return tx.PutMachine(store.Machine{HardwareID: id, TemplateID: "held"})
				}
				if err := tx.DeleteMachine(id); err != nil {
					return err
				}
				return tx.DeleteTemplate("held")
			})
			if err != nil {
				t.Fatalf("store: %v", err)
			}
		}
	}
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config: hardwareConfig(d, "52:54:00:aa:01:01", "held", `jsonencode({})`),
				Check: func(s *terraform.State) error {
					id = s.RootModule().Resources["baremetal_hardware.test"].Primary.ID
					return nil
				},
			},
			{
				PreConfig:   hold(true),
				Config:      d.ProviderConfig(),
				ExpectError: regexp.MustCompile(`(?s)Hardware .* is in use.*Destroy the baremetal_machine`),
			},
			{
				PreConfig: hold(false),
				Config:    d.ProviderConfig(),
			},
		},
	})
}

func TestAccHardwareDataSource(t *testing.T) {
	requireAcc(t)
	d, _ := startSimLab(t) // the BMC check at create reads the simulated BMC
	cfg := hcl(hardwareConfig(d, "52:54:00:aa:02:01", "ds1", `jsonencode({ a = [1, 2] })`), `
data "baremetal_hardware" "by_mac" {
  mac = upper(baremetal_hardware.test.interfaces[0].mac)
}
data "baremetal_hardware" "by_name" {
  hostname = baremetal_hardware.test.hostname
}
data "baremetal_hardware" "by_id" {
  id = baremetal_hardware.test.id
}
data "baremetal_hardware" "by_labels" {
  with_labels = { rack = "r1" }
  depends_on  = [baremetal_hardware.test]
}
`)
	// A second rack-r1 server makes the label lookup ambiguous; a label
	// no hardware has finds nothing.
	second := `
resource "baremetal_hardware" "second" {
  hostname   = "ds2"
  interfaces = [{ mac = "52:54:00:aa:02:02" }]
  bmc        = { driver = "manual" }
  labels     = { rack = "r1", role = "spare" }
}
`
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{{
			Config: cfg,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.CompareValuePairs("data.baremetal_hardware.by_labels", tfjsonpath.New("id"), "baremetal_hardware.test", tfjsonpath.New("id"), compare.ValuesSame()),
				statecheck.ExpectKnownValue("data.baremetal_hardware.by_labels", tfjsonpath.New("labels"), knownvalue.MapExact(map[string]knownvalue.Check{"rack": knownvalue.StringExact("r1")})),
				statecheck.CompareValuePairs("data.baremetal_hardware.by_mac", tfjsonpath.New("id"), "baremetal_hardware.test", tfjsonpath.New("id"), compare.ValuesSame()),
				statecheck.CompareValuePairs("data.baremetal_hardware.by_name", tfjsonpath.New("id"), "baremetal_hardware.test", tfjsonpath.New("id"), compare.ValuesSame()),
				statecheck.ExpectKnownValue("data.baremetal_hardware.by_id", tfjsonpath.New("bmc").AtMapKey("password_set"), knownvalue.Bool(true)),
				statecheck.ExpectKnownValue("data.baremetal_hardware.by_id", tfjsonpath.New("allocated"), knownvalue.Bool(false)),
				statecheck.ExpectKnownValue("data.baremetal_hardware.by_id", tfjsonpath.New("metadata"), knownvalue.StringExact(`{"a":[1,2]}`)),
				statecheck.ExpectKnownValue("data.baremetal_hardware.by_id", tfjsonpath.New("interfaces").AtSliceIndex(0).AtMapKey("ip"), knownvalue.StringExact("10.99.0.10/24")),
				statecheck.ExpectKnownValue("data.baremetal_hardware.by_id", tfjsonpath.New("netboot"), knownvalue.ObjectExact(map[string]knownvalue.Check{
					"allow_pxe": knownvalue.Bool(false), "allow_workflow": knownvalue.Bool(false),
				})),
			},
		}, {
			Config:      cfg + second,
			ExpectError: regexp.MustCompile(`(?s)No unique hardware with labels rack=r1.*2 hardware records.*\(ds1\).*\(ds2\)|(?s)No unique hardware with labels rack=r1.*2 hardware records.*\(ds2\).*\(ds1\)`),
		}, {
			Config: hcl(cfg, `
data "baremetal_hardware" "none" {
  with_labels = { rack = "r9" }
}
`),
			ExpectError: regexp.MustCompile(`No unique hardware with labels rack=r9(?s).*knows no hardware that carries`),
		}},
	})
}

// TestMetadataSemanticEquality checks the metadata type: equal JSON in
// other spelling compares equal, so Read keeps the configured spelling
// and plans show no diff; different JSON does not.
func TestMetadataSemanticEquality(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		a, b string
		want bool
	}{
		"same":            {`{"a":1}`, `{"a":1}`, true},
		"spacing":         {`{"a": 1, "b": [1, 2]}`, `{"a":1,"b":[1,2]}`, true},
		"key order":       {`{"b":2,"a":1}`, `{"a":1,"b":2}`, true},
		"nested order":    {`{"x":{"d":1,"c":2}}`, "{\n  \"x\": {\"c\": 2, \"d\": 1}\n}", true},
		"different value": {`{"a":1}`, `{"a":2}`, false},
		"array order":     {`{"a":[1,2]}`, `{"a":[2,1]}`, false},
		"extra key":       {`{"a":1}`, `{"a":1,"b":null}`, false},
	} {
		t.Run(name, func(t *testing.T) {
			eq, diags := jsontypes.NewNormalizedValue(tc.a).StringSemanticEquals(ctx, jsontypes.NewNormalizedValue(tc.b))
			if diags.HasError() {
				t.Fatalf("diagnostics: %v", diags)
			}
			if eq != tc.want {
				t.Errorf("%s vs %s: semantically equal = %t, want %t", tc.a, tc.b, eq, tc.want)
			}
		})
	}
	// The schema uses this type, so the comparison above is what Terraform sees.
	var r hardwareResource
	resp := new(fwresource.SchemaResponse)
	r.Schema(ctx, fwresource.SchemaRequest{}, resp)
	if _, ok := resp.Schema.Attributes["metadata"].GetType().(jsontypes.NormalizedType); !ok {
		t.Errorf("metadata has type %T, want jsontypes.NormalizedType", resp.Schema.Attributes["metadata"].GetType())
	}
}

// bmcCheckConfig is hardware id with an IPMI BMC at 127.0.0.1:port;
// verify is the bmc.verify line ("" leaves the default).
func bmcCheckConfig(id string, n, port int, password, verify string) string {
	return fmt.Sprintf(`
resource "baremetal_hardware" %[1]q {
  id         = %[1]q
  interfaces = [{ mac = "52:54:00:aa:05:%02[2]x" }]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    port     = %[3]d
    username = "admin"
    password = %[4]q
    %[5]s
  }
}
`, id, n, port, password, verify)
}

// notStored fails the test if provisiond holds hardware id.
func notStored(t *testing.T, d *testDaemon, id string) func() {
	return func() {
		if _, err := d.Store.GetHardware(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("hardware %s after a failed BMC check: %v, want not found", id, err)
		}
	}
}

// TestAccHardwareBMCCheck: creating hardware reads its BMC's power state
// through the daemon's BMC driver (here the simulated one). A BMC that
// refuses fails the create with its address and what it said, and
// nothing is registered; once it answers, the create succeeds and the
// power state read is recorded; verify = false registers a server whose
// BMC refuses, without asking it.
func TestAccHardwareBMCCheck(t *testing.T) {
	requireAcc(t)
	d, sim := startSimLab(t)
	sim.Refuse("chk1", errors.New("RAKP 2 HMAC is invalid: wrong password"))
	sim.Refuse("chk2", errors.New("RAKP 2 HMAC is invalid: wrong password"))
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				Config:      hcl(d.ProviderConfig(), bmcCheckConfig("chk1", 1, 9623, "pw", "")),
				ExpectError: regexp.MustCompile(`(?s)BMC check failed.*bmc\.verify\s+=\s+false.*the ipmi BMC at\s+127\.0\.0\.1:9623\s+refused.*wrong\s+password`),
			},
			{
				PreConfig: func() { notStored(t, d, "chk1")(); sim.Refuse("chk1", nil) },
				Config:    hcl(d.ProviderConfig(), bmcCheckConfig("chk1", 1, 9623, "pw", "")),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("baremetal_hardware.chk1", tfjsonpath.New("bmc").AtMapKey("verify"), knownvalue.Bool(true)),
				},
				Check: func(*terraform.State) error {
					// The check's read is recorded: it went through the daemon's BMC driver.
					if h := d.mustHardware(t, "chk1"); h.Power != "off" || h.PowerSeenAt.IsZero() {
						return fmt.Errorf("chk1 power %q seen at %v: want the state the check read", h.Power, h.PowerSeenAt)
					}
					return nil
				},
			},
			{
				Config: hcl(d.ProviderConfig(), bmcCheckConfig("chk1", 1, 9623, "pw", ""), bmcCheckConfig("chk2", 2, 9624, "pw", "verify = false")),
				Check: func(*terraform.State) error {
					if h := d.mustHardware(t, "chk2"); h.Power != "" {
						return fmt.Errorf("chk2 power %q: its BMC was asked despite verify = false", h.Power)
					}
					return nil
				},
			},
			{
				Config:   hcl(d.ProviderConfig(), bmcCheckConfig("chk1", 1, 9623, "pw", ""), bmcCheckConfig("chk2", 2, 9624, "pw", "verify = false")),
				PlanOnly: true,
			},
		},
	})
}

// TestAccHardwareBMCCheckIPMISim: against a real BMC (OpenIPMI's ipmi_sim,
// driven through bmclib and ipmitool), a wrong password fails the create
// with the BMC's address and the refusal, quickly; the right one
// registers the server with the power state it read.
func TestAccHardwareBMCCheckIPMISim(t *testing.T) {
	requireAcc(t)
	if why := bmctest.IPMIToolsMissing(); why != "" {
		fmt.Printf("SKIP %s: %s\n", t.Name(), why)
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim, err := bmctest.StartIPMISim(ctx, t.TempDir(), "admin", "ipmi-pass")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	d := startDaemon(t, func(c *daemon.Config) {
		c.BMC = bmc.Options{Timeout: 10 * time.Second, IPMICipherSuite: "3", PollInterval: -1}
	})
	var start time.Time
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 preCheck(t),
		ProtoV6ProviderFactories: protoV6,
		Steps: []resource.TestStep{
			{
				PreConfig:   func() { start = time.Now() },
				Config:      hcl(d.ProviderConfig(), bmcCheckConfig("real1", 1, sim.Port, "not-the-password", "")),
				ExpectError: regexp.MustCompile(fmt.Sprintf(`(?s)BMC check failed.*the ipmi BMC at\s+127\.0\.0\.1:%d\s+refused.*refused\s+the\s+credentials`, sim.Port)),
			},
			{
				PreConfig: func() {
					fmt.Printf("BMC check of a wrong password against ipmi_sim: refused after %s (plan and apply included)\n", time.Since(start).Round(time.Millisecond))
					notStored(t, d, "real1")()
				},
				Config: hcl(d.ProviderConfig(), bmcCheckConfig("real1", 1, sim.Port, "ipmi-pass", "")),
				Check: func(*terraform.State) error {
					if h := d.mustHardware(t, "real1"); h.Power != "off" {
						return fmt.Errorf("real1 power %q: want off, as ipmi_sim said", h.Power)
					}
					return nil
				},
			},
			{
				// A BMC that never answers: the check gives up within its bound.
				PreConfig: func() { start = time.Now() },
				Config: hcl(d.ProviderConfig(), bmcCheckConfig("real1", 1, sim.Port, "ipmi-pass", ""),
					bmcCheckConfig("silent1", 2, silentPort(t), "ipmi-pass", "")),
				ExpectError: regexp.MustCompile(`(?s)BMC check failed.*the ipmi BMC at\s+127\.0\.0\.1:[0-9]+\s+did\s+not\s+answer\s+a\s+power-state\s+read\s+within\s+15s`),
			},
			{
				PreConfig: func() {
					took := time.Since(start)
					fmt.Printf("BMC check of a BMC that never answers: gave up after %s (plan and apply included)\n", took.Round(time.Millisecond))
					if took > 25*time.Second {
						t.Errorf("the check of a silent BMC took %s: want about 15s", took)
					}
					notStored(t, d, "silent1")()
				},
				Config:   hcl(d.ProviderConfig(), bmcCheckConfig("real1", 1, sim.Port, "ipmi-pass", "")),
				PlanOnly: true,
			},
		},
	})
}

// silentPort is a UDP port of 127.0.0.1 that takes packets and never
// answers: a BMC that is down behind a switch that still forwards.
func silentPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}
