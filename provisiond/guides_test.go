package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
	"github.com/rackform/terraform-provider-baremetal/internal/template"
	"github.com/rackform/terraform-provider-baremetal/provisiond/ctl"
)

// guides are the published guides (make docs copies templates/guides/
// there).
func guides(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("../docs/guides/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d guides in docs/guides, want at least 4: %v", len(files), files)
	}
	out := map[string]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = string(raw)
	}
	return out
}

// fenced returns the bodies of the guide's code blocks of a language.
func fenced(doc, lang string) []string {
	re := regexp.MustCompile("(?ms)^```" + regexp.QuoteMeta(lang) + "\n(.*?)^```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		out = append(out, m[1])
	}
	return out
}

// ctlHasFlag asks `provisiond ctl` itself whether it knows a flag: its
// flag set is its own, so it is asked the way a user would.
func ctlHasFlag(name string) bool {
	err := ctl.Run(context.Background(), []string{"--" + name, "help"}, func(string) string { return "" }, io.Discard, io.Discard)
	return err == nil || !strings.Contains(err.Error(), "flag provided but not defined")
}

var flagRE = regexp.MustCompile(`(^|[\s\x60(\[])--([a-z][a-z0-9-]*)`)

// otherTools are the flags of other commands that guides show, with the
// command they belong to.
var otherTools = map[string]string{
	"now":    "systemctl enable --now",
	"system": "adduser --system", "group": "adduser --system --group", "home": "adduser --system --group --home",
}

// TestGuidesFlagsExist: every --flag a guide names is one of provisiond's
// or of provisiond ctl's, and on a `provisiond ctl` line one of ctl's, on
// a `provisiond --...` command line one of provisiond's.
func TestGuidesFlagsExist(t *testing.T) {
	daemon := map[string]bool{}
	newFlags(&config{}).VisitAll(func(f *flag.Flag) { daemon[f.Name] = true })
	checked := 0
	for name, doc := range guides(t) {
		inDaemonCmd := false
		for i, line := range strings.Split(doc, "\n") {
			trimmed := strings.TrimSpace(line)
			// Flags after "provisiond ctl" on a line are ctl's.
			ctlAt := strings.Index(line, "provisiond ctl")
			if strings.HasPrefix(trimmed, "provisiond --") {
				inDaemonCmd = true
			}
			for _, loc := range flagRE.FindAllStringSubmatchIndex(line, -1) {
				f := line[loc[4]:loc[5]]
				isCtl := ctlAt >= 0 && loc[4] > ctlAt
				checked++
				switch {
				case otherTools[f] != "" && strings.Contains(line, otherTools[f]):
				case isCtl && !ctlHasFlag(f):
					t.Errorf("%s:%d: provisiond ctl has no flag --%s: %s", name, i+1, f, trimmed)
				case inDaemonCmd && !daemon[f]:
					t.Errorf("%s:%d: provisiond has no flag --%s: %s", name, i+1, f, trimmed)
				case !daemon[f] && !ctlHasFlag(f):
					t.Errorf("%s:%d: --%s is neither a provisiond nor a provisiond ctl flag: %s", name, i+1, f, trimmed)
				}
			}
			if inDaemonCmd && !strings.HasSuffix(trimmed, `\`) {
				inDaemonCmd = false
			}
		}
	}
	t.Logf("%d flags checked", checked)
	if checked < 20 {
		t.Errorf("checked only %d flags: is the pattern still right?", checked)
	}
}

// TestGuidesFlagCheckCatches: the check above refuses flags that do not
// exist.
func TestGuidesFlagCheckCatches(t *testing.T) {
	if ctlHasFlag("no-such-flag") {
		t.Error("ctlHasFlag accepts --no-such-flag")
	}
	for _, f := range []string{"endpoint", "follow", "token-file", "refresh"} {
		if !ctlHasFlag(f) {
			t.Errorf("ctlHasFlag refuses --%s", f)
		}
	}
}

var paramRE = regexp.MustCompile(`\.Params\.([A-Za-z0-9_]+)`)

// TestGuidesTemplatesParse: every workflow template a guide shows as YAML
// parses as provisiond parses it and renders against a hardware.
func TestGuidesTemplatesParse(t *testing.T) {
	n := 0
	for name, doc := range guides(t) {
		for i, block := range fenced(doc, "yaml") {
			if !regexp.MustCompile(`(?m)^tasks:`).MatchString(block) {
				continue // a config snippet or a Kubernetes manifest, not a template
			}
			n++
			if _, err := template.Parse(block); err != nil {
				t.Errorf("%s, YAML block %d: %v\n%s", name, i+1, err, block)
				continue
			}
			params := map[string]string{}
			for _, m := range paramRE.FindAllStringSubmatch(block, -1) {
				params[m[1]] = "x"
			}
			data := template.Data{
				Hardware: template.Hardware{ID: "server-1", Hostname: "server-1", Arch: "x86_64",
					Interfaces: []template.Interface{{MAC: "3c:ec:ef:10:20:31", IP: "10.0.0.31", Prefix: "10.0.0.31/24"}},
					DiskPaths:  []string{"/dev/nvme0n1"}},
				Params: params, PublicURL: "http://10.0.0.2:8080", ImagesURL: "http://10.0.0.2:8080/images", MetadataURL: "http://10.0.0.2:8080/metadata",
			}
			if _, err := template.Render(block, data); err != nil {
				t.Errorf("%s, YAML block %d: render: %v", name, i+1, err)
			}
		}
	}
	if n == 0 {
		t.Error("no guide shows a workflow template")
	}
}

// TestTemplatesGuideReference: the templates guide carries the table of
// every action and its environment as internal/actionspec defines them,
// names every template function that exists, and only those.
func TestTemplatesGuideReference(t *testing.T) {
	doc := guides(t)["templates.md"]
	if !strings.Contains(doc, actionspec.Markdown()) {
		t.Error("docs/guides/templates.md lacks internal/actionspec's table of actions as it is now: paste actionspec.Markdown() (internal/actionspec/testdata/actions.md) into templates/guides/templates.md and run make docs")
	}
	start, end := strings.Index(doc, "## Functions"), strings.Index(doc, "## Limits")
	if start < 0 || end < start {
		t.Fatal("templates.md has no Functions section before Limits")
	}
	section := doc[start:end]
	names := regexp.MustCompile("`([a-zA-Z]+)[ `]").FindAllStringSubmatch(section, -1)
	if len(names) < 15 {
		t.Fatalf("found %d function names in the Functions section", len(names))
	}
	for _, m := range names {
		_, err := template.Parse("{{ " + m[1] + " }}")
		if err != nil && strings.Contains(err.Error(), "not defined") {
			t.Errorf("templates.md names function %s, which templates do not have: %v", m[1], err)
		}
	}
	for _, want := range []string{"formatPartition", "join", "indent", "nindent", "quote", "b64enc", "toJSON", "default", "lower", "upper", "trim", "contains", "hasPrefix", "hasSuffix"} {
		if !strings.Contains(section, "`"+want) {
			t.Errorf("templates.md's Functions section does not name %s", want)
		}
	}
	for _, want := range []string{".Hardware.ID", ".Hardware.Disks", ".Hardware.MAC", ".Hardware.IP", ".Hardware.MACs", ".Hardware.Addresses", ".Hardware.Interfaces", ".Hardware.Metadata", ".Hardware.UEFI", ".Hardware.Arch", ".Hardware.Hostname", ".Params", ".UserData", ".SSHKeys", ".PublicURL", ".ImagesURL", ".MetadataURL", ".device_1"} {
		if !strings.Contains(doc, want) {
			t.Errorf("templates.md does not name %s", want)
		}
	}
}

var (
	guideLinkRE = regexp.MustCompile(`\]\(([a-z0-9-]+\.md)(#[a-z0-9-]+)?\)`)
	headingRE   = regexp.MustCompile(`(?m)^#+ (.+)$`)
)

// anchor is the id GitHub gives a heading: lower case, punctuation but
// dashes dropped, spaces as dashes.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestGuidesLinks: a link from one guide to another names a guide that
// exists and, with #, one of its headings.
func TestGuidesLinks(t *testing.T) {
	all := guides(t)
	n := 0
	for name, doc := range all {
		for _, m := range guideLinkRE.FindAllStringSubmatch(doc, -1) {
			n++
			target, ok := all[m[1]]
			if !ok {
				t.Errorf("%s links to %s, which is not a guide", name, m[1])
				continue
			}
			if m[2] == "" {
				continue
			}
			found := false
			for _, h := range headingRE.FindAllStringSubmatch(target, -1) {
				found = found || "#"+anchor(h[1]) == m[2]
			}
			if !found {
				t.Errorf("%s links to %s%s: no such heading there", name, m[1], m[2])
			}
		}
	}
	if n < 5 {
		t.Errorf("found only %d links between guides", n)
	}
}
