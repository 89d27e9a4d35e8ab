package template

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// sample is the hardware and machine the golden files are rendered for.
func sample() Data {
	return Data{
		Hardware: Hardware{
			ID: "hw-1", Hostname: "node1", Arch: "x86_64",
			Interfaces: []Interface{
				{MAC: "52:54:00:12:34:56", IP: "10.0.0.5", Prefix: "10.0.0.5/24", Gateway: "10.0.0.1"},
				{MAC: "52:54:00:12:34:57"},
			},
			DiskPaths: []string{"/dev/sda", "/dev/nvme0n1"},
			Metadata:  map[string]any{"rack": "r12"},
		},
		Params:      map[string]string{"image": "jammy.raw.zst", "sha256": strings.Repeat("ab", 32), "image_url": "http://10.0.0.1:8080/images/jammy.raw.zst", "wipe_mode": "zero"},
		UserData:    "#cloud-config\nusers:\n  - name: ops\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n",
		SSHKeys:     []string{"ssh-ed25519 AAAAC3Nza ops@example", "ssh-rsa AAAAB3 backup@example"},
		PublicURL:   "http://10.0.0.1:8080",
		ImagesURL:   "http://10.0.0.1:8080/images",
		MetadataURL: "http://10.0.0.1:8080/metadata",
	}
}

const minimal = `version: "0.1"
name: t
global_timeout: 60
tasks:
  - name: a
    actions:
      - name: one
        image: exec
        timeout: 10
        command: [true]
`

func TestParseErrors(t *testing.T) {
	tests := map[string]struct {
		content string
		want    string // the first error
	}{
		"empty":            {"", "template: is empty"},
		"not yaml":         {"version: [", "line 1: yaml: did not find expected node content"},
		"bad template":     {"name: {{ .Foo", "line 1: template: unclosed action"},
		"missing version":  {strings.Replace(minimal, `version: "0.1"`, `x: 1`, 1), `line 1: x: unknown field (known: version, name, global_timeout, tasks)`},
		"wrong version":    {strings.Replace(minimal, `"0.1"`, `"0.2"`, 1), `line 1: version: "0.2" is not supported; use "0.1"`},
		"zero timeout":     {strings.Replace(minimal, "timeout: 10", "timeout: 0", 1), "line 9: tasks[0].actions[0].timeout: must be positive, got 0"},
		"negative global":  {strings.Replace(minimal, "global_timeout: 60", "global_timeout: -5", 1), "line 3: global_timeout: must be positive, got -5"},
		"bad duration":     {strings.Replace(minimal, "timeout: 10", "timeout: soon", 1), `line 9: tasks[0].actions[0].timeout: "soon" is neither a number of seconds nor a duration like 30m`},
		"missing timeout":  {strings.Replace(minimal, "        timeout: 10\n", "", 1), "line 7: tasks[0].actions[0].timeout: is required (seconds, or a duration like 30m)"},
		"unknown image":    {strings.Replace(minimal, "image: exec", "image: docker.io/library/alpine:3", 1), `line 8: tasks[0].actions[0].image: "docker.io/library/alpine:3" maps to no built-in action (known: cexec, exec, image2disk, kexec, poweroff, reboot, wipe, writefile); container images are not supported`},
		"unsupported hub":  {strings.Replace(minimal, "image: exec", "image: quay.io/tinkerbell/actions/oci2disk:v1.0.0", 1), `line 8: tasks[0].actions[0].image: "quay.io/tinkerbell/actions/oci2disk:v1.0.0": the hub action oci2disk is not supported here (export the image to a raw file served over HTTP and use image2disk); built-in actions: cexec, exec, image2disk, kexec, poweroff, reboot, wipe, writefile`},
		"kexec not last":   {strings.Replace(minimal, "      - name: one\n", "      - name: boot\n        image: quay.io/tinkerbell/actions/kexec:v1.0.0\n        timeout: 90\n        environment: {BLOCK_DEVICE: /dev/sda2, KERNEL_PATH: /boot/vmlinuz, CMD_LINE: root=/dev/sda2}\n      - name: one\n", 1), "line 7: tasks[0].actions[0].image: the kexec action ends the workflow and must be its last action; move it after a/one, or remove it"},
		"reboot not last":  {minimal + "  - name: b\n    actions:\n      - name: r\n        image: reboot\n        timeout: 60\n      - name: two\n        image: exec\n        timeout: 10\n        command: [true]\n", "line 13: tasks[1].actions[0].image: the reboot action ends the workflow and must be its last action; move it after b/two, or remove it"},
		"kexec no kernel":  {strings.Replace(minimal, "image: exec", "image: kexec\n        environment: {BLOCK_DEVICE: /dev/sda2, CMD_LINE: ro}", 1), "line 7: tasks[0].actions[0].environment.KERNEL_PATH: is required by the kexec action: path of the kernel inside that partition, e.g. /boot/vmlinuz"},
		"exec no command":  {strings.Replace(minimal, "        command: [true]\n", "", 1), "line 7: tasks[0].actions[0].command: is required by the exec action (or environment CMD_LINE)"},
		"retries too many": {strings.Replace(minimal, "timeout: 10", "timeout: 10\n        retries: 11", 1), "line 10: tasks[0].actions[0].retries: 11 is out of range 0 to 10"},
		"unknown field":    {strings.Replace(minimal, "timeout: 10", "timeout: 10\n        privileged: true", 1), "line 10: tasks[0].actions[0].privileged: unknown field (known: name, image, timeout, command, environment, volumes, pid, retries, on-timeout, on-failure)"},
		"duplicate task": {minimal + `  - name: a
    actions:
      - name: two
        image: exec
        timeout: 1
        command: [x]
`, `line 11: tasks[1].name: "a" is also the name of the task at line 5`},
		"duplicate action": {minimal + `      - name: one
        image: exec
        timeout: 1
        command: [x]
`, `line 11: tasks[0].actions[1].name: "one" is also the name of the action at line 7 in this task`},
		"no tasks":          {"version: \"0.1\"\nname: t\nglobal_timeout: 5\ntasks: []\n", "line 4: tasks: at least one task is required"},
		"image2disk no url": {strings.Replace(minimal, "image: exec", "image: image2disk\n        environment: {DEST_DISK: /dev/sda}", 1), "line 7: tasks[0].actions[0].environment.IMG_URL: is required by the image2disk action: http:// or https:// URL of the image"},
		"bad sha": {strings.Replace(minimal, "image: exec", "image: image2disk\n        environment: {DEST_DISK: /dev/sda, IMG_URL: 'http://x/y', SHA256: abc}", 1),
			`line 7: tasks[0].actions[0].environment.SHA256: "abc": want 64 hex digits`},
		"bad wipe mode": {strings.Replace(minimal, "image: exec", "image: wipe\n        environment: {DEST_DISK: /dev/sda, WIPE_MODE: shred}", 1),
			`line 7: tasks[0].actions[0].environment.WIPE_MODE: "shred": want quick, zero or discard`},
		"env not map":     {strings.Replace(minimal, "timeout: 10", "timeout: 10\n        environment: [A]", 1), "line 10: tasks[0].actions[0].environment: want a mapping of names to strings, got a list"},
		"bad env name":    {strings.Replace(minimal, "timeout: 10", "timeout: 10\n        environment: {1A: x}", 1), "line 10: tasks[0].actions[0].environment.1A: not a valid environment variable name"},
		"block scalar":    {strings.Replace(minimal, "command: [true]", "command: [true]\n        environment:\n          X: |{{ .UserData }}", 1), "line 12: yaml: did not find expected comment or line break (checked with every {{ ... }} replaced by a word: a value that renders to several lines needs a quoted form, like CONTENTS: {{ quote .UserData }})"},
		"too big":         {strings.Repeat("#", MaxTemplateSize+1), "template: is 262145 bytes, more than the limit of 262144"},
		"duplicate field": {strings.Replace(minimal, "name: t\n", "name: t\nname: u\n", 1), "line 3: name: given twice"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.content)
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q", tc.want)
			}
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *template.Error", err)
			}
			if diff := cmp.Diff(tc.want, te.Error()); diff != "" {
				t.Errorf("first error (-want +got):\n%s\nall: %v", diff, err)
			}
		})
	}
}

func TestParseRaw(t *testing.T) {
	content := `version: "0.1"
name: raw
global_timeout: {{ .Params.timeout }}
tasks:
  - name: a
    worker: {{.device_1}}
    actions:
      - name: img
        image: quay.io/tinkerbell/actions/image2disk:v1.0.0
        timeout: 60
        retries: 1
        environment:
          IMG_URL: {{ .Params.url }}
          DEST_DISK: {{ .Hardware.Disks 0 }}
      - name: run
        image: exec
        timeout: 5m
        command: {{ toJSON .SSHKeys }}
`
	tpl, err := Parse(content)
	if err != nil {
		t.Fatal(err)
	}
	want := []TaskSummary{{Name: "a", Actions: []string{"img", "run"}}}
	if diff := cmp.Diff(want, tpl.Summary()); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	if tpl.Tasks[0].Actions[0].Builtin != ImageImage2Disk || tpl.Tasks[0].Actions[1].Timeout != 5*time.Minute {
		t.Errorf("action 0 builtin %q, action 1 timeout %s", tpl.Tasks[0].Actions[0].Builtin, tpl.Tasks[0].Actions[1].Timeout)
	}

	// A template whose YAML is shaped by control actions is checked at render.
	dyn, err := Parse(strings.Replace(content, "tasks:\n", "tasks:\n{{ if .UserData }}\n{{ end }}\n", 1))
	if err != nil || !dyn.Dynamic {
		t.Fatalf("Parse(dynamic) = %+v, %v; want Dynamic", dyn, err)
	}
}

func TestRenderErrors(t *testing.T) {
	tests := map[string]struct {
		content string
		want    string
	}{
		"missing param":  {strings.Replace(minimal, "[true]", "[{{ .Params.nope }}]", 1), `line 10: template: executing "template" at <.Params.nope>: map has no entry for key "nope"`},
		"disk past end":  {strings.Replace(minimal, "[true]", "[{{ .Hardware.Disks 5 }}]", 1), `line 10: template: executing "template" at <.Hardware.Disks>: error calling Disks: disk 5 of hardware "hw-1" does not exist: it has 2 disk(s)`},
		"missing device": {strings.Replace(minimal, "[true]", "[{{ .device_9 }}]", 1), `line 10: template: executing "template" at <.device_9>: map has no entry for key "device_9"`},
		"renders invalid": {strings.Replace(minimal, "timeout: 10", "timeout: {{ .Params.image }}", 1),
			`line 9: tasks[0].actions[0].timeout: "jammy.raw.zst" is neither a number of seconds nor a duration like 30m`},
		"renders too big": {strings.Replace(minimal, "[true]", `[{{ range 1100 }}{{ printf "%1000s" "" }}{{ end }}]`, 1),
			"template: renders to more than the limit of 1048576 bytes"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Render(tc.content, sample())
			if err == nil {
				t.Fatalf("Render succeeded, want %q", tc.want)
			}
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *template.Error", err)
			}
			if diff := cmp.Diff(tc.want, te.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRenderGolden renders testdata/render/*.yaml for sample() and
// compares with the .golden files (go test -update rewrites them).
func TestRenderGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/render/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(string(in)); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			out, tpl, err := RenderText(string(in), sample())
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			got := out + "\n# steps:\n" + describe(tpl)
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("rendered %s (-want +got):\n%s", f, diff)
			}
		})
	}
}

// describe prints the flattened steps, one per line, sorted environment.
func describe(t *Template) string {
	var b strings.Builder
	for _, s := range t.Steps() {
		b.WriteString("# " + s.Task + "/" + s.Name + " builtin=" + s.Builtin + " timeout=" + s.Timeout.String())
		b.WriteString(" retries=" + string(rune('0'+s.Retries)) + " command=" + strings.Join(s.Command, "|") + " volumes=" + strings.Join(s.Volumes, ",") + "\n")
		keys := make([]string, 0, len(s.Environment))
		for k := range s.Environment {
			keys = append(keys, k)
		}
		sortStrings(keys)
		for _, k := range keys {
			b.WriteString("#   " + k + "=" + strings.ReplaceAll(s.Environment[k], "\n", `\n`) + "\n")
		}
	}
	return b.String()
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestExamples parses and renders every template in examples/templates.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/templates/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("want at least 3 example templates, found %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := Parse(string(in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if raw.Dynamic || len(raw.Tasks) == 0 {
				t.Fatalf("Parse checked nothing: %+v", raw)
			}
			out, tpl, err := RenderText(string(in), sample())
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if diff := cmp.Diff(raw.Summary(), tpl.Summary()); diff != "" {
				t.Errorf("raw and rendered tasks differ (-raw +rendered):\n%s", diff)
			}
			for _, s := range tpl.Steps() {
				for k, v := range s.Environment {
					if strings.Contains(v, "{{") || strings.Contains(v, placeholder) {
						t.Errorf("%s/%s %s=%q still holds a template action", s.Task, s.Name, k, v)
					}
				}
			}
			if testing.Verbose() {
				t.Logf("rendered:\n%s", out)
			}
		})
	}
}

func TestRenderUserDataRoundTrip(t *testing.T) {
	in, err := os.ReadFile("../../examples/templates/cloud-init.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := sample()
	d.UserData = "#cloud-config\nwrite_files:\n  - path: /x\n    content: \"a: b # {{ not a template }}\\n\\t<tab>&\"\n"
	tpl, err := Render(string(in), d)
	if err != nil {
		t.Fatal(err)
	}
	got := tpl.Steps()[1].Environment["CONTENTS"]
	if diff := cmp.Diff(d.UserData, got); diff != "" {
		t.Errorf("user data changed by rendering (-want +got):\n%s", diff)
	}
}

func TestBuiltin(t *testing.T) {
	tests := map[string]string{
		"image2disk": ImageImage2Disk,
		"quay.io/tinkerbell/actions/image2disk:v1.0.0":     ImageImage2Disk,
		"quay.io/tinkerbell-actions/writefile:v1.0.0":      ImageWriteFile,
		"ghcr.io/tinkerbell/actions/cexec@sha256:0123abcd": ImageCExec,
		"registry.local:5000/mirror/wipe:latest":           ImageWipe,
		"exec":                                             ImageExec,
		"quay.io/tinkerbell/actions/oci2disk:v1.0.0":       "",
		"kexec": ImageKexec,
		"quay.io/tinkerbell/actions/kexec:v1.0.0":  ImageKexec,
		"quay.io/tinkerbell/actions/reboot:latest": ImageReboot,
		"poweroff": ImagePoweroff,
		"quay.io/tinkerbell/actions/archive2disk:v1.0.0": "",
		"": "",
	}
	for in, want := range tests {
		got, err := Builtin(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("Builtin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
