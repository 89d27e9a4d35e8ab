package actionspec

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestNormalize covers what the template parser and the agent each
// accepted before they shared this function.
func TestNormalize(t *testing.T) {
	tests := map[string]string{
		// bare names
		"image2disk": "image2disk",
		"exec":       "exec",
		"kexec":      "kexec",
		// hub references, old and new organisations
		"quay.io/tinkerbell/actions/image2disk:v1.0.0": "image2disk",
		"quay.io/tinkerbell-actions/writefile:v1.0.0":  "writefile",
		"quay.io/tinkerbell/actions/kexec:latest":      "kexec",
		"quay.io/tinkerbell/actions/reboot:v1.0.0":     "reboot",
		"ghcr.io/tinkerbell/actions/cexec:v1.0.0":      "cexec",
		// digests, with and without a tag
		"ghcr.io/tinkerbell/actions/cexec@sha256:0123abcd":        "cexec",
		"quay.io/tinkerbell/actions/writefile@sha256:abcd":        "writefile",
		"quay.io/tinkerbell/actions/image2disk:v1.0.0@sha256:abc": "image2disk",
		// registries with ports, mirrors with deeper paths
		"registry.local:5000/mirror/wipe:latest": "wipe",
		"localhost:5000/cexec:latest":            "cexec",
		// the agent's leniency: space and case
		" WIPE ":                              "wipe",
		"Quay.io/Tinkerbell/Actions/KEXEC:v1": "kexec",
		// not ours: normalised all the same, refused by Resolve
		"quay.io/tinkerbell/actions/oci2disk:v1.0.0": "oci2disk",
		"docker.io/library/ubuntu:22.04":             "ubuntu",
		"":                                           "",
		"   ":                                        "",
		"quay.io/tinkerbell/actions/":                "",
	}
	for in, want := range tests {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	tests := map[string]struct {
		want    string // the action, or "" for an error
		errPart string
	}{
		"hub image2disk":  {want: Image2Disk},
		"hub kexec":       {want: Kexec},
		"reboot":          {want: Reboot},
		"poweroff":        {want: Poweroff},
		"empty":           {errPart: "must not be empty"},
		"slash only":      {errPart: "names no action"},
		"unsupported hub": {errPart: "archive2disk is not supported here"},
		"container image": {errPart: "container images are not supported"},
	}
	images := map[string]string{
		"hub image2disk":  "quay.io/tinkerbell/actions/image2disk:v1.0.0",
		"hub kexec":       "quay.io/tinkerbell/actions/kexec:latest",
		"reboot":          "reboot",
		"poweroff":        "ghcr.io/tinkerbell/actions/poweroff:v1",
		"empty":           " ",
		"slash only":      "quay.io/",
		"unsupported hub": "quay.io/tinkerbell/actions/archive2disk:v1.0.0",
		"container image": "docker.io/library/ubuntu:22.04",
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a, err := Resolve(images[name])
			if tc.want != "" {
				if err != nil || a.Name != tc.want {
					t.Fatalf("Resolve = %q, %v; want %q", a.Name, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("Resolve err = %v; want it to contain %q", err, tc.errPart)
			}
		})
	}
}

func TestContract(t *testing.T) {
	seen := map[string]bool{}
	for _, a := range All() {
		if seen[a.Name] {
			t.Errorf("%s listed twice", a.Name)
		}
		seen[a.Name] = true
		if a.Name != Normalize(a.Name) {
			t.Errorf("%s is not in normal form", a.Name)
		}
		if a.Summary == "" {
			t.Errorf("%s has no summary", a.Name)
		}
		if _, dup := Unsupported[a.Name]; dup {
			t.Errorf("%s is both built in and unsupported", a.Name)
		}
		for _, v := range a.Env {
			if v.Desc == "" {
				t.Errorf("%s.%s has no description", a.Name, v.Name)
			}
			if v.Required && v.Default != "" {
				t.Errorf("%s.%s is required and has a default", a.Name, v.Name)
			}
			if v.Unless != "" {
				if _, ok := a.Var(v.Unless); !ok {
					t.Errorf("%s.%s: Unless names unknown %s", a.Name, v.Name, v.Unless)
				}
			}
		}
	}
	for _, n := range []string{Kexec, Reboot, Poweroff} {
		if !IsFinal(n) {
			t.Errorf("%s should end the workflow", n)
		}
	}
	if IsFinal(Image2Disk) || IsFinal("nonsense") {
		t.Error("IsFinal true for a plain action")
	}
}

func TestMissing(t *testing.T) {
	w, _ := Get(Wipe)
	if m := w.Missing(map[string]string{"DEST_DISK": "/dev/sda"}); len(m) != 0 {
		t.Errorf("wipe with DEST_DISK: missing %v", m)
	}
	if m := w.Missing(nil); len(m) != 1 || m[0].Name != "DEST_DISKS" {
		t.Errorf("wipe with nothing: missing %v", m)
	}
	k, _ := Get(Kexec)
	var names []string
	for _, v := range k.Missing(map[string]string{"BLOCK_DEVICE": "/dev/sda2"}) {
		names = append(names, v.Name)
	}
	if got := strings.Join(names, ","); got != "KERNEL_PATH,CMD_LINE" {
		t.Errorf("kexec missing %s", got)
	}
}

func TestMarkdown(t *testing.T) {
	md := Markdown()
	for _, want := range []string{"| `kexec` |", "`KERNEL_PATH` (required)", "| `archive2disk` | not supported", "Must be the last action."} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if n := strings.Count(md, "\n"); n != 2+len(All())+len(Unsupported) {
		t.Errorf("Markdown has %d lines", n)
	}
}

var update = flag.Bool("update", false, "rewrite golden files")

// TestMarkdownGolden keeps testdata/actions.md, the table of hub actions
// for the documentation, in step with the contract (go test -update).
func TestMarkdownGolden(t *testing.T) {
	const golden = "testdata/actions.md"
	got := Markdown()
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date: run go test ./internal/actionspec -update", golden)
	}
}
