package template

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDebianHub renders examples/templates/debian-hub.yaml, a template as
// Tinkerbell users write it, for an NVMe and a virtio machine and compares
// the result with testdata/debian-hub/*.golden (go test -update rewrites
// them).
func TestDebianHub(t *testing.T) {
	in, err := os.ReadFile("../../examples/templates/debian-hub.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := Parse(string(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wantImages := []string{ImageImage2Disk, ImageWriteFile, ImageWriteFile, ImageCExec, ImageKexec}
	var got []string
	for _, s := range raw.Steps() {
		got = append(got, s.Builtin)
	}
	if diff := cmp.Diff(wantImages, got); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	machine := func(disk string, params map[string]string) Data {
		d := sample()
		d.Hardware.DiskPaths = []string{disk}
		d.Params = map[string]string{"image_url": "http://10.0.0.1:8080/images/debian-12.raw.zst", "image_sha256": strings.Repeat("ab", 32)}
		for k, v := range params {
			d.Params[k] = v
		}
		return d
	}
	tests := map[string]struct {
		data                  Data
		wantRoot, wantCmdRoot string
	}{
		"nvme":   {data: machine("/dev/nvme0n1", nil), wantRoot: "/dev/nvme0n1p2", wantCmdRoot: "root=/dev/nvme0n1p2 "},
		"virtio": {data: machine("/dev/vda", map[string]string{"root_partition": "3", "kernel_root": "LABEL=root", "console": "ttyAMA0"}), wantRoot: "/dev/vda3", wantCmdRoot: "root=LABEL=root "},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, tpl, err := RenderText(string(in), tc.data)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			steps := tpl.Steps()
			if n := len(steps); n != 5 {
				t.Fatalf("%d steps", n)
			}
			for i, key := range map[int]string{1: "DEST_DISK", 2: "DEST_DISK", 3: "BLOCK_DEVICE", 4: "BLOCK_DEVICE"} {
				if got := steps[i].Environment[key]; got != tc.wantRoot {
					t.Errorf("%s %s = %q, want %q", steps[i].Name, key, got, tc.wantRoot)
				}
			}
			if got := steps[4].Environment["CMD_LINE"]; !strings.HasPrefix(got, tc.wantCmdRoot) {
				t.Errorf("kexec CMD_LINE = %q, want it to start %q", got, tc.wantCmdRoot)
			}
			golden := filepath.Join("testdata", "debian-hub", name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), out); diff != "" {
				t.Errorf("rendered (-golden +got):\n%s", diff)
			}
		})
	}
}
