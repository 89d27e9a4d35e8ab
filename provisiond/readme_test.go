package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

// TestREADMEListsEveryFlag: the README's flag table is where operators
// look; a flag missing there is a flag nobody finds. The table is
// generated (make docs); this fails when the committed one is stale, so a
// new flag or a changed default or help cannot go unlisted.
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
		if !strings.Contains(readme, "| `--"+f.Name+"` |") {
			t.Errorf("flag --%s is not in the README's provisiond table", f.Name)
		}
	})
	want, err := spliceFlags(raw, flagsMarkdown(newFlags(&config{})))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, raw) {
		t.Error("README's provisiond flag table is not what the flag set makes: run `make docs` and commit README.md")
	}
}

// TestFlagsMarkdown: the generated table escapes what would break a
// Markdown table and replaces only what lies between the markers.
func TestFlagsMarkdown(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("pipe-help", "a|b", "a | b, like --other-flag")
	fs.Bool("version", false, "not a setting")
	got := flagsMarkdown(fs)
	wantRow := "| `--pipe-help` | `PROVISIOND_PIPE_HELP` | `a\\|b` | a \\| b, like `--other-flag` |\n"
	if !strings.Contains(got, wantRow) || strings.Contains(got, "--version") {
		t.Errorf("table:\n%s\nwant the row\n%s", got, wantRow)
	}
	doc := []byte("before\n" + flagsBegin + "\nold table\n" + flagsEnd + "\nafter\n")
	out, err := spliceFlags(doc, "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "before\n" + flagsBegin + "\nnew\n" + flagsEnd + "\nafter\n"; string(out) != want {
		t.Errorf("spliced:\n%s\nwant\n%s", out, want)
	}
	if _, err := spliceFlags([]byte("no markers"), "x"); err == nil {
		t.Error("a document without markers was spliced")
	}
}
