package template

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain shortens the fuzzer's minimization of new corpus entries from
// its default of 60s to fuzzMinimizeTime, unless -fuzzminimizetime is
// given. Minimizing an input grown from one of the kilobyte-long seed
// templates tries candidates quadratic in its length, so every new
// coverage found stopped fuzzing for the whole minute (57 execs/s over a
// 60s run). Minimization only makes the kept inputs shorter: what each
// input is checked for does not change.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.fuzzminimizetime" })
	if !given {
		if err := flag.Set("test.fuzzminimizetime", fuzzMinimizeTime); err != nil {
			fmt.Fprintln(os.Stderr, "set -fuzzminimizetime:", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

const fuzzMinimizeTime = "2s"

// fuzzLimits are the render limits of FuzzParseRender: the same checks as
// defaultLimits at a hundredth of the size. At full size an input that
// reaches a limit (which the fuzzer finds at once: {{ range 100000 }}x{{
// end }}) costs tens of milliseconds to render and a megabyte of YAML to
// parse, and the fuzzer spends its time on those.
var fuzzLimits = renderLimits{steps: MaxRenderSteps / 100, timeout: RenderTimeout, output: MaxRenderedSize / 100, value: MaxRenderedSize / 100}

// FuzzParseRender: Parse and Render never panic, never hang, and every
// error they return is a *Error; what Parse refuses, Render refuses; a
// rendered template stays within the limits and re-parses.
func FuzzParseRender(f *testing.F) {
	f.Add(minimal)
	for _, glob := range []string{"testdata/render/*.yaml", "../../examples/templates/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err == nil {
				f.Add(string(b))
			}
		}
	}
	data := sample()
	f.Fuzz(func(t *testing.T, content string) {
		_, perr := Parse(content)
		if perr != nil {
			var te *Error
			if !errors.As(perr, &te) {
				t.Fatalf("Parse error %T %v is not a *Error", perr, perr)
			}
		}
		out, tpl, err := renderText(context.Background(), content, data, fuzzLimits)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Render error %T %v is not a *Error", err, err)
			}
			return
		}
		if perr != nil && !strings.Contains(perr.Error(), "yaml") && !strings.Contains(perr.Error(), "tasks") {
			// Parse refused the template itself, not YAML it cannot see
			// through the template actions: so must the daemon.
			t.Fatalf("Parse refused it (%v), Render rendered it", perr)
		}
		if len(out) > fuzzLimits.output {
			t.Fatalf("rendered %d bytes, over the limit", len(out))
		}
		if len(tpl.Tasks) == 0 {
			t.Fatalf("rendered template without tasks passed validation")
		}
		_ = tpl.Steps()
	})
}
