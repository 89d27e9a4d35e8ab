package main

import (
	"bytes"
	"context"
	"testing"
)

// TestVersionFlag: --version prints the version and succeeds without
// --grpc, --hw or a token.
func TestVersionFlag(t *testing.T) {
	for _, arg := range []string{"--version", "-version"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if got, want := out.String(), "agent "+version+"\n"; got != want {
			t.Errorf("%s printed %q, want %q", arg, got, want)
		}
	}
}
