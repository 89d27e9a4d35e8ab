// Package ipmisim is the test kit's one harness for OpenIPMI's ipmi_sim: a
// real IPMI v2 LAN (lanplus) BMC on 127.0.0.1, on the host or inside a
// network namespace, whose chassis_control script the caller writes (it
// decides what plays the server). provisiond/bmc/bmctest's simulator
// (power and boot device in files) and internal/lab's BMC (QEMU or a
// machine program) are both this, with a script of their own.
//
// It links no testing code: internal/lab's cmd/demolab runs it too.
package ipmisim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Emu is ipmi_sim's emulator command file: one BMC at 0x20.
const Emu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`

// ToolsMissing returns why ipmi_sim cannot run here, or "".
func ToolsMissing() string {
	for _, b := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(b); err != nil {
			return b + " not found on PATH (Debian packages openipmi and ipmitool)"
		}
	}
	return ""
}

// User is one user of the BMC (lan.conf's user line).
type User struct {
	ID       int    // 1 is the null user's slot
	Name     string // "" for the null user
	Password string // at most 20 bytes
	Priv     string // "user", "operator" or "admin"
}

// Config is one simulated BMC.
type Config struct {
	Name string // lan.conf's name
	// Dir holds lan.conf, sim.emu and the state directory; it must exist.
	Dir  string
	Port int // UDP port on Addr (inside NS when set)
	// Addr is the IPv4 address it listens on; default 127.0.0.1. Another
	// one must be on an interface of NS (or of the host).
	Addr string
	// Script is the chassis_control program: ipmi_sim runs it as
	// `Script 0x20 get power boot...` and `Script 0x20 set power 1|0 ...`
	// and blocks while it runs.
	Script string
	Users  []User
	// NS, when set, is the network namespace ipmi_sim runs in.
	NS string
	// Log is the file ipmi_sim's output goes to; default Dir/ipmi_sim.out.
	Log string
	// Group puts ipmi_sim in a process group of its own, which Close kills
	// whole (the chassis scripts it may be running with it).
	Group bool
	// ReadyTimeout bounds Start's wait for the first answer; 0: ctx alone.
	ReadyTimeout time.Duration
}

func (c Config) addr() string {
	if c.Addr != "" {
		return c.Addr
	}
	return "127.0.0.1"
}

// LanConf returns ipmi_sim's lan.conf for c.
func LanConf(c Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, `name "%s"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
`, c.Name, c.addr(), c.Port, c.Script)
	for _, u := range c.Users {
		fmt.Fprintf(&b, "  user %d true %q %q %s 10 none md2 md5 straight\n", u.ID, u.Name, u.Password, u.Priv)
	}
	return b.String()
}

// Client is how ipmitool reaches a simulated BMC: lanplus with cipher
// suite 3 (LAB.md), the password in the environment (-E) so that it never
// shows in ps.
type Client struct {
	NS       string // the namespace the BMC listens in, "" for the host's
	Host     string // default 127.0.0.1
	Port     int
	User     string
	Password string
}

// Args returns ipmitool's connection arguments.
func (c Client) Args() []string {
	host := c.Host
	if host == "" {
		host = "127.0.0.1"
	}
	return []string{"-I", "lanplus", "-C", "3", "-H", host, "-p", strconv.Itoa(c.Port), "-U", c.User, "-E"}
}

// Command returns ipmitool with the connection arguments, then args.
func (c Client) Command(ctx context.Context, args ...string) *exec.Cmd {
	all := append(c.Args(), args...)
	var cmd *exec.Cmd
	if c.NS != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.NS, "ipmitool"}, all...)...)
	} else {
		cmd = exec.CommandContext(ctx, "ipmitool", all...)
	}
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+c.Password)
	return cmd
}

// Run runs ipmitool args and returns its trimmed output; its error says
// the command and the output.
func (c Client) Run(ctx context.Context, args ...string) (string, error) {
	out, err := c.Command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Sim is a running ipmi_sim.
type Sim struct {
	cmd   *exec.Cmd
	group bool
	log   *os.File
	done  chan struct{}
}

// Start writes lan.conf and sim.emu into c.Dir, starts ipmi_sim and waits
// until it answers a chassis power status to the last of c.Users. On an error nothing is left
// running; the error has what ipmi_sim printed.
func Start(ctx context.Context, c Config) (*Sim, error) {
	if len(c.Users) == 0 {
		return nil, fmt.Errorf("ipmi_sim %s: no users", c.Name)
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "state"), 0o755); err != nil {
		return nil, fmt.Errorf("ipmi_sim %s: %w", c.Name, err)
	}
	conf, emu := filepath.Join(c.Dir, "lan.conf"), filepath.Join(c.Dir, "sim.emu")
	for name, content := range map[string]string{conf: LanConf(c), emu: Emu} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			return nil, fmt.Errorf("ipmi_sim %s: %w", c.Name, err)
		}
	}
	logPath := c.Log
	if logPath == "" {
		logPath = filepath.Join(c.Dir, "ipmi_sim.out")
	}
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("ipmi_sim %s: %w", c.Name, err)
	}
	args := []string{"-c", conf, "-f", emu, "-s", filepath.Join(c.Dir, "state"), "-n"}
	// Not CommandContext: the BMC outlives the call; Close kills it.
	cmd := exec.Command("ipmi_sim", args...)
	if c.NS != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", c.NS, "ipmi_sim"}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if c.Group {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		_ = log.Close() // never written: ipmi_sim did not start
		return nil, fmt.Errorf("start ipmi_sim for %s: %w", c.Name, err)
	}
	s := &Sim{cmd: cmd, group: c.Group, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	// The probe logs in as the last user: the admin of both callers.
	u := c.Users[len(c.Users)-1]
	if err := s.waitReady(ctx, Client{NS: c.NS, Host: c.Addr, Port: c.Port, User: u.Name, Password: u.Password}, c.ReadyTimeout); err != nil {
		s.Close()
		b, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("ipmi_sim %s on port %d: %w; ipmi_sim said: %s", c.Name, c.Port, err, strings.TrimSpace(string(b)))
	}
	return s, nil
}

// waitReady polls a power status until one is answered, ipmi_sim exits,
// ctx ends or timeout (when not 0) passes.
func (s *Sim) waitReady(ctx context.Context, c Client, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.Run(pctx, "-N", "1", "-R", "2", "chassis", "power", "status")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("ipmi_sim exited")
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close kills ipmi_sim (its process group, when it has one of its own)
// and waits for it. It may be called more than once.
func (s *Sim) Close() {
	if s.cmd.Process != nil {
		if s.group {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		} else {
			_ = s.cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	<-s.done
	// ipmi_sim wrote through its own descriptor: closing ours loses nothing.
	_ = s.log.Close()
}
