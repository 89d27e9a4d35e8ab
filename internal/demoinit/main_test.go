package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	tests := map[string]struct {
		in   string
		want map[string]string
	}{
		"syslinux append": {
			in:   "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 loglevel=4 panic=10 bm.http=http://10.99.0.1:8080\n",
			want: map[string]string{"BOOT_IMAGE": "/vmlinuz", "console": "ttyS0,115200", "loglevel": "4", "panic": "10", "bm.http": "http://10.99.0.1:8080"},
		},
		"bare word and value with =": {in: "quiet bm.x=a=b", want: map[string]string{"quiet": "", "bm.x": "a=b"}},
		"empty":                      {in: "", want: map[string]string{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, parseCmdline(tc.in)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 bm.http=http://h:1 quiet")
	f.Fuzz(func(t *testing.T, s string) {
		for k := range parseCmdline(s) {
			if k == "" && !strings.Contains(s, "=") {
				t.Fatalf("empty key from %q", s)
			}
			if strings.ContainsAny(k, " \t\n") {
				t.Fatalf("key %q holds space", k)
			}
		}
	})
}
