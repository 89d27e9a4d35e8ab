package bmctest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// IPMISim is a running OpenIPMI ipmi_sim: a real IPMI v2 LAN (lanplus) BMC
// on 127.0.0.1. Its chassis_control script keeps the power state (0/1) in
// Dir/power and the boot device in Dir/boot, and appends every call to
// Dir/calls.
type IPMISim struct {
	Host     string
	Port     int
	User     string
	Password string
	Dir      string

	cmd  *exec.Cmd
	done chan struct{}
}

// IPMIToolsMissing returns why ipmi_sim tests cannot run here, or "".
func IPMIToolsMissing() string {
	for _, b := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(b); err != nil {
			return b + " not found on PATH (Debian packages openipmi and ipmitool)"
		}
	}
	return ""
}

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
	emu := filepath.Join(dir, "sim.emu")
	if err := os.WriteFile(emu, []byte("mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"), 0o644); err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for try := 0; try < 5; try++ {
		port, err := freeUDPPort()
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "lan.conf")
		lan := fmt.Sprintf(`name "sim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, script, user, password)
		if err := os.WriteFile(conf, []byte(lan), 0o600); err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(dir, fmt.Sprintf("ipmi_sim.%d.log", try)))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command("ipmi_sim", "-c", conf, "-f", emu, "-s", state, "-n")
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			_ = log.Close() // never written: ipmi_sim did not start
			return nil, fmt.Errorf("start ipmi_sim: %w", err)
		}
		s := &IPMISim{Host: "127.0.0.1", Port: port, User: user, Password: password, Dir: dir, cmd: cmd, done: make(chan struct{})}
		// ipmi_sim wrote through its own descriptor: closing ours loses nothing.
		go func() { _ = cmd.Wait(); _ = log.Close(); close(s.done) }()
		if err := s.waitReady(ctx); err != nil {
			s.Close()
			lastErr = err
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("ipmi_sim did not come up: %w", lastErr)
}

func (s *IPMISim) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.done:
			return errors.New("ipmi_sim exited")
		default:
		}
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		out, err := s.IPMITool(c, "chassis", "power", "status")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("ipmitool chassis power status: %v: %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// IPMITool runs ipmitool against the simulator (for checks in tests).
func (s *IPMISim) IPMITool(ctx context.Context, args ...string) (string, error) {
	a := append([]string{"-I", "lanplus", "-C", "3", "-H", s.Host, "-p", strconv.Itoa(s.Port), "-U", s.User, "-E", "-N", "1", "-R", "2"}, args...)
	cmd := exec.CommandContext(ctx, "ipmitool", a...)
	cmd.Env = append(os.Environ(), "IPMITOOL_PASSWORD="+s.Password)
	out, err := cmd.CombinedOutput()
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
func (s *IPMISim) Close() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-s.done
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	// The port is only free for the caller once this socket is closed.
	if err := c.Close(); err != nil {
		return 0, err
	}
	return port, nil
}
