package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// The README's flag table is generated from the flag set: `make docs` runs
// `provisiond flags-markdown README.md`, which rewrites what lies between
// these markers, and `make check-docs` fails when the committed table is
// not what the flag set makes. The subcommand is for the build, not for
// operators, so the usage text does not mention it.
const (
	flagsBegin = "<!-- provisiond flags: generated from the flag set by `make docs`; edit the help in provisiond/config.go -->"
	flagsEnd   = "<!-- end of provisiond flags -->"
)

// flagsMarkdown is the table of every setting of fs: flag, environment
// variable, default and help. --version is a command, not a setting, and
// is left out.
func flagsMarkdown(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | what |\n|---|---|---|---|\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return
		}
		def := ""
		if f.DefValue != "" {
			def = "`" + strings.ReplaceAll(f.DefValue, "|", `\|`) + "`"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, envName(f.Name), def, mdCell(f.Usage))
	})
	return b.String()
}

// flagRef is a flag named in a help text.
var flagRef = regexp.MustCompile(`--[a-z][a-z0-9-]*`)

// mdCell makes a help text a table cell: pipes escaped, one line, the
// flags it names as code. (The help has no backquotes of its own: the
// flag package would take the first quoted word for the value's name.)
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = flagRef.ReplaceAllString(s, "`$0`")
	return strings.Join(strings.Fields(s), " ")
}

// spliceFlags returns doc with the text between the flag markers replaced
// by table.
func spliceFlags(doc []byte, table string) ([]byte, error) {
	begin := bytes.Index(doc, []byte(flagsBegin))
	end := bytes.Index(doc, []byte(flagsEnd))
	if begin < 0 || end < begin {
		return nil, fmt.Errorf("no %q ... %q markers in order", flagsBegin, flagsEnd)
	}
	var out bytes.Buffer
	out.Write(doc[:begin+len(flagsBegin)])
	out.WriteString("\n" + table)
	out.Write(doc[end:])
	return out.Bytes(), nil
}

// writeFlagsMarkdown rewrites the flag table in the Markdown file path,
// or prints the table when path is empty.
func writeFlagsMarkdown(path string) error {
	table := flagsMarkdown(newFlags(&config{}))
	if path == "" {
		_, err := os.Stdout.WriteString(table)
		return err
	}
	doc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	out, err := spliceFlags(doc, table)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if bytes.Equal(out, doc) {
		return nil
	}
	if err := os.WriteFile(path, out, 0o644); err != nil { //nolint:gosec // a documentation file, readable by all
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
