package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestHardwareFromPBRejects: the Admin API refuses hardware that the
// provider refuses at plan time, with hwspec's words after the field.
func TestHardwareFromPBRejects(t *testing.T) {
	base := func(edit func(h *pb.Hardware)) *pb.Hardware {
		h := &pb.Hardware{
			Id: "n1", Hostname: "n1", Disks: []string{"/dev/sda"}, Labels: map[string]string{"rack": "r1"},
			Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01", Ip: "10.0.0.5/24", Gateway: "10.0.0.1", NameServers: []string{"10.0.0.1"}}},
			Bmc:        &pb.BMC{Driver: "ipmi", Address: "10.0.1.5", Port: 623},
		}
		edit(h)
		return h
	}
	for name, tc := range map[string]struct {
		hw   *pb.Hardware
		want string
	}{
		"valid": {hw: base(func(*pb.Hardware) {})},
		"disk escaping /dev": {
			hw:   base(func(h *pb.Hardware) { h.Disks = []string{"/dev/../etc/passwd"} }),
			want: `disks[0]: disk "/dev/../etc/passwd": write the path without '.', '..', '//' or a trailing '/'; want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		},
		"two disks in one entry": {
			hw:   base(func(h *pb.Hardware) { h.Disks = []string{"/dev/sda", "/dev/sda,/dev/sdb"} }),
			want: `disks[1]: disk "/dev/sda,/dev/sdb": one device per entry, of letters, digits and . _ + : @ = / - only`,
		},
		"network address": {
			hw:   base(func(h *pb.Hardware) { h.Interfaces[0].Ip = "10.0.0.0/24" }),
			want: `interfaces[0].ip: address "10.0.0.0/24" is the network address of 10.0.0.0/24, not a host's`,
		},
		"broadcast address": {
			hw:   base(func(h *pb.Hardware) { h.Interfaces[0].Ip = "10.0.0.255/24" }),
			want: `interfaces[0].ip: address "10.0.0.255/24" is the broadcast address of 10.0.0.0/24, not a host's`,
		},
		"gateway is the interface": {
			hw:   base(func(h *pb.Hardware) { h.Interfaces[0].Gateway = "10.0.0.5" }),
			want: `interfaces[0].gateway: gateway "10.0.0.5" is the interface's own address`,
		},
		"1 MiB label value": {
			hw:   base(func(h *pb.Hardware) { h.Labels = map[string]string{"rack": strings.Repeat("x", 1<<20)} }),
			want: `labels: label "rack": label value "` + strings.Repeat("x", 64) + `"... (1048576 bytes): 1048576 characters, at most 256 allowed`,
		},
		"label key with a newline": {
			hw:   base(func(h *pb.Hardware) { h.Labels = map[string]string{"rack\nrow": "r1"} }),
			want: `labels: label key "rack\nrow": want an optional DNS-name prefix and '/', then 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit`,
		},
		"BMC address with a port": {
			hw:   base(func(h *pb.Hardware) { h.Bmc.Address = "10.0.0.5:623" }),
			want: `bmc.address: BMC address "10.0.0.5:623" has a port: set the address 10.0.0.5 and put 623 in the BMC port`,
		},
		"BMC IPv6 address with a port": {
			hw:   base(func(h *pb.Hardware) { h.Bmc.Address = "[fe80::1]:443" }),
			want: `bmc.address: BMC address "[fe80::1]:443" has a port: set the address fe80::1 and put 443 in the BMC port`,
		},
		"BMC URL": {
			hw:   base(func(h *pb.Hardware) { h.Bmc = &pb.BMC{Driver: "redfish", Address: "https://bmc1"} }),
			want: `bmc.address: BMC address "https://bmc1": want a host name or an IP address, not a URL or path`,
		},
		"manual BMC needs no address": {hw: base(func(h *pb.Hardware) { h.Bmc = nil })},
		"address required": {
			hw:   base(func(h *pb.Hardware) { h.Bmc.Address = "" }),
			want: `bmc.address is required for driver "ipmi"`,
		},
		"bad driver": {
			hw:   base(func(h *pb.Hardware) { h.Bmc.Driver = "amt" }),
			want: `bmc.driver: BMC driver "amt": want ipmi, redfish or manual`,
		},
		"multicast MAC": {
			hw:   base(func(h *pb.Hardware) { h.Interfaces[0].Mac = "ff:ff:ff:ff:ff:ff" }),
			want: `interfaces[0].mac: MAC address "ff:ff:ff:ff:ff:ff" is a multicast (group) address, not a network card's`,
		},
		"bad arch": {
			hw:   base(func(h *pb.Hardware) { h.Arch = "arm64" }),
			want: `arch: arch "arm64": want x86_64 or aarch64`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := hardwareFromPB(tc.hw)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("hardwareFromPB error (-want +got):\n%s", d)
			}
		})
	}
}

// TestEventTypesOnTheWire: the event types the store logs reach the
// client as the strings that internal/client names.
func TestEventTypesOnTheWire(t *testing.T) {
	for st, want := range map[store.EventType]string{
		store.EventState:    client.EventState,
		store.EventAction:   client.EventAction,
		store.EventLog:      client.EventLog,
		store.EventPower:    client.EventPower,
		store.EventOperator: client.EventOperator,
		store.EventOSReady:  client.EventOSReady,
	} {
		if got := EventToPB(store.Event{Type: st}, nil).GetType(); got != want {
			t.Errorf("event type %q reaches the client as %q, want %q", st, got, want)
		}
	}
}

// User data sent write-only is never returned by a read.
func TestMachineToPBWithholdsWriteOnlyUserData(t *testing.T) {
	m := MachineToPB(store.Machine{HardwareID: "hw", UserData: "#cloud-config secret", UserDataWriteOnly: true}, nil)
	if m.GetUserData() != "" || !m.GetUserDataWriteOnly() {
		t.Errorf("write-only user data read back: %q (write_only=%v)", m.GetUserData(), m.GetUserDataWriteOnly())
	}
	m = MachineToPB(store.Machine{HardwareID: "hw", UserData: "#cloud-config"}, nil)
	if m.GetUserData() != "#cloud-config" || m.GetUserDataWriteOnly() {
		t.Errorf("plain user data: %q (write_only=%v)", m.GetUserData(), m.GetUserDataWriteOnly())
	}
}
