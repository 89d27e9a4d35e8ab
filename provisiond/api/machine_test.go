package api

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMergeParameters(t *testing.T) {
	for name, tc := range map[string]struct {
		plain, sensitive, want map[string]string
		err                    string
	}{
		"none":           {},
		"plain only":     {plain: map[string]string{"a": "1"}, want: map[string]string{"a": "1"}},
		"sensitive only": {sensitive: map[string]string{"pw": "s3cret"}, want: map[string]string{"pw": "s3cret"}},
		"both":           {plain: map[string]string{"a": "1"}, sensitive: map[string]string{"pw": "s3cret"}, want: map[string]string{"a": "1", "pw": "s3cret"}},
		"name in both, value not in the error": {
			plain: map[string]string{"pw": "x"}, sensitive: map[string]string{"pw": "s3cret"},
			err: `parameter "pw" is both in parameters and in sensitive_parameters: give it once`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := mergeParameters(tc.plain, tc.sensitive)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if d := cmp.Diff(tc.err, gotErr); d != "" {
				t.Errorf("error (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("parameters (-want +got):\n%s", d)
			}
		})
	}
}
