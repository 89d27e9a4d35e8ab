package provider

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// planCheckConfig is one server with a machine whose template reads the
// image parameter; params is the machine's parameters block ("" : none).
func planCheckConfig(d *testDaemon, params string, machine bool) string {
	const tpl = "version: \"0.1\"\nname: lab\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n" +
		"      - name: image\n        image: image2disk\n        timeout: 60\n        environment:\n" +
		"          IMG_URL: \"http://127.0.0.1/{{ .Params.image }}\"\n          DEST_DISK: \"{{ .Hardware.Disks 0 }}\"\n"
	cfg := hcl(`
terraform {
  required_providers {
    baremetal = { source = "rackform/baremetal" }
  }
}
`, d.ProviderConfig(), fmt.Sprintf(`
resource "baremetal_template" "lab" {
  name    = "lab"
  content = %q
}

resource "baremetal_hardware" "node" {
  id       = "node0"
  hostname = "node0"
  interfaces = [{ mac = "52:54:00:00:10:00", ip = "10.99.0.10/24" }]
  disks = ["/dev/vda"]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    username = "admin"
    password = "bmc-pw"
  }
}
`, tpl))
	if machine {
		cfg += fmt.Sprintf(`
resource "baremetal_machine" "node" {
  hardware_id = baremetal_hardware.node.id
  template_id = baremetal_template.lab.id
  %s
  reinstall = { enabled = true }
}
`, params)
	}
	return cfg
}

// TestAccMachinePlanChecksInstall: with real terraform, a plan that
// creates a machine whose template needs a parameter the machine does not
// give warns, naming the parameter and the template's line, before
// anything boots; given it, the plan is quiet and the apply installs. A
// reinstall planned with the parameter gone warns the same way. A plan
// whose hardware is created in the same apply cannot be checked, and is
// not.
func TestAccMachinePlanChecksInstall(t *testing.T) {
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		t.Skip("no terraform binary: run `make tools` or set TF_ACC_TERRAFORM_PATH")
	}
	d, _ := startSimLab(t)
	dir := newTFDir(t, map[string]string{"rackform/baremetal": buildPlugin(t, "baremetal", "github.com/rackform/terraform-provider-baremetal")}, nil)
	const warning = "The install of machine node0 will fail"
	plan := func() string {
		return dir.exec(t, []int{0, 2}, "plan", "-input=false", "-no-color", "-detailed-exitcode").out
	}

	dir.write(t, planCheckConfig(d, "", true))
	if out := plan(); strings.Contains(out, warning) {
		t.Fatalf("hardware not created yet, yet the plan warned:\n%s", out)
	}
	dir.write(t, planCheckConfig(d, "", false))
	dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve")

	dir.write(t, planCheckConfig(d, "", true))
	out := plan()
	for _, want := range []string{warning, "template", "image", "line"} {
		if !strings.Contains(out, want) {
			t.Fatalf("plan without the image parameter: no %q in:\n%s", want, out)
		}
	}
	t.Logf("the plan's warning:\n%s", out[strings.Index(out, warning):])
	if r := dir.exec(t, []int{1}, "apply", "-input=false", "-auto-approve", "-no-color"); !strings.Contains(r.out, "image") {
		t.Fatalf("apply without the image parameter: want a failure naming it:\n%s", r.out)
	}

	dir.write(t, planCheckConfig(d, `parameters = { image = "v1.raw" }`, true))
	if out := plan(); strings.Contains(out, warning) {
		t.Fatalf("plan with the image parameter warned:\n%s", out)
	}
	dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve")
	if _, err := d.Store.GetMachine(t.Context(), "node0"); err != nil {
		t.Fatalf("machine after apply: %v", err)
	}

	dir.write(t, planCheckConfig(d, `parameters = { other = "x" }`, true))
	if out := plan(); !strings.Contains(out, warning) || !strings.Contains(out, "will be updated in-place") {
		t.Fatalf("reinstall without the image parameter: want an in-place update with the warning:\n%s", out)
	}
}
