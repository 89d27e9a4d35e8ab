package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestREADMEListsEveryFlag: the README's flag table is where operators
// look; a flag missing there is a flag nobody finds.
func TestREADMEListsEveryFlag(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	newFlags(&config{}).VisitAll(func(f *flag.Flag) {
		// --version is a command, not a setting: the table lists settings.
		if f.Name == "version" {
			return
		}
		if !strings.Contains(readme, "`--"+f.Name+"`") {
			t.Errorf("flag --%s is not in the README's provisiond table", f.Name)
		}
	})
}
