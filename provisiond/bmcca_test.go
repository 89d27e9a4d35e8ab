package main

import (
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadBMCCAs: a Redfish BMC whose certificate a site CA signed
// verifies against the pool of --bmc-ca-file, not against the system
// roots alone; a file with no certificate is refused with its name.
func TestLoadBMCCAs(t *testing.T) {
	bmc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("redfish")) }))
	defer bmc.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "bmc-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bmc.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(file string) error {
		pool, err := loadBMCCAs(file)
		if err != nil {
			t.Fatalf("loadBMCCAs(%q): %v", file, err)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
		resp, err := c.Get(bmc.URL)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	if err := get(caFile); err != nil {
		t.Fatalf("with --bmc-ca-file: %v", err)
	}
	if err := get(""); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("system roots alone: %v, want a certificate error", err)
	}
	bad := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(bad, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBMCCAs(bad); err == nil || !strings.Contains(err.Error(), "empty.pem: no PEM certificate") {
		t.Fatalf("a file without a certificate: %v", err)
	}
	if _, err := loadBMCCAs(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "read --bmc-ca-file") {
		t.Fatalf("a missing file: %v", err)
	}
}
