package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The documents whose real-rack commands TestE2EGuide runs: the guide as
// published (make docs copies templates/guides/ there) and the README.
const (
	guideFile  = "docs/guides/first-rack.md"
	readmeFile = "README.md"
)

// mdBlock is a fenced code block of a Markdown document.
type mdBlock struct {
	Section string // the heading it is under, without its #s
	Lang    string // the fence's info string: sh, yaml, terraform
	Body    string
	Line    int // the opening fence's line, from 1
}

func (b mdBlock) String() string {
	return b.Lang + " block at line " + strconv.Itoa(b.Line) + " (" + b.Section + ")"
}

// fencedBlocks returns the fenced code blocks of doc, each with the
// heading it is under.
func fencedBlocks(doc string) []mdBlock {
	var out []mdBlock
	var section string
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "#") {
			section = strings.TrimSpace(strings.TrimLeft(l, "#"))
			continue
		}
		lang, ok := strings.CutPrefix(l, "```")
		if !ok {
			continue
		}
		b := mdBlock{Section: section, Lang: lang, Line: i + 1}
		var body []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			body = append(body, lines[i])
		}
		b.Body = strings.Join(body, "\n") + "\n"
		out = append(out, b)
	}
	return out
}

// indentedBlocks returns the code blocks indented by indent spaces (code
// under a list item) in the part of doc under the "## "+section heading.
func indentedBlocks(doc, section string, indent int) []string {
	_, rest, ok := strings.Cut(doc, "\n## "+section+"\n")
	if !ok {
		return nil
	}
	rest, _, _ = strings.Cut(rest, "\n## ")
	pre := strings.Repeat(" ", indent)
	var out []string
	var cur []string
	flush := func() {
		for len(cur) > 0 && cur[len(cur)-1] == "" {
			cur = cur[:len(cur)-1]
		}
		if len(cur) > 0 {
			out = append(out, strings.Join(cur, "\n")+"\n")
		}
		cur = nil
	}
	for _, l := range strings.Split(rest, "\n") {
		switch {
		case strings.HasPrefix(l, pre):
			cur = append(cur, strings.TrimPrefix(l, pre))
		case strings.TrimSpace(l) == "" && len(cur) > 0:
			cur = append(cur, "")
		default:
			flush()
		}
	}
	flush()
	return out
}

// A guideStep says what TestE2EGuide does with one block of the guide.
// Every block of the guide has one: a block the test does not know fails
// it, so a new command cannot go untested.
type guideStep struct {
	Section string
	Lang    string
	N       int    // the Nth block of Lang in Section, from 0
	Role    string // what the test does with it (the names below)
}

// The roles of the guide's blocks.
const (
	roleNotRun  = "not run"     // another path than the one run (the package's)
	roleRun     = "run"         // run as written, less guideEdits
	roleConfig  = "config"      // the package's settings file: checked against the flags command
	roleDaemon  = "daemon"      // provisiond's command line: started, runs until the test stops it
	roleHealth  = "health"      // run once the daemon is up (systemctl's lines dropped: guideEdits)
	roleSetup   = "shell setup" // run, and run first in every later shell ("a shell set up as in step 4")
	roleHCL     = "main.tf"     // the Terraform configuration
	roleApply   = "apply"       // run in main.tf's directory, answering Terraform's prompts
	roleWatch   = "watch"       // run beside the apply once the workflow exists
	roleDestroy = "destroy"     // run in main.tf's directory, answering Terraform's prompts
)

var guideSteps = []guideStep{
	{"From the Debian package", "sh", 0, roleNotRun}, // TestE2EPackage installs the .deb with apt in a booted Debian and runs it under systemd; this test runs the binary's path
	{"From the binary", "sh", 0, roleRun},
	{"The agent OS", "sh", 0, roleRun},
	{"2. Token and TLS", "sh", 0, roleRun},
	{"3. Configure and start", "yaml", 0, roleConfig},
	{"3. Configure and start", "sh", 0, roleHealth},
	{"3. Configure and start", "sh", 1, roleDaemon},
	{"3. Configure and start", "sh", 2, roleRun},
	{"4. Point Terraform and provisiond ctl at it", "sh", 0, roleSetup},
	{"5. Hardware, template and machine", "terraform", 0, roleHCL},
	{"6. Apply and watch", "sh", 0, roleApply},
	{"6. Apply and watch", "sh", 1, roleWatch},
	{"7. Destroy", "sh", 0, roleDestroy},
}

// guideEdit replaces or drops one command line of a block: what the lab
// cannot or must not do as written. Each must match exactly one line
// (the line up to its comment), so the list cannot go stale.
type guideEdit struct {
	Section, Line, With, Why string
}

var guideEdits = []guideEdit{
	{"From the binary", "make build", "",
		"the test built bin/provisiond (and the provider) with go build into the checkout it runs in"},
	{"From the binary", "apt-get install adduser ipmitool ipxe", "dpkg-query -W adduser ipmitool ipxe",
		"a test installs no packages: make deps did (DEB_PACKAGES); the line checks they are there"},
	{"The agent OS", "make agent-os", "",
		"make e2e built build/agent-os, which the checkout links"},
	{"3. Configure and start", "systemctl enable --now provisiond", "",
		"a hand install has no unit: the flags command of the same step starts provisiond"},
	{"3. Configure and start", "journalctl -u provisiond -f", "",
		"no unit, no journal: provisiond's output goes to the test's log"},
}

// command is a shell line without its comment.
func command(line string) string {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	return strings.TrimSpace(line)
}

// guidePlan is the guide and README read and checked: every block has a
// step, every edit matches, the README's commands are the guide's.
type guidePlan struct {
	steps  []planned
	readme []string // the README's real-rack blocks: the shell commands, the provider block
	// Taken from the documents, for the lab to build their world.
	PublicIP, Interface, Endpoint string
	HardwareID, Hostname          string
	MAC, Address, BMCAddress      string
	BMCUser, Disk                 string
	UEFI                          bool
}

// planned is a block with its role, after guideEdits.
type planned struct {
	mdBlock
	Role   string
	Script string
}

func (p *guidePlan) role(t testing.TB, role string) []planned {
	t.Helper()
	var out []planned
	for _, s := range p.steps {
		if s.Role == role {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Fatalf("the guide has no block with role %q", role)
	}
	return out
}

// readGuidePlan reads the documents under root and checks what can be
// checked without a lab.
func readGuidePlan(t testing.TB, root string) *guidePlan {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	guide, readme := read(guideFile), read(readmeFile)
	p := &guidePlan{}

	// Every block has a step, every step a block.
	seen := map[string]int{}
	used := map[guideStep]bool{}
	for _, b := range fencedBlocks(guide) {
		k := b.Section + "\x00" + b.Lang
		n := seen[k]
		seen[k]++
		var step *guideStep
		for i := range guideSteps {
			if s := guideSteps[i]; s.Section == b.Section && s.Lang == b.Lang && s.N == n {
				step = &guideSteps[i]
			}
		}
		if step == nil {
			t.Errorf("%s: %s is not known to TestE2EGuide: give it a step in guideSteps (e2e/guide_docs_test.go)", guideFile, b)
			continue
		}
		used[*step] = true
		p.steps = append(p.steps, planned{mdBlock: b, Role: step.Role, Script: b.Body})
	}
	for _, s := range guideSteps {
		if !used[s] {
			t.Errorf("%s: no %s block number %d under %q, which guideSteps names", guideFile, s.Lang, s.N, s.Section)
		}
	}

	// The edits, each on exactly one line of a run block.
	for _, e := range guideEdits {
		hits := 0
		for i, s := range p.steps {
			if s.Section != e.Section || s.Role == roleNotRun {
				continue
			}
			lines := strings.Split(s.Script, "\n")
			for j, l := range lines {
				if command(l) == e.Line {
					hits++
					lines[j] = e.With
					if e.With == "" {
						lines[j] = "# (dropped by TestE2EGuide: " + e.Why + ")"
					}
				}
			}
			p.steps[i].Script = strings.Join(lines, "\n")
		}
		if hits != 1 {
			t.Errorf("%s: the edit of %q under %q matches %d lines, want 1: the guide changed, update guideEdits", guideFile, e.Line, e.Section, hits)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The world, as the documents write it.
	daemon := joinLines(p.role(t, roleDaemon)[0].Body)
	p.PublicIP = flagValue(t, daemon, "public-ip")
	p.Interface = flagValue(t, daemon, "dhcp-interface")
	p.Endpoint = match(t, `(?m)^export BAREMETAL_ENDPOINT=(\S+)$`, p.role(t, roleSetup)[0].Body, "BAREMETAL_ENDPOINT in step 4")
	hcl := p.role(t, roleHCL)[0].Body
	p.HardwareID = match(t, `(?m)^\s*id\s*=\s*"([^"]+)"`, hcl, "the hardware's id")
	p.Hostname = match(t, `(?m)^\s*hostname\s*=\s*"([^"]+)"`, hcl, "the hardware's hostname")
	p.MAC = match(t, `(?m)^\s*mac\s*=\s*"([^"]+)"`, hcl, "the hardware's mac")
	p.Address = match(t, `(?m)^\s*ip\s*=\s*"([^"]+)"`, hcl, "the hardware's ip")
	p.BMCAddress = match(t, `(?m)^\s*address\s*=\s*"([^"]+)"`, hcl, "the BMC's address")
	p.BMCUser = match(t, `(?m)^\s*username\s*=\s*"([^"]+)"`, hcl, "the BMC's username")
	p.Disk = match(t, `(?m)^\s*disks\s*=\s*\["([^"]+)"\]`, hcl, "the hardware's disk")
	p.UEFI = match(t, `(?m)^\s*uefi\s*=\s*(true|false)`, hcl, "the hardware's uefi") == "true"

	// The settings file says what the flags say.
	for _, line := range strings.Split(p.role(t, roleConfig)[0].Body, "\n") {
		key, value, ok := strings.Cut(command(line), ":")
		if !ok {
			continue
		}
		if got := flagValue(t, daemon, strings.TrimSpace(key)); got != strings.TrimSpace(value) {
			t.Errorf("%s: provisiond.yaml sets %s: %s, the flags command --%s %s", guideFile, key, strings.TrimSpace(value), key, got)
		}
	}

	// The README's real-rack commands are the guide's: the token line is
	// the binary install's, the provisiond command the daemon's.
	p.readme = indentedBlocks(readme, "Running it on a real rack", 8)
	if len(p.readme) != 2 {
		t.Fatalf("%s: %d code blocks under \"Running it on a real rack\", want 2 (the commands, the provider block)", readmeFile, len(p.readme))
	}
	var install string
	for _, s := range p.steps {
		if s.Section == "From the binary" {
			install = s.Body
		}
	}
	cmds := strings.SplitN(joinLines(p.readme[0]), "\n", 2)
	if len(cmds) != 2 {
		t.Fatalf("%s: the real-rack commands are not a token line and a provisiond command:\n%s", readmeFile, p.readme[0])
	}
	if !strings.Contains("\n"+install, "\n"+cmds[0]+"\n") {
		t.Errorf("%s: %q is not a line of the guide's binary install:\n%s", readmeFile, cmds[0], install)
	}
	if strings.TrimSpace(cmds[1]) != strings.TrimSpace(daemon) {
		t.Errorf("%s: the provisiond command\n  %s\nis not the guide's, which TestE2EGuide runs:\n  %s", readmeFile, cmds[1], daemon)
	}
	if got := match(t, `endpoint\s*=\s*"([^"]+)"`, p.readme[1], "the README provider's endpoint"); got != p.Endpoint {
		t.Errorf("%s: the provider's endpoint %s, the guide's BAREMETAL_ENDPOINT %s", readmeFile, got, p.Endpoint)
	}
	return p
}

// joinLines joins backslash-continued lines and squeezes blanks: one
// command a line.
func joinLines(s string) string {
	s = strings.ReplaceAll(s, "\\\n", " ")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, strings.Join(f, " "))
		}
	}
	return strings.Join(out, "\n")
}

// flagValue returns the value of --name in a command line.
func flagValue(t testing.TB, cmdline, name string) string {
	t.Helper()
	return match(t, `(?:^|\s)--`+regexp.QuoteMeta(name)+`[ =](\S+)`, cmdline, "--"+name+" in provisiond's command")
}

// match returns the first group of the only match of re in s.
func match(t testing.TB, re, s, what string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindAllStringSubmatch(s, -1)
	if len(m) != 1 {
		t.Fatalf("%s: found %d times, want once (%s)", what, len(m), re)
	}
	return m[0][1]
}

// TestGuideCommands: the part of TestE2EGuide that needs no lab, run by
// every `go test`: the guide's blocks are all known, its edits match, the
// README's commands are the guide's and the settings file the flags.
func TestGuideCommands(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	p := readGuidePlan(t, root)
	t.Logf("%d blocks; world: %s on %s, endpoint %s, server %s %s, BMC %s@%s, disk %s, uefi %v",
		len(p.steps), p.PublicIP, p.Interface, p.Endpoint, p.MAC, p.Address, p.BMCUser, p.BMCAddress, p.Disk, p.UEFI)
}
