package bmctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/ipmisim"
)

// IPMISim is a running OpenIPMI ipmi_sim (the test kit's, internal/testkit/ipmisim):
// a real IPMI v2 LAN (lanplus) BMC on 127.0.0.1. Its chassis_control script keeps the power state (0/1) in
// Dir/power and the boot device in Dir/boot, and appends every call to
// Dir/calls.
type IPMISim struct {
	Host     string
	Port     int
	User     string
	Password string
	Dir      string

	sim *ipmisim.Sim
}

// IPMIToolsMissing returns why ipmi_sim tests cannot run here, or "".
func IPMIToolsMissing() string { return ipmisim.ToolsMissing() }

// chassisControl is called by ipmi_sim as `SCRIPT 0x20 get power boot` or
// `SCRIPT 0x20 set power 1 [boot pxe ...]`. It must be fast: ipmi_sim
// blocks while it runs.
const chassisControl = `#!/bin/sh
D=$(dirname "$0")
echo "$*" >> "$D/calls"
[ -f "$D/power" ] || echo 0 > "$D/power"
[ -f "$D/boot" ] || echo default > "$D/boot"
op=$2; shift 2
case $op in
get)
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$D/power")";;
      boot) echo "boot:$(cat "$D/boot")";;
    esac
  done;;
set)
  while [ $# -gt 1 ]; do
    case $1 in
      power) echo "$2" > "$D/power.tmp" && mv "$D/power.tmp" "$D/power";;
      boot) echo "$2" > "$D/boot.tmp" && mv "$D/boot.tmp" "$D/boot";;
    esac
    shift 2
  done;;
esac
exit 0
`

// StartIPMISim starts ipmi_sim in dir (which must exist) on a free UDP
// port of 127.0.0.1 with one admin user, and waits until it answers.
func StartIPMISim(ctx context.Context, dir, user, password string) (*IPMISim, error) {
	if why := IPMIToolsMissing(); why != "" {
		return nil, errors.New(why)
	}
	script := filepath.Join(dir, "chassis_control.sh")
	if err := os.WriteFile(script, []byte(chassisControl), 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for try := 0; try < 5; try++ {
		port, err := testkit.FreeUDPPort()
		if err != nil {
			return nil, err
		}
		sim, err := ipmisim.Start(ctx, ipmisim.Config{
			Name: "sim", Dir: dir, Port: port, Script: script,
			Users: []ipmisim.User{{ID: 2, Name: user, Password: password, Priv: "admin"}},
			Log:   filepath.Join(dir, fmt.Sprintf("ipmi_sim.%d.log", try)), Group: true, ReadyTimeout: 10 * time.Second,
		})
		if err != nil {
			lastErr = err
			continue
		}
		return &IPMISim{Host: "127.0.0.1", Port: port, User: user, Password: password, Dir: dir, sim: sim}, nil
	}
	return nil, fmt.Errorf("ipmi_sim did not come up: %w", lastErr)
}

// IPMITool runs ipmitool against the simulator (for checks in tests).
func (s *IPMISim) IPMITool(ctx context.Context, args ...string) (string, error) {
	c := ipmisim.Client{Port: s.Port, User: s.User, Password: s.Password}
	out, err := c.Command(ctx, append([]string{"-N", "1", "-R", "2"}, args...)...).CombinedOutput()
	return string(out), err
}

// Power returns the power state file: "1", "0", or "" before any call.
func (s *IPMISim) Power() string { return s.read("power") }

// Boot returns the boot device file: "pxe", "default" (disk), "bios", ...
func (s *IPMISim) Boot() string { return s.read("boot") }

// Calls returns the chassis_control calls so far, one per line.
func (s *IPMISim) Calls() []string {
	c := s.read("calls")
	if c == "" {
		return nil
	}
	return strings.Split(c, "\n")
}

// SetPower writes the power state file as if the server changed by hand.
func (s *IPMISim) SetPower(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	return os.WriteFile(filepath.Join(s.Dir, "power"), []byte(v), 0o644)
}

func (s *IPMISim) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, name))
	return strings.TrimSpace(string(b))
}

// Close kills the simulator (by its process group) and waits for it.
func (s *IPMISim) Close() { s.sim.Close() }
