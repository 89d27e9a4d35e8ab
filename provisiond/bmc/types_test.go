package bmc

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizePowerState(t *testing.T) {
	tests := map[string]struct {
		raw  string
		want PowerState
	}{
		"ipmitool on":          {"Chassis Power is on\n", PowerOn},
		"ipmitool off":         {"Chassis Power is off", PowerOff},
		"ipmitool with noise":  {"Chassis Power is on\nwarning: something", PowerOn},
		"redfish On":           {"On", PowerOn},
		"redfish Off":          {"Off", PowerOff},
		"redfish PoweringOn":   {"PoweringOn", PowerOn},
		"redfish PoweringOff":  {"PoweringOff", PowerOff},
		"redfish Paused":       {"Paused", PowerOn},
		"upper case":           {"ON", PowerOn},
		"padded":               {"  off \r\n", PowerOff},
		"numeric":              {"1", PowerOn},
		"chassis_control form": {"power:0", PowerOff},
		"empty":                {"", PowerUnknown},
		"garbage":              {"Chassis Power is confused", PowerUnknown},
		"error text":           {"Error: Unable to establish IPMI v2 / RMCP+ session", PowerUnknown},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, NormalizePowerState(tc.raw)); diff != "" {
				t.Errorf("NormalizePowerState(%q) (-want +got):\n%s", tc.raw, diff)
			}
		})
	}
}

func TestParseActionAndDevice(t *testing.T) {
	actions := map[string]struct {
		in      string
		want    PowerAction
		invalid bool
	}{
		"on":       {in: "on", want: ActionOn},
		"OFF":      {in: "OFF", want: ActionOff},
		"soft":     {in: " soft ", want: ActionSoft},
		"cycle":    {in: "cycle", want: ActionCycle},
		"reset":    {in: "reset", want: ActionReset},
		"status":   {in: "status", invalid: true},
		"empty":    {in: "", invalid: true},
		"injected": {in: "on; reboot", invalid: true},
	}
	for name, tc := range actions {
		t.Run("action "+name, func(t *testing.T) {
			got, err := ParsePowerAction(tc.in)
			if tc.invalid != errors.Is(err, ErrInvalid) {
				t.Fatalf("ParsePowerAction(%q) error = %v, want invalid=%v", tc.in, err, tc.invalid)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	devices := map[string]struct {
		in      string
		want    BootDevice
		invalid bool
	}{
		"pxe":    {in: "pxe", want: BootPXE},
		"disk":   {in: "Disk", want: BootDisk},
		"bios":   {in: "bios", want: BootBIOS},
		"cdrom":  {in: "cdrom", want: BootCDROM},
		"floppy": {in: "floppy", invalid: true},
		"hdd":    {in: "hdd", invalid: true},
	}
	for name, tc := range devices {
		t.Run("device "+name, func(t *testing.T) {
			got, err := ParseBootDevice(tc.in)
			if tc.invalid != errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseBootDevice(%q) error = %v, want invalid=%v", tc.in, err, tc.invalid)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzNormalizePowerState: provider output is outside input. The result is
// always one of the three states and normalising it again changes nothing.
func FuzzNormalizePowerState(f *testing.F) {
	for _, s := range []string{"Chassis Power is on", "Off", "PoweringOn", "power:1", "", "\n\n", "Chassis Power is "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := NormalizePowerState(raw)
		switch got {
		case PowerOn, PowerOff, PowerUnknown:
		default:
			t.Fatalf("NormalizePowerState(%q) = %q", raw, got)
		}
		if again := NormalizePowerState(string(got)); again != got {
			t.Fatalf("not stable: %q → %q → %q", raw, got, again)
		}
	})
}

// FuzzParsePowerAction: actions come from API callers.
func FuzzParsePowerAction(f *testing.F) {
	for _, s := range []string{"on", "off", "soft", "cycle", "reset", "ON ", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParsePowerAction(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || a != "" {
				t.Fatalf("ParsePowerAction(%q) = %q, %v", s, a, err)
			}
			return
		}
		if b, err := ParsePowerAction(string(a)); err != nil || b != a {
			t.Fatalf("not stable: %q → %q → %q, %v", s, a, b, err)
		}
	})
}
