package dhcp

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// An iPXE client of hardware whose netboot is off gets its address and no
// boot file, plus no-pxedhcp so it does not wait ~3 s for a ProxyDHCP offer
// before booting on from its disk (e2e TestE2ENetbootOff measures it).
func TestNetbootOffIPXE(t *testing.T) {
	ipxeReq := append(pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "iPXE"),
		dhcpv4.WithGeneric(ipxeEncap, []byte{19, 1, 1, 17, 1, 1})) // iPXE's feature flags (HTTP, PXE ext)
	for name, req := range map[string]*dhcpv4.DHCPv4{
		"discover": discover(t, macNoPXE, ipxeReq...),
		"request": request(t, macNoPXE, append(ipxeReq, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{10, 50, 0, 11})))...),
	} {
		t.Run(name, func(t *testing.T) {
			s := testServer(t, ModeReservation, testStore(t, true), nil)
			r, err := dhcpv4.FromBytes(req.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			typ := "OFFER"
			if name == "request" {
				typ = "ACK"
			}
			want := &summary{Type: typ, YIAddr: "10.50.0.11", CIAddr: "0.0.0.0", SIAddr: "10.99.0.1", Mask: "255.255.0.0", Router: "10.50.0.1",
				Host: "node2", Domain: "default.example", LeaseTime: s.opts.LeaseTime, ServerID: "10.99.0.1", Dst: "255.255.255.255:68",
				Opt175: []byte{176, 1, 1}}
			if diff := cmp.Diff(want, summarize(s.Handle(context.Background(), r))); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}
