package actionspec

import (
	"fmt"
	"sort"
	"strings"
)

// Markdown renders the table of actions for the documentation: every
// built-in with the environment it reads, then the hub actions that are
// not supported.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| action | what it does here | environment |\n|---|---|---|\n")
	for _, a := range builtins {
		name := "`" + a.Name + "`"
		if !a.Hub {
			name += " (ours)"
		}
		what := a.Summary + "."
		if a.Final {
			what += " Must be the last action."
		}
		if a.Notes != "" {
			what += " " + a.Notes
		}
		var env []string
		for _, v := range a.Env {
			s := "`" + v.Name + "`"
			switch {
			case v.Required && v.Unless != "":
				s += " (required unless `" + v.Unless + "`)"
			case v.Required:
				s += " (required)"
			case v.Default != "":
				s += " (default `" + v.Default + "`)"
			}
			env = append(env, s+": "+v.Desc)
		}
		if a.NeedsCommand {
			env = append([]string{"the action's `command` (or `CMD_LINE`)"}, env...)
		}
		if len(env) == 0 {
			env = []string{"none"}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, cell(what), cell(strings.Join(env, "<br>")))
	}
	names := make([]string, 0, len(Unsupported))
	for n := range Unsupported {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "| `%s` | not supported: %s | |\n", n, cell(Unsupported[n]))
	}
	return b.String()
}

// cell keeps text inside one Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
