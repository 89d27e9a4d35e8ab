package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/gobuild"
)

// TestExamples checks that every example under examples/ is formatted and
// valid against the provider's real schema: `terraform fmt -check`, then
// `terraform validate` of all examples together (the machine example
// refers to the hardware and template ones) with the provider built from
// this tree and installed as a dev override.
func TestExamples(t *testing.T) {
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		t.Skip("no terraform binary: run `make tools` or set TF_ACC_TERRAFORM_PATH")
	}
	if testing.Short() {
		t.Skip("builds the provider: not in -short mode")
	}
	run := func(dir string, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(tf, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("terraform %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
		}
		return string(out)
	}
	run("../examples", nil, "fmt", "-check", "-recursive", "-diff")

	tmp := t.TempDir()
	// The provider's binary, alone in its directory: the dev override's.
	bin := filepath.Dir(gobuild.Build(t, ".", gobuild.Options{}))
	rc := filepath.Join(tmp, "terraformrc")
	if err := os.WriteFile(rc, []byte(fmt.Sprintf("provider_installation {\n  dev_overrides {\n    \"rackform/baremetal\" = %q\n  }\n  direct {}\n}\n", bin)), 0o600); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(tmp, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../examples/*/*/*.tf")
	if err != nil {
		t.Fatal(err)
	}
	// examples/modules and examples/demo are whole configurations of their
	// own, applied for real by the end-to-end test (e2e/).
	files = slices.DeleteFunc(files, func(f string) bool { return strings.HasPrefix(f, "../examples/modules/") })
	top, _ := filepath.Glob("../examples/provider/*.tf")
	files = append(files, top...)
	if len(files) < 7 {
		t.Fatalf("found only %d example files: %v", len(files), files)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.NewReplacer("../examples/", "", "/", "_").Replace(f)
		if err := os.WriteFile(filepath.Join(work, name), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Files the examples read with file().
	for _, f := range []string{"cloud-init.yaml", "provisiond-ca.pem"} {
		if err := os.WriteFile(filepath.Join(work, f), []byte("#\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := run(work, []string{"TF_CLI_CONFIG_FILE=" + rc, "CHECKPOINT_DISABLE=1"}, "validate", "-no-color")
	if !strings.Contains(out, "The configuration is valid") {
		t.Errorf("terraform validate:\n%s", out)
	}
}
