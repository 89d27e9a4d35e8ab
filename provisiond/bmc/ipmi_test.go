package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc/bmctest"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// startSim starts ipmi_sim for one test or skips with the reason.
func startSim(t *testing.T) *bmctest.IPMISim {
	t.Helper()
	if why := bmctest.IPMIToolsMissing(); why != "" {
		fmt.Printf("SKIP %s: %s\n", t.Name(), why)
		t.Skip(why)
	}
	s, err := bmctest.StartIPMISim(ctxT(t, 30*time.Second), t.TempDir(), "admin", "ipmi-pass")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// countingIpmitool is an ipmitool wrapper that appends a line to a file
// per run, so tests can count how often the BMC was asked.
func countingIpmitool(t *testing.T) (path, countFile string) {
	t.Helper()
	real, err := exec.LookPath("ipmitool")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	countFile = filepath.Join(dir, "runs")
	path = filepath.Join(dir, "ipmitool")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\nexec %q \"$@\"\n", countFile, real)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, countFile
}

func runs(t *testing.T, countFile string) []string {
	b, err := os.ReadFile(countFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestIPMILifecycle drives bmclib's ipmitool provider against ipmi_sim
// through the Manager and checks the chassis_control state file.
func TestIPMILifecycle(t *testing.T) {
	sim := startSim(t)
	e := newEnv(t, Options{Timeout: 20 * time.Second})
	hw := e.create(t, ipmiHW("ipmi1", sim, "ipmi-pass"))
	ctx := ctxT(t, 2*time.Minute)
	setPowerCalls := func() int {
		n := 0
		for _, c := range sim.Calls() {
			if strings.Contains(c, "set power") {
				n++
			}
		}
		return n
	}

	if err := expectPower(ctx, e.m, hw, "off"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.SetBootDevice(ctx, hw, "pxe", false, false); err != nil {
		t.Fatal(err)
	}
	if got := sim.Boot(); got != "pxe" {
		t.Errorf("boot after pxe = %q, want pxe", got)
	}
	if err := e.m.SetPower(ctx, hw, "on"); err != nil {
		t.Fatal(err)
	}
	if got := sim.Power(); got != "1" {
		t.Errorf("power after on = %q, want 1", got)
	}
	if err := expectPower(ctx, e.m, hw, "on"); err != nil {
		t.Fatal(err)
	}
	before := setPowerCalls()
	if err := e.m.SetPower(ctx, hw, "on"); err != nil {
		t.Fatal(err)
	}
	if got := setPowerCalls(); got != before {
		t.Errorf("power on while on reached the chassis: %d set power calls, want %d", got, before)
	}

	// Cycle while on: ipmi_sim powers off, then on again a second later.
	mark := len(sim.Calls())
	if err := e.m.SetPower(ctx, hw, "cycle"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "power back on after cycle", func() bool {
		calls := sim.Calls()[mark:]
		off := slices.IndexFunc(calls, func(c string) bool { return strings.HasSuffix(c, "set power 0") })
		return off >= 0 && slices.ContainsFunc(calls[off:], func(c string) bool { return strings.HasSuffix(c, "set power 1") }) && sim.Power() == "1"
	})

	if err := e.m.SetBootDevice(ctx, hw, "disk", true, false); err != nil {
		t.Fatal(err)
	}
	if got := sim.Boot(); got != "default" {
		t.Errorf("boot after disk = %q, want default (ipmi_sim's name for disk)", got)
	}
	if err := e.m.SetPower(ctx, hw, "off"); err != nil {
		t.Fatal(err)
	}
	if got := sim.Power(); got != "0" {
		t.Errorf("power after off = %q, want 0", got)
	}
	if err := expectPower(ctx, e.m, hw, "off"); err != nil {
		t.Fatal(err)
	}

	// Cycle while off powers on, with a plain power on.
	mark = len(sim.Calls())
	if err := e.m.SetPower(ctx, hw, "cycle"); err != nil {
		t.Fatal(err)
	}
	if got := sim.Power(); got != "1" {
		t.Errorf("power after cycle while off = %q, want 1", got)
	}
	if calls := sim.Calls()[mark:]; slices.ContainsFunc(calls, func(c string) bool { return strings.HasSuffix(c, "set power 0") }) {
		t.Errorf("cycle while off sent a power off: %q", calls)
	}
	if !strings.Contains(e.logs.String(), "provider=ipmitool") {
		t.Errorf("log does not name the provider that answered")
	}
	if strings.Contains(e.logs.String(), "ipmi-pass") {
		t.Errorf("password in the log")
	}
}

func TestIPMIWrongPassword(t *testing.T) {
	sim := startSim(t)
	path, count := countingIpmitool(t)
	e := newEnv(t, Options{Timeout: 20 * time.Second, Retries: 5, RetryBackoff: 10 * time.Millisecond, IpmitoolPath: path})
	hw := ipmiHW("ipmi-auth", sim, "not-the-password")
	err := e.m.SetPower(ctxT(t, time.Minute), hw, "on")
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("err = %v, want ErrAuth", err)
	}
	t.Logf("error: %v", err)
	if want := fmt.Sprintf("%s:%d", sim.Host, sim.Port); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not name the BMC %s", want)
	}
	// bmclib tries cipher suite 3, then 17: two logins, then we stop,
	// although Retries is 5.
	r := runs(t, count)
	fmt.Printf("ipmitool runs for a wrong password with Retries=5: %d %q\n", len(r), r)
	if len(r) > 2 {
		t.Errorf("ipmitool ran %d times for a refused login, want at most 2 (one per cipher suite)", len(r))
	}
	for _, s := range append(r, err.Error(), e.logs.String()) {
		if strings.Contains(s, "not-the-password") {
			t.Errorf("password leaked (command line, error or log): %s", s)
		}
	}
	if got := sim.Power(); got == "1" {
		t.Errorf("server powered on with a wrong password")
	}
}

func TestIPMIConfiguredCipherSuite(t *testing.T) {
	sim := startSim(t)
	path, count := countingIpmitool(t)
	e := newEnv(t, Options{Timeout: 20 * time.Second, IpmitoolPath: path, IPMICipherSuite: "17"})
	err := e.m.SetBootDevice(ctxT(t, time.Minute), ipmiHW("c17", sim, "ipmi-pass"), "pxe", false, true)
	r := runs(t, count)
	if len(r) == 0 || !strings.Contains(r[0], "-C 17") || strings.Contains(strings.Join(r, "\n"), "-C 3") {
		t.Errorf("ipmitool runs %q, want -C 17 only", r)
	}
	// ipmi_sim does not offer cipher suite 17: refused quickly, as a login
	// problem, not retried.
	if !errors.Is(err, ErrAuth) {
		t.Errorf("err = %v, want ErrAuth (no common cipher suite)", err)
	}
}

func TestIPMINoAnswer(t *testing.T) {
	if _, err := exec.LookPath("ipmitool"); err != nil {
		fmt.Printf("SKIP %s: ipmitool not found\n", t.Name())
		t.Skip("ipmitool not found")
	}
	// A bound UDP socket that never reads: packets vanish, as with a dead BMC.
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("close the dead BMC's socket: %v", err)
		}
	}()
	port := c.LocalAddr().(*net.UDPAddr).Port
	e := newEnv(t, Options{Timeout: time.Second, Retries: -1})
	hw := store.Hardware{ID: "ipmi-dead", BMC: store.BMC{Driver: DriverIPMI, Address: "127.0.0.1", Port: port, Username: "admin", Password: "pw-dead-bmc"}}
	start := time.Now()
	_, err = e.m.PowerState(ctxT(t, time.Minute), hw)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	t.Logf("error after %s: %v", took.Round(time.Millisecond), err)
	if want := fmt.Sprintf("127.0.0.1:%d", port); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not name the BMC %s", want)
	}
	if took > 10*time.Second {
		t.Errorf("took %s with a 1s timeout: the timeout does not bound the call", took)
	}
}

func TestIPMIUnknownDriverAndMissingAddress(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	for name, hw := range map[string]store.Hardware{
		"unknown driver": {ID: "x", BMC: store.BMC{Driver: "amt", Address: "127.0.0.1"}},
		"no address":     {ID: "y", BMC: store.BMC{Driver: DriverIPMI}},
	} {
		if err := e.m.SetPower(ctx, hw, "on"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
