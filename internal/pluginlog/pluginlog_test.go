package pluginlog

import (
	"os"
	"testing"
)

func TestQuiet(t *testing.T) {
	for name, tc := range map[string]struct {
		env        map[string]string
		sdk, owned string // "" : unset
	}{
		"nothing shown: off":         {env: map[string]string{}, sdk: "off", owned: "off"},
		"TF_LOG shows them":          {env: map[string]string{"TF_LOG": "debug"}},
		"TF_LOG_PROVIDER shows them": {env: map[string]string{"TF_LOG_PROVIDER": "trace"}},
		"an explicit level is kept":  {env: map[string]string{"TF_LOG_SDK": "debug"}, sdk: "debug", owned: "off"},
		"the provider's own is kept": {env: map[string]string{"TF_LOG_PROVIDER_BAREMETAL": "info"}, sdk: "off", owned: "info"},
		"an empty level is none":     {env: map[string]string{"TF_LOG_SDK": "", "TF_LOG": ""}, sdk: "off", owned: "off"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, k := range []string{"TF_LOG", "TF_LOG_PROVIDER", "TF_LOG_SDK", "TF_LOG_PROVIDER_BAREMETAL"} {
				t.Setenv(k, "") // restored after the test
				if v, ok := tc.env[k]; ok {
					t.Setenv(k, v)
				} else if err := os.Unsetenv(k); err != nil {
					t.Fatal(err)
				}
			}
			Quiet("baremetal")
			if got := os.Getenv("TF_LOG_SDK"); got != tc.sdk {
				t.Errorf("TF_LOG_SDK = %q, want %q", got, tc.sdk)
			}
			if got := os.Getenv("TF_LOG_PROVIDER_BAREMETAL"); got != tc.owned {
				t.Errorf("TF_LOG_PROVIDER_BAREMETAL = %q, want %q", got, tc.owned)
			}
		})
	}
}
