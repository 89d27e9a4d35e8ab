package template

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseRender: Parse and Render never panic, never hang, and every
// error they return is a *Error; a rendered template re-parses.
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
		if _, err := Parse(content); err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Parse error %T %v is not a *Error", err, err)
			}
		}
		out, tpl, err := RenderText(content, data)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Render error %T %v is not a *Error", err, err)
			}
			return
		}
		if len(out) > MaxRenderedSize {
			t.Fatalf("rendered %d bytes, over the limit", len(out))
		}
		if len(tpl.Tasks) == 0 {
			t.Fatalf("rendered template without tasks passed validation")
		}
		_ = tpl.Steps()
	})
}
