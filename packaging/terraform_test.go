package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The hardware and template the package test creates through Terraform.
const (
	tfHardwareMAC  = "52:54:00:de:b0:01"
	tfTemplateName = "pkgtest-wipe"
	tfConfig       = `terraform {
  required_providers {
    baremetal = {
      source = "rackform/baremetal"
    }
  }
}

# endpoint, token and ca_cert come from BAREMETAL_ENDPOINT, BAREMETAL_TOKEN
# and BAREMETAL_CA_CERT, as the first-rack guide sets them.
provider "baremetal" {}

resource "baremetal_hardware" "node" {
  hostname   = "pkgtest-1"
  interfaces = [{ mac = "` + tfHardwareMAC + `", ip = "10.77.0.11/24" }]
  disks      = ["/dev/sda"]
  labels     = { rack = "pkgtest" }
}

resource "baremetal_template" "wipe" {
  name    = "` + tfTemplateName + `"
  content = <<-EOT
    version: "0.1"
    name: ` + tfTemplateName + `
    global_timeout: 600
    tasks:
      - name: wipe
        worker: "{{ .Hardware.MAC }}"
        actions:
          - name: wipe
            image: wipe
            timeout: 300
            environment:
              DEST_DISK: "{{ .Hardware.Disks 0 }}"
  EOT
}

output "hardware_id" {
  value = baremetal_hardware.node.id
}

output "template_id" {
  value = baremetal_template.wipe.id
}
`
)

// terraformBinary is the terraform the acceptance tests use
// (TF_ACC_TERRAFORM_PATH, as make test sets it), else make tools' bin/terraform.
func terraformBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TF_ACC_TERRAFORM_PATH"); p != "" {
		return p
	}
	p, err := filepath.Abs("../bin/terraform")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no terraform: set TF_ACC_TERRAFORM_PATH or run `make tools` (%v)", err)
	}
	return p
}

// terraformWorkdir builds the provider from this tree, points terraform
// at it with a dev override (no registry, no init) and writes the
// configuration. It returns the directory and the environment terraform
// runs with, which names provisiond the way an operator's shell does.
func terraformWorkdir(t *testing.T, endpoint, token, caPEM string) (string, []string) {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "terraform-provider-baremetal"), "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the provider: %v\n%s", err, out)
	}
	rc := filepath.Join(tmp, "terraformrc")
	conf := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    \"rackform/baremetal\" = %q\n  }\n  direct {}\n}\n", bin)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(tmp, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(tfConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + tmp,
		"TF_CLI_CONFIG_FILE=" + rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1",
		"TF_LOG=info", "TF_LOG_PATH=" + filepath.Join(tmp, "terraform.log"),
		"BAREMETAL_ENDPOINT=" + endpoint, "BAREMETAL_TOKEN=" + token, "BAREMETAL_CA_CERT=" + caPEM,
	}
	return work, env
}

func terraform(ctx context.Context, t *testing.T, tf, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, tf, append([]string{"-chdir=" + dir}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("terraform %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ctl runs the installed `provisiond ctl` with the installed token file
// and the CA that signed provisiond's certificate, as an operator on the
// host would.
func ctl(ctx context.Context, t *testing.T, endpoint, caFile string, args ...string) string {
	t.Helper()
	full := append([]string{"ctl", "--endpoint", endpoint, "--token-file", tokenPath, "--ca-cert", caFile}, args...)
	cmd := exec.CommandContext(ctx, "/usr/bin/provisiond", full...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // no BAREMETAL_* of this host
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("provisiond %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// terraformAgainstInstalled: real terraform creates a hardware and a
// template in the installed provisiond with the installed token over TLS,
// the installed `provisiond ctl` lists both, and terraform destroy removes
// them again.
func terraformAgainstInstalled(t *testing.T, grpcAddr, token, caFile string) {
	tf := terraformBinary(t)
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, env := terraformWorkdir(t, grpcAddr, token, string(caPEM))

	start := time.Now()
	terraform(ctx, t, tf, dir, env, "apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("terraform apply (hardware, template): %v", time.Since(start).Round(time.Millisecond))
	var outputs map[string]struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal([]byte(terraform(ctx, t, tf, dir, env, "output", "-json")), &outputs); err != nil {
		t.Fatalf("terraform output -json: %v", err)
	}
	hwID, tplID := outputs["hardware_id"].Value, outputs["template_id"].Value
	if hwID == "" || tplID == "" {
		t.Fatalf("terraform outputs hold no ids: %+v", outputs)
	}

	hw := ctl(ctx, t, grpcAddr, caFile, "hardware")
	if row := rowOf(hw, hwID); row == "" || !strings.Contains(row, tfHardwareMAC) || !strings.Contains(row, "pkgtest-1") {
		t.Errorf("provisiond ctl hardware lists no row for %s with %s and pkgtest-1:\n%s", hwID, tfHardwareMAC, hw)
	} else {
		t.Logf("provisiond ctl hardware: %s", strings.Join(strings.Fields(row), " "))
	}
	tpl := ctl(ctx, t, grpcAddr, caFile, "templates")
	if row := rowOf(tpl, tplID); row == "" || !strings.Contains(row, tfTemplateName) {
		t.Errorf("provisiond ctl templates lists no row for %s named %s:\n%s", tplID, tfTemplateName, tpl)
	} else {
		t.Logf("provisiond ctl templates: %s", strings.Join(strings.Fields(row), " "))
	}
	if one := ctl(ctx, t, grpcAddr, caFile, "templates", tplID); !strings.Contains(one, "DEST_DISK") {
		t.Errorf("provisiond ctl templates %s does not show the content:\n%s", tplID, one)
	}

	terraform(ctx, t, tf, dir, env, "destroy", "-auto-approve", "-input=false", "-no-color")
	if hw := ctl(ctx, t, grpcAddr, caFile, "hardware"); rowOf(hw, hwID) != "" {
		t.Errorf("hardware %s is still listed after terraform destroy:\n%s", hwID, hw)
	}
	if tpl := ctl(ctx, t, grpcAddr, caFile, "templates"); rowOf(tpl, tplID) != "" {
		t.Errorf("template %s is still listed after terraform destroy:\n%s", tplID, tpl)
	}
}

// rowOf is the table row whose first column is id, or "".
func rowOf(table, id string) string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == id {
			return line
		}
	}
	return ""
}
