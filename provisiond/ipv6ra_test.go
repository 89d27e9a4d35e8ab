package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIPv6RAFlag(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		file string
		want bool
	}{
		"default on": {want: true},
		"flag off":   {args: []string{"--ipv6-ra=false"}, want: false},
		"env off":    {env: map[string]string{"PROVISIOND_IPV6_RA": "false"}, want: false},
		"file off":   {file: "ipv6-ra: false\n", want: false},
		"flag wins":  {args: []string{"--ipv6-ra=true"}, file: "ipv6-ra: false\n", want: true},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"--token-file", "/t"}, tc.args...)
			if tc.file != "" {
				f := filepath.Join(t.TempDir(), "c.yaml")
				must(t, os.WriteFile(f, []byte(tc.file), 0o600))
				args = append(args, "--config", f)
			}
			c, err := parseConfig(args, func(k string) string { return tc.env[k] })
			must(t, err)
			if c.IPv6RA != tc.want {
				t.Errorf("IPv6RA = %v, want %v", c.IPv6RA, tc.want)
			}
		})
	}
}
