package bmc

import (
	"fmt"
	"strings"
)

// PowerState is a server's power state, normalised across providers.
type PowerState string

// Power states. They are the strings of the shared contract.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// PowerAction is something a BMC can do to a server's power.
type PowerAction string

// Power actions.
const (
	ActionOn    PowerAction = "on"    // power on; a no-op when already on
	ActionOff   PowerAction = "off"   // hard power off
	ActionSoft  PowerAction = "soft"  // ACPI (graceful) shutdown
	ActionCycle PowerAction = "cycle" // off then on; powers on a server that is off
	ActionReset PowerAction = "reset" // hard reset; powers on a server that is off
)

// BootDevice is a device a server can be told to boot from next.
type BootDevice string

// Boot devices.
const (
	BootPXE   BootDevice = "pxe"
	BootDisk  BootDevice = "disk"
	BootBIOS  BootDevice = "bios"
	BootCDROM BootDevice = "cdrom"
)

// Driver names, as stored in store.BMC.Driver.
const (
	DriverIPMI    = "ipmi"
	DriverRedfish = "redfish"
	DriverManual  = "manual"
)

// Sentinel errors. Adapters map them to status codes with errors.Is.
// ErrInvalid and ErrAuth are permanent: they report Permanent() true, so
// a caller that knows nothing of this package (the workflow engine) can
// tell, with errors.As, that trying again cannot help.
var (
	// ErrInvalid: a bad argument (unknown action, device or driver, no address).
	ErrInvalid error = &sentinel{"invalid BMC request", true}
	// ErrAuth: the BMC refused the credentials. Such calls are never retried:
	// repeated failed logins lock accounts on many BMCs.
	ErrAuth error = &sentinel{"BMC refused the credentials", true}
	// ErrTimeout: the BMC did not answer within the per-attempt timeout.
	ErrTimeout error = &sentinel{"BMC did not answer in time", false}
)

type sentinel struct {
	msg       string
	permanent bool
}

func (s *sentinel) Error() string { return s.msg }

// Permanent reports whether trying again cannot help.
func (s *sentinel) Permanent() bool { return s.permanent }

// ParsePowerAction checks s against the power actions.
func ParsePowerAction(s string) (PowerAction, error) {
	switch a := PowerAction(strings.ToLower(strings.TrimSpace(s))); a {
	case ActionOn, ActionOff, ActionSoft, ActionCycle, ActionReset:
		return a, nil
	}
	return "", fmt.Errorf("%w: power action %q (want on, off, soft, cycle or reset)", ErrInvalid, s)
}

// ParseBootDevice checks s against the boot devices.
func ParseBootDevice(s string) (BootDevice, error) {
	switch d := BootDevice(strings.ToLower(strings.TrimSpace(s))); d {
	case BootPXE, BootDisk, BootBIOS, BootCDROM:
		return d, nil
	}
	return "", fmt.Errorf("%w: boot device %q (want pxe, disk, bios or cdrom)", ErrInvalid, s)
}

// NormalizePowerState turns what a provider reports into a PowerState.
// ipmitool prints "Chassis Power is on"; Redfish says "On", "Off",
// "PoweringOn", "PoweringOff" or "Paused"; some BMCs answer "ON", "1" or
// "power:1". Anything else is PowerUnknown.
func NormalizePowerState(raw string) PowerState {
	s := strings.ToLower(strings.TrimSpace(raw))
	// Keep the first line only: ipmitool may append warnings.
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	s = strings.TrimPrefix(s, "chassis power is ")
	s = strings.TrimPrefix(s, "power:")
	s = strings.TrimPrefix(s, "power is ")
	s = strings.TrimSpace(s)
	switch s {
	case "on", "1", "true", "poweringon", "powering on", "paused":
		// A paused system is powered; one powering on is on as far as
		// a provisioning decision goes.
		return PowerOn
	case "off", "0", "false", "poweringoff", "powering off":
		return PowerOff
	}
	return PowerUnknown
}
