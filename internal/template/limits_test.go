package template

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// inMinimal puts a template fragment into a valid template's command.
func inMinimal(fragment string) string {
	return strings.Replace(minimal, "[true]", `[true, "`+fragment+`"]`, 1)
}

// TestParseRefusesUnboundedRender: what is sure to pass the render limits
// fails Parse, which the provider runs at plan time and CreateTemplate in
// the daemon, before any data is seen. The first case is issue 13's attack.
func TestParseRefusesUnboundedRender(t *testing.T) {
	tests := map[string]struct {
		fragment string
		want     string
	}{
		"range over a variable": {`{{ $n := 200000000 }}{{ range $n }}{{ end }}`,
			"line 10: template: range over $n: more than the limit of 100000 iterations"},
		"range over a literal": {`{{ range 200000000 }}{{ end }}`,
			"line 10: template: range over 200000000: more than the limit of 100000 iterations"},
		"range declaring a variable": {`{{ range $i := 200000000 }}{{ $i }}{{ end }}`,
			"line 10: template: range over 200000000: more than the limit of 100000 iterations"},
		"range over parentheses": {`{{ range (200000000) }}{{ end }}`,
			"line 10: template: range over (200000000): more than the limit of 100000 iterations"},
		"variable reassigned": {`{{ $n := 10 }}{{ $n = 200000000 }}{{ range $n }}{{ end }}`,
			"line 10: template: range over $n: more than the limit of 100000 iterations"},
		"nested ranges": {`{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}`,
			"line 10: template: range over 1000 inside ranges that run 1000 times: more than the limit of 100000 iterations in all"},
		"nested over one variable": {`{{ $n := 400 }}{{ range $n }}{{ range $n }}{{ end }}{{ end }}`,
			"line 10: template: range over $n inside ranges that run 400 times: more than the limit of 100000 iterations in all"},
		"three deep": {`{{ range 50 }}{{ range 50 }}{{ if true }}{{ range 50 }}{{ end }}{{ end }}{{ end }}{{ end }}`,
			"line 10: template: range over 50 inside ranges that run 2500 times: more than the limit of 100000 iterations in all"},
		"inside a define": {`{{ define "x" }}{{ range 200000000 }}{{ end }}{{ end }}`,
			"line 10: template: range over 200000000: more than the limit of 100000 iterations"},
		"recursion": {`{{ define "r" }}{{ template "r" }}{{ end }}{{ template "r" }}`,
			`line 10: template: template "r" calls itself ("r" → "r"): recursion is not supported`},
		"mutual recursion": {`{{ define "a" }}{{ if true }}{{ template "b" }}{{ end }}{{ end }}{{ define "b" }}{{ template "a" }}{{ end }}{{ template "a" }}`,
			`line 10: template: template "a" calls itself ("a" → "b" → "a"): recursion is not supported`},
		"range over a float": {`{{ range 1.5 }}{{ end }}`,
			"line 10: template: range over 1.5: want a whole number"},
		"printf huge width": {`{{ printf "%0999999999d" 1 }}`,
			`line 10: template: printf format "%0999999999d": width or precision 0999999999 is more than the limit of 4096`},
		"printf huge precision": {`{{ printf "%.50000f" 1.0 }}`,
			`line 10: template: printf format "%.50000f": width or precision 50000 is more than the limit of 4096`},
		"printf star": {`{{ printf "%*d" 100000 1 }}`,
			`line 10: template: printf format "%*d": a width or precision from an argument ('*') is not allowed`},
		"printf nested": {`{{ len (printf "%0100000d" 1) }}`,
			`line 10: template: printf format "%0100000d": width or precision 0100000 is more than the limit of 4096`},
		"printf in a pipeline": {`{{ 1 | printf "%0100000d" }}`,
			`line 10: template: printf format "%0100000d": width or precision 0100000 is more than the limit of 4096`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			content := inMinimal(tc.fragment)
			start := time.Now()
			_, perr := Parse(content)
			_, rerr := Render(content, sample())
			t.Logf("Parse and Render refused it in %s", time.Since(start))
			for what, err := range map[string]error{"Parse": perr, "Render": rerr} {
				var te *Error
				if !errors.As(err, &te) {
					t.Fatalf("%s error = %v, want a *template.Error", what, err)
				}
				if diff := cmp.Diff(tc.want, te.Error()); diff != "" {
					t.Errorf("%s error (-want +got):\n%s", what, diff)
				}
			}
		})
	}
}

// TestParseAllowsBoundedRanges: the static check leaves ordinary
// templates alone.
func TestParseAllowsBoundedRanges(t *testing.T) {
	for _, fragment := range []string{
		`{{ range 100000 }}{{ end }}`,
		`{{ range 300 }}{{ range 300 }}{{ end }}{{ end }}`,
		`{{ range 10 }}{{ end }}{{ range 10000 }}{{ end }}`,
		`{{ range $i, $d := .Hardware.Disks }}{{ range $i }}{{ end }}{{ end }}`,
		`{{ printf "%05d %-10s %[1]d %%" 1 "x" }}`,
		`{{ printf "%4096s" "" | len }}`,
	} {
		if _, err := Parse(inMinimal(fragment)); err != nil {
			t.Errorf("Parse(%s) = %v, want nil", fragment, err)
		}
	}
}

// TestRenderLimits: what only the data shows is stopped while rendering,
// with an error that names the limit, and promptly.
func TestRenderLimits(t *testing.T) {
	steps := "line 10: template: rendering takes more than the limit of 100000 steps (range iterations, template calls and function calls)"
	tests := map[string]struct {
		fragment string
		want     string
	}{
		"range over a computed length":           {`{{ $s := printf "%04096d" 0 }}{{ range len $s }}{{ range len $s }}{{ end }}{{ end }}`, steps},
		"range over a variable of unknown value": {`{{ $n := len (printf "%04096d" 0) }}{{ range $n }}{{ range $n }}{{ end }}{{ end }}`, steps},
		"template calls, exponential": {`{{ define "a" }}{{ template "b" }}{{ template "b" }}{{ end }}` +
			`{{ define "b" }}{{ template "c" }}{{ template "c" }}{{ end }}{{ define "c" }}{{ template "d" }}{{ template "d" }}{{ end }}` +
			`{{ define "d" }}{{ range 1000 }}{{ end }}{{ end }}{{ template "a" }}{{ template "a" }}{{ template "a" }}{{ template "a" }}` +
			`{{ template "a" }}{{ template "a" }}{{ template "a" }}{{ template "a" }}{{ template "a" }}{{ template "a" }}` +
			`{{ template "a" }}{{ template "a" }}{{ template "a" }}{{ template "a" }}`, steps},
		"print doubling": {`{{ $s := "xxxxxxxxxxxxxxxx" }}{{ range 20 }}{{ $s = print $s $s }}{{ end }}`,
			`line 10: template: executing "template" at <print $s $s>: error calling print: the value would be 1048578 bytes, more than the limit of 1048576`},
		"printf doubling": {`{{ $s := "xxxxxxxxxxxxxxxx" }}{{ range 20 }}{{ $s = printf "%s%s" $s $s }}{{ end }}`,
			`line 10: template: executing "template" at <printf "%s%s" $s $s>: error calling printf: the value would be 1048582 bytes, more than the limit of 1048576`},
		"js growth": {`{{ $s := "\\\\\\\\\\\\\\\\" }}{{ range 20 }}{{ $s = js $s }}{{ end }}`,
			`line 10: template: executing "template" at <js $s>: error calling js: the value would be 1048577 bytes, more than the limit of 1048576`},
		"indent growth": {`{{ $s := "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n" }}{{ range 20 }}{{ $s = print $s $s }}{{ end }}`,
			`line 10: template: executing "template" at <print $s $s>: error calling print: the value would be 1048578 bytes, more than the limit of 1048576`},
		"indent of many lines": {`{{ $s := printf "%s%s%s%s" .UserData .UserData .UserData .UserData }}{{ range 9 }}{{ $s = print $s $s }}{{ end }}{{ indent 256 $s | len }}`,
			`line 10: template: executing "template" at <indent 256 $s>: error calling indent: the value would be 2240768 bytes, more than the limit of 1048576`},
		"output": {`{{ range 300 }}{{ printf "%04096d" 0 }}{{ end }}`,
			"template: renders to more than the limit of 1048576 bytes"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			content := inMinimal(tc.fragment)
			if _, err := Parse(content); err != nil {
				t.Fatalf("Parse = %v; this case is for what only rendering can see", err)
			}
			start := time.Now()
			_, err := Render(content, sample())
			took := time.Since(start)
			t.Logf("Render refused it in %s", took)
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Render error = %v, want a *template.Error", err)
			}
			if diff := cmp.Diff(tc.want, te.Error()); diff != "" {
				t.Errorf("Render error (-want +got):\n%s", diff)
			}
			if took > RenderTimeout {
				t.Errorf("Render took %s, more than RenderTimeout: the budget did not stop it", took)
			}
		})
	}
}

// TestRenderDeadline: a render that is still within its steps when its
// time is up stops, with an error naming the limit; so does one whose
// caller gives up.
func TestRenderDeadline(t *testing.T) {
	slow := inMinimal(`{{ range 10000 }}{{ $x := printf "%04096d" 0 }}{{ end }}`)

	start := time.Now()
	_, _, err := renderText(context.Background(), slow, sample(), renderLimits{steps: MaxRenderSteps, timeout: time.Millisecond, output: MaxRenderedSize, value: MaxRenderedSize})
	t.Logf("stopped %s after the start", time.Since(start))
	if diff := cmp.Diff("line 10: template: rendering takes longer than the limit of 1ms", errString(err)); diff != "" {
		t.Errorf("deadline error (-want +got):\n%s", diff)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = RenderContext(ctx, slow, sample())
	if diff := cmp.Diff(`line 1: template: executing "template" at <_step>: error calling _step: render stopped: context canceled`, errString(err)); diff != "" {
		t.Errorf("cancelled error (-want +got):\n%s", diff)
	}

	// Within both limits it renders.
	if _, err := Render(slow, sample()); err != nil {
		t.Errorf("Render(within limits) = %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestCheckFormat(t *testing.T) {
	tests := map[string]struct {
		extra int
		err   bool
	}{
		"plain":                        {0, false},
		"%d %s %v":                     {0, false},
		"%05d":                         {5, false},
		"%-10s|%.3f":                   {13, false},
		"%[2]d %[1]s":                  {0, false},
		"%%%4096d":                     {4096, false},
		"%4097d":                       {0, true},
		"%.4097f":                      {0, true},
		"%*d":                          {0, true},
		"%.*f":                         {0, true},
		"%99999999999999999999999999d": {0, true},
		"%":                            {0, false},
	}
	for format, tc := range tests {
		extra, err := checkFormat(format)
		if (err != nil) != tc.err || extra != tc.extra {
			t.Errorf("checkFormat(%q) = %d, %v; want %d, error %t", format, extra, err, tc.extra, tc.err)
		}
	}
}
