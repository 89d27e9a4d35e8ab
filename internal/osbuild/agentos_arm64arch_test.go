package osbuild

import (
	"bytes"
	"context"
	"debug/elf"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBusyboxAppletTable(t *testing.T) {
	bin := append([]byte("\x7fELF junk\x00"), []byte("[\x00[[\x00ash\x00ls\x00sh\x00\x00more")...)
	got, err := busyboxAppletTable(bin)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"[", "[[", "ash", "ls", "sh"}; !slices.Equal(got, want) {
		t.Fatalf("applets %q, want %q", got, want)
	}
	for name, b := range map[string]string{
		"no table":   "\x00nothing here\x00\x00",
		"unsorted":   "\x00[\x00[[\x00sh\x00ls\x00\x00",
		"not a name": "\x00[\x00[[\x00a b\x00\x00",
	} {
		if _, err := busyboxAppletTable([]byte(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDefaultModulesFor(t *testing.T) {
	amd, err := DefaultModulesFor("amd64")
	if err != nil || !slices.Equal(amd, DefaultModules) {
		t.Fatalf("amd64: %v, %v", amd, err)
	}
	arm, err := DefaultModulesFor("arm64")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range amd64OnlyModules {
		if slices.Contains(arm, m) {
			t.Errorf("arm64 list has amd64-only %s", m)
		}
	}
	if len(arm) != len(DefaultModules)-len(amd64OnlyModules) || !slices.Contains(DefaultModules, "vmd") {
		t.Errorf("arm64 list %d entries, DefaultModules %d (and must be left alone)", len(arm), len(DefaultModules))
	}
	if _, err := DefaultModulesFor("mips"); err == nil {
		t.Error("mips: no error")
	}
}

// cacheFile finds the newest build/cache file matching glob, or skips.
func cacheFile(t *testing.T, env, glob string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	m, _ := filepath.Glob(filepath.Join("../../build/cache", glob))
	if len(m) == 0 {
		t.Skipf("no %s in build/cache: run `make agent-os` or set %s", glob, env)
	}
	slices.Sort(m)
	return m[len(m)-1]
}

// TestArm64AgentOS builds the arm64 agent OS from Debian's arm64 kernel and
// busybox-static on this (amd64) machine: busybox's applets come from its
// own table, the kernel is the EFI-stub Image GRUB and iPXE load, and an
// amd64 init is refused.
func TestArm64AgentOS(t *testing.T) {
	deb := cacheFile(t, "KERNEL_DEB_ARM64", "linux-image-*_arm64.deb")
	bb := cacheFile(t, "BUSYBOX_ARM64", "busybox-static_*_arm64.busybox")
	ctx := context.Background()
	_, applets, err := ReadBusybox(ctx, bb)
	if err != nil {
		t.Fatal(err)
	}
	if len(applets) < 200 || !slices.Contains(applets, "sh") || !slices.Contains(applets, "dd") {
		t.Fatalf("arm64 busybox applets: %d (%q...)", len(applets), applets[:min(5, len(applets))])
	}
	dir := t.TempDir()
	initPath := filepath.Join(dir, "init")
	// An arm64 ELF header is enough for the check; the real agent is
	// cross-built by `make agent-os-arm64`.
	hdr := elfHeader(elf.EM_AARCH64)
	if err := os.WriteFile(initPath, hdr, 0o755); err != nil {
		t.Fatal(err)
	}
	mods, err := DefaultModulesFor("arm64")
	if err != nil {
		t.Fatal(err)
	}
	cfg := AgentOSConfig{KernelDeb: deb, InitPath: initPath, OutDir: filepath.Join(dir, "out"), Modules: mods,
		Compression: "zstd", BusyboxPath: bb, Arch: "arm64"}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := BuildAgentOS(ctx, log, cfg); err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(filepath.Join(cfg.OutDir, "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	// arm64 Image header: "MZ" (EFI stub PE), magic "ARM\x64" at 56.
	if len(k) < 64 || !bytes.HasPrefix(k, []byte("MZ")) || string(k[56:60]) != "ARM\x64" {
		t.Fatalf("vmlinuz is not an arm64 EFI-stub Image (first bytes %q)", k[:min(64, len(k))])
	}
	cfg.Arch = "amd64"
	if err := os.WriteFile(initPath, elfHeader(elf.EM_X86_64), 0o755); err != nil {
		t.Fatal(err)
	}
	err = BuildAgentOS(ctx, log, cfg)
	if err == nil || !strings.Contains(err.Error(), "not amd64") {
		t.Fatalf("arm64 kernel modules with -arch amd64: %v, want a refusal", err)
	}
}

// elfHeader is a minimal 64-bit little-endian ELF header for machine m.
func elfHeader(m elf.Machine) []byte {
	h := make([]byte, 64)
	copy(h, "\x7fELF\x02\x01\x01")
	h[16] = byte(elf.ET_EXEC)
	h[18], h[19] = byte(m), byte(m>>8)
	h[20] = 1
	h[52] = 64 // e_ehsize
	return h
}
