package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionFlag: --version prints the version and succeeds without a
// token file or any other setting, and neither the environment nor the
// config file can turn it on.
func TestVersionFlag(t *testing.T) {
	for _, arg := range []string{"--version", "-version"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, func(string) string { return "" }, &out); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if got, want := out.String(), "provisiond "+version+"\n"; got != want {
			t.Errorf("%s printed %q, want %q", arg, got, want)
		}
	}
	env := func(k string) string {
		if k == "PROVISIOND_VERSION" {
			return "true"
		}
		return ""
	}
	c, err := parseConfig([]string{"--token-file", "/nonexistent"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.ShowVersion {
		t.Error("PROVISIOND_VERSION=true turned --version on")

	}
	file := filepath.Join(t.TempDir(), "provisiond.yaml")
	if err := os.WriteFile(file, []byte("version: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig([]string{"--token-file", "/nonexistent", "--config", file}, env); err == nil || !strings.Contains(err.Error(), `unknown setting "version"`) {
		t.Errorf("version: true in the config file: got %v, want an unknown setting error", err)
	}
}
