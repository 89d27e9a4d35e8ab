package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	terraformBlockRE = regexp.MustCompile("(?ms)^```terraform\n(.*?)^```")
	fileCallRE       = regexp.MustCompile(`file\("\$\{path\.module\}/([^"]+)"\)`)
)

// TestGuidesHCL checks that the Terraform in every guide under
// docs/guides is formatted and valid against the provider's real schema:
// the blocks of one guide are one configuration, checked with `terraform
// fmt -check` and `terraform validate` with the provider built from this
// tree as a dev override, as TestExamples checks examples/. A file() a
// guide reads is the example template of that name when there is one
// (so its content is checked too), else a placeholder.
func TestGuidesHCL(t *testing.T) {
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		t.Skip("no terraform binary: run `make tools` or set TF_ACC_TERRAFORM_PATH")
	}
	if testing.Short() {
		t.Skip("builds the provider: not in -short mode")
	}
	guides, err := filepath.Glob("../docs/guides/*.md")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "terraform-provider-baremetal"), "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build provider: %v\n%s", err, out)
	}
	rc := filepath.Join(tmp, "terraformrc")
	if err := os.WriteFile(rc, []byte(fmt.Sprintf("provider_installation {\n  dev_overrides {\n    \"rackform/baremetal\" = %q\n  }\n  direct {}\n}\n", bin)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1")

	configs := 0
	for _, guide := range guides {
		raw, err := os.ReadFile(guide)
		if err != nil {
			t.Fatal(err)
		}
		blocks := terraformBlockRE.FindAllStringSubmatch(string(raw), -1)
		if len(blocks) == 0 {
			continue
		}
		configs++
		name := strings.TrimSuffix(filepath.Base(guide), ".md")
		dir := filepath.Join(tmp, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range blocks {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("block%d.tf", i+1)), []byte(b[1]), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, f := range fileCallRE.FindAllStringSubmatch(b[1], -1) {
				content := []byte("#\n")
				if ex, err := os.ReadFile(filepath.Join("../examples/templates", f[1])); err == nil {
					content = ex
				}
				if err := os.WriteFile(filepath.Join(dir, f[1]), content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A guide that shows only resources is read with the terraform
		// block the first-rack guide starts with.
		if !strings.Contains(string(raw), "required_providers") {
			req := "terraform {\n  required_providers {\n    baremetal = {\n      source = \"rackform/baremetal\"\n    }\n  }\n}\n"
			if err := os.WriteFile(filepath.Join(dir, "providers.tf"), []byte(req), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		failed := false
		for _, args := range [][]string{{"fmt", "-check", "-diff"}, {"validate", "-no-color"}} {
			cmd := exec.Command(tf, args...)
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.CombinedOutput()
			if err != nil {
				failed = true
				t.Errorf("%s: terraform %s: %v\n%s", filepath.Base(guide), strings.Join(args, " "), err, out)
			} else if args[0] == "validate" && !strings.Contains(string(out), "The configuration is valid") {
				failed = true
				t.Errorf("%s: terraform validate:\n%s", filepath.Base(guide), out)
			}
		}
		if !failed {
			t.Logf("%s: %d terraform blocks: formatted and valid", filepath.Base(guide), len(blocks))
		}
	}
	if configs < 3 {
		t.Errorf("only %d guides hold Terraform: is the fence still ```terraform?", configs)
	}
}
