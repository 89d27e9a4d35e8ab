package dhcp

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// TestAppendPacket holds appendPacket to dhcpv4's ToBytes, byte for byte,
// on replies the server builds and on packets with what they never carry
// (long options, option 82, odd hardware address lengths, names that fill
// their fields).
func TestAppendPacket(t *testing.T) {
	ctx := context.Background()
	st := testStore(t, true)
	res, prx := testServer(t, ModeReservation, st, nil), testServer(t, ModeProxy, st, nil)
	relay := dhcpv4.WithGatewayIP(net.IPv4(10, 50, 0, 1))
	agentInfo := dhcpv4.WithGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 3, 'a', 'b', 'c'})
	packets := map[string]*dhcpv4.DHCPv4{
		"long option, empty option, 82, sname and file full": func() *dhcpv4.DHCPv4 {
			d := discover(t, macPXE, agentInfo,
				dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, bytes.Repeat([]byte{'x'}, 600)),
				dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(224), nil))
			d.ServerHostName, d.BootFileName = strings.Repeat("s", 80), strings.Repeat("f", 200)
			return d
		}(),
		"hardware address of 20 bytes": discover(t, append(macPXE, make([]byte, 14)...)),
		"no hardware address":          discover(t, nil),
	}
	replies := map[string]*dhcpv4.DHCPv4{
		"offer, relayed, agent info": discover(t, macPXE, relay, agentInfo),
		"offer, PXE":                 discover(t, macPXE, pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")...),
		"ack":                        request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))),
		"nak":                        request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77)))),
		"inform":                     func() *dhcpv4.DHCPv4 { d, _ := dhcpv4.NewInform(macNoPXE, net.IPv4(10, 50, 0, 11)); return d }(),
	}
	for name, req := range replies {
		r, _ := res.Handle(ctx, req)
		if r == nil {
			t.Fatalf("%s: no reply", name)
		}
		packets["reply: "+name] = r
	}
	r, _ := prx.Handle(ctx, discover(t, macPXE, pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", "iPXE")...))
	if r == nil {
		t.Fatal("proxy: no reply")
	}
	packets["reply: proxy"] = r
	for name, d := range packets {
		want := d.ToBytes()
		prefix := []byte("kept")
		got := appendPacket(prefix, d)
		if !bytes.Equal(got[:4], prefix) || !bytes.Equal(got[4:], want) {
			t.Errorf("%s: appendPacket differs from ToBytes:\n got %x\nwant %x", name, got[4:], want)
		}
	}
}
