package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMachineChassisScript drives a Machine BMC's script directly: power on
// starts the program with the stored boot device in $BOOT, in a process
// group of its own; reset restarts it with the boot device read afresh;
// power off kills the program and its children.
func TestMachineChassisScript(t *testing.T) {
	dir := t.TempDir()
	// The machine records its boot device and PID and keeps a child, as a
	// machine running an agent does.
	prog := filepath.Join(dir, "machine")
	script := `#!/bin/sh
echo "$BOOT" >>` + shellQuote(filepath.Join(dir, "boots")) + `
sleep 60 &
echo $! >` + shellQuote(filepath.Join(dir, "child")) + `
wait
`
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	b := &BMC{VM: VM{Name: "m0", Dir: dir}, Machine: []string{prog}, Port: 1}
	if err := os.MkdirAll(b.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	cs := filepath.Join(b.dir(), "chassis-control")
	if err := os.WriteFile(cs, []byte(b.ChassisScript()), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	call := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(cs, append([]string{"0x20"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("chassis-control %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// child waits for the machine's child to have written its PID.
	child := func() int {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, _ := os.ReadFile(filepath.Join(dir, "child"))
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				// Removed so that the next call waits for the next child.
				if err := os.Remove(filepath.Join(dir, "child")); err != nil {
					t.Fatal(err)
				}
				return pid
			}
		}
		t.Fatal("the machine started no child")
		return 0
	}
	machinePID := func() int {
		t.Helper()
		b, err := os.ReadFile(b.PIDFile())
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}

	if diff := cmp.Diff("power:0\nboot:default", call("get", "power", "boot")); diff != "" {
		t.Error(diff)
	}
	call("set", "boot", "pxe")
	call("set", "power", "1")
	if got := call("get", "power"); got != "power:1" {
		t.Fatalf("after power on: %q", got)
	}
	pid := machinePID()
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("machine %d is in process group %d (%v), want its own", pid, pgid, err)
	}
	first := child()

	// Reset: the old machine and its child go, a new one boots the disk.
	call("set", "boot", "default")
	call("set", "reset", "1")
	// The script signals the old machine's process group; on a loaded
	// machine the processes take a moment to go.
	for deadline := time.Now().Add(5 * time.Second); (running(first) || running(pid)) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if running(first) || running(pid) {
		t.Errorf("after reset: old machine alive %t, its child alive %t", running(pid), running(first))
	}
	if got := call("get", "power"); got != "power:1" {
		t.Fatalf("after reset: %q", got)
	}
	second := child()

	call("set", "power", "0")
	if got := call("get", "power"); got != "power:0" {
		t.Errorf("after power off: %q", got)
	}
	for deadline := time.Now().Add(5 * time.Second); running(second) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if running(second) {
		t.Error("the machine's child survived power off")
	}
	boots, _ := os.ReadFile(filepath.Join(dir, "boots"))
	if diff := cmp.Diff("pxe\ndisk\n", string(boots)); diff != "" {
		t.Errorf("boot devices the machine saw (-want +got):\n%s", diff)
	}
}
