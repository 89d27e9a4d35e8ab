package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/ipmisim"
)

// BMC is an OpenIPMI ipmi_sim instance listening on Addr:Port (inside
// the namespace) whose chassis_control script powers VM on and off: power on
// starts QEMU daemonized with -boot order=n when the stored boot device is
// pxe and order=c otherwise; power off kills it by PID; the power state is
// whether that PID lives.
//
// ipmi_sim's mapping of IPMI chassis commands, as measured: `chassis bootdev
// pxe` → "set boot pxe", `bootdev disk` → "set boot default", `power reset` →
// "set reset 1" (the script restarts a running VM with the stored boot
// device), and `power cycle` → "set power 0", then "set power 1" from
// ipmi_sim's own timer 1-2 s later: for that window the server reads off
// although the cycle succeeded. provisiond resets a running server instead.
type BMC struct {
	VM VM
	// Machine, when set, plays the server instead of QEMU: the argv of a
	// program that the chassis script starts on power on, in a session of
	// its own, with BOOT=pxe or BOOT=disk in its environment (the stored
	// boot device), its output appended to Dir/machine.out; power off kills
	// its whole process group; the power state is whether it lives. A reset
	// restarts it. VM then only names the BMC and gives Dir.
	Machine []string
	Port    int
	// Addr is the address it listens on, default 127.0.0.1; another one
	// must be on an interface of the namespace.
	Addr     string
	User     string // default "admin"
	Password string // default "password"
	// Dir holds lan.conf, sim.emu, the chassis script and the ipmi_sim state;
	// default VM.Dir/bmc.
	Dir string

	ns  *NetNS
	sim *ipmisim.Sim
}

func (b *BMC) dir() string {
	if b.Dir != "" {
		return b.Dir
	}
	return filepath.Join(b.VM.Dir, "bmc")
}

func (b *BMC) user() string {
	if b.User != "" {
		return b.User
	}
	return "admin"
}

func (b *BMC) password() string {
	if b.Password != "" {
		return b.Password
	}
	return "password"
}

// PIDFile holds the PID of the powered-on server: QEMU's pidfile, or the
// machine's (Dir/machine.pid) when Machine is set.
func (b *BMC) PIDFile() string {
	if len(b.Machine) > 0 {
		return filepath.Join(b.dir(), "machine.pid")
	}
	return b.VM.PIDFile()
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// kit is this BMC's configuration for the test kit's ipmi_sim harness.
func (b *BMC) kit(ns *NetNS) ipmisim.Config {
	c := ipmisim.Config{
		Name: b.VM.Name, Dir: b.dir(), Port: b.Port, Addr: b.Addr, Script: filepath.Join(b.dir(), "chassis-control"),
		Users: []ipmisim.User{
			{ID: 1, Name: "", Password: "test", Priv: "user"},
			{ID: 2, Name: b.user(), Password: b.password(), Priv: "admin"},
		},
	}
	if ns != nil {
		c.NS = ns.Name
	}
	return c
}

// client is how ipmitool reaches this BMC (from inside its namespace).
func (b *BMC) client() ipmisim.Client {
	c := ipmisim.Client{Host: b.Addr, Port: b.Port, User: b.user(), Password: b.password()}
	if b.ns != nil {
		c.NS = b.ns.Name
	}
	return c
}

// LanConf returns ipmi_sim's lan.conf for this BMC.
func (b *BMC) LanConf() string { return ipmisim.LanConf(b.kit(nil)) }

// SimEmu is ipmi_sim's emulator command file: one BMC at 0x20.
const SimEmu = ipmisim.Emu

// chassisHelpers and chassisDispatch are the parts of every chassis_control
// script that do not depend on what plays the server: the power state is
// whether the PID in $pidf lives, the boot device is a file in $dir, and
// ipmi_sim's get/set calls map onto poweron and poweroff, which each script
// defines.
const chassisHelpers = `# A killed server may linger as a zombie until it is reaped: that counts as off.
running() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
alive() { [ -s "$pidf" ] && running "$(cat "$pidf")"; }
bootdev() { cat "$dir/bootdev" 2>/dev/null || echo default; }
`

const chassisDispatch = `echo "$(date +%s.%N) $*" >>"$dir/calls.log"
mc=$1; op=$2; shift 2
case "$op" in
get)
	for p in "$@"; do
		case "$p" in
		power) if alive; then echo "power:1"; else echo "power:0"; fi ;;
		boot) echo "boot:$(bootdev)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		case "$1" in
		power) if [ "$2" = 1 ]; then poweron; else echo "$(date +%s.%N) power off" >>"$dir/power.log"; poweroff; fi ;;
		boot) echo "$2" >"$dir/bootdev" ;;
		# A hard reset restarts the running server, reading the boot device afresh.
		reset) if alive; then echo "$(date +%s.%N) reset" >>"$dir/power.log"; poweroff; poweron; fi ;;
		esac
		shift 2
	done ;;
esac
exit 0
`

// ChassisScript returns the chassis_control script. ipmi_sim runs it as
// `SCRIPT 0x20 get power boot...` (prints "power:0|1", "boot:pxe|default")
// and `SCRIPT 0x20 set power 1|0`, `set boot DEV`, and blocks while it runs,
// so it only forks QEMU (-daemonize), or the Machine, and returns.
func (b *BMC) ChassisScript() string {
	if len(b.Machine) > 0 {
		return b.machineScript()
	}
	// One command line per boot order: the order decides which device gets
	// bootindex=1, and OVMF goes by bootindex (it ignores -boot order).
	cmdline := func(order string) string {
		var args []string
		for _, a := range b.VM.Args(order) {
			args = append(args, shellQuote(a))
		}
		return shellQuote(b.VM.Binary()) + " " + strings.Join(args, " ") + ` -daemonize -pidfile "$pidf" >>"$dir/qemu.out" 2>&1`
	}
	dir := shellQuote(b.dir())
	return `#!/bin/sh
# Generated by internal/lab: ipmi_sim chassis_control for VM ` + b.VM.Name + `.
dir=` + dir + `
pidf=` + shellQuote(b.VM.PIDFile()) + `
` + chassisHelpers + `poweroff() {
	if alive; then
		pid=$(cat "$pidf"); kill -9 "$pid"
		i=0; while running "$pid" && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done
	fi
	rm -f "$pidf"
}
poweron() {
	alive && return 0
	if [ "$(bootdev)" = pxe ]; then order=n; else order=c; fi
	echo "$(date +%s.%N) power on order=$order" >>"$dir/power.log"
	rm -f ` + shellQuote(b.VM.SerialPath()) + ` # a new file per boot: Console follows it by inode
` + b.uefiPXEOverride() + `	if [ "$order" = n ]; then
		` + cmdline("n") + `
	else
		` + cmdline("c") + `
	fi
}
` + chassisDispatch + ``
}

// uefiPXEOverride returns the script lines that make a UEFI VM honour a PXE
// boot override the way a real BMC's BootNext does: the power-on starts from
// the pristine variable store, so no boot order saved by an earlier disk
// boot competes with the NIC's bootindex.
func (b *BMC) uefiPXEOverride() string {
	tmpl := b.VM.varsTemplate()
	if tmpl == "" {
		return ""
	}
	return "\t[ \"$order\" = n ] && cp " + shellQuote(tmpl) + " " + shellQuote(b.VM.varsFile()) + "\n"
}

// Start writes the configuration and starts ipmi_sim inside ns (nil: on
// the host's loopback). The BMC answers once Start returns nil.
func (b *BMC) Start(ctx context.Context, ns *NetNS) error {
	if len(b.password()) > 20 {
		return fmt.Errorf("bmc %s: IPMI passwords hold at most 20 bytes, got %d", b.VM.Name, len(b.password()))
	}
	if err := b.VM.Prepare(); err != nil {
		return err
	}
	dir := b.dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bmc %s: %w", b.VM.Name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chassis-control"), []byte(b.ChassisScript()), 0o755); err != nil {
		return fmt.Errorf("bmc %s: %w", b.VM.Name, err)
	}
	b.ns = ns
	sim, err := ipmisim.Start(ctx, b.kit(ns))
	if err != nil {
		_ = b.Close() // the VM or machine, if a probe powered it on
		return fmt.Errorf("bmc %s: %w", b.VM.Name, err)
	}
	b.sim = sim
	return nil
}

// IpmitoolArgs returns ipmitool's connection arguments for this BMC (LAB.md:
// lanplus with cipher suite 3). The password is passed through the
// environment (-E, IPMI_PASSWORD) so it never appears in ps.
func (b *BMC) IpmitoolArgs() []string { return b.client().Args() }

// Ipmitool runs ipmitool against this BMC from inside its namespace.
func (b *BMC) Ipmitool(ctx context.Context, args ...string) (string, error) {
	return b.client().Run(ctx, args...)
}

// Close kills the VM or the machine (by its pidfile) and ipmi_sim.
func (b *BMC) Close() error {
	if len(b.Machine) > 0 {
		killGroup(b.PIDFile())
	}
	err := KillPIDFile(b.PIDFile(), 5*time.Second)
	if b.sim != nil {
		b.sim.Close()
		b.sim = nil
	}
	return err
}
