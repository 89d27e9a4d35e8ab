package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sampleConfig is the config file the .deb installs as
// /etc/provisiond/provisiond.yaml.
const sampleConfig = "../packaging/provisiond.yaml"

// settingLine is an active or commented-out setting of the sample config.
var settingLine = regexp.MustCompile(`^#?([a-z0-9-]+): `)

// TestSampleConfigListsEverySetting: the packaged config documents every
// setting, each commented example is a value its flag takes, and the file
// parses both as shipped and with every example switched on.
func TestSampleConfigListsEverySetting(t *testing.T) {
	raw, err := os.ReadFile(sampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var all []string // the file with every setting switched on
	for _, line := range strings.Split(string(raw), "\n") {
		m := settingLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if seen[m[1]] {
			t.Errorf("setting %s appears twice", m[1])
		}
		seen[m[1]] = true
		all = append(all, strings.TrimPrefix(line, "#"))
	}
	newFlags(&config{}).VisitAll(func(f *flag.Flag) {
		if f.Name == "version" || f.Name == "config" {
			return // commands, not settings of a file
		}
		if !seen[f.Name] {
			t.Errorf("setting %s is not in %s", f.Name, sampleConfig)
		}
	})
	none := func(string) string { return "" }
	if _, err := parseConfig([]string{"--config", sampleConfig}, none); err != nil {
		t.Errorf("the sample as shipped: %v", err)
	}
	everything := filepath.Join(t.TempDir(), "all.yaml")
	if err := os.WriteFile(everything, []byte(strings.Join(all, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig([]string{"--config", everything}, none); err != nil {
		t.Errorf("the sample with every setting on: %v", err)
	}
}
