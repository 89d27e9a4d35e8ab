package dhcp

import (
	"bytes"
	"context"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandle feeds raw bytes through the same path as the socket: parse,
// then Handle. No input may panic; garbage gets no reply; a reply goes
// only to a registered MAC, is a BOOTREPLY of the same transaction and
// encodes again, and appendPacket encodes every packet as ToBytes does.
func FuzzHandle(f *testing.F) {
	seeds := []*dhcpv4.DHCPv4{
		discover(f, macPXE),
		discover(f, macPXE, pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", "iPXE")...),
		discover(f, macNoPXE, dhcpv4.WithGatewayIP([]byte{10, 50, 0, 1})),
		request(f, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress([]byte{10, 99, 0, 10}))),
		request(f, macPXE, dhcpv4.WithClientIP([]byte{10, 99, 0, 10})),
		request(f, macPXE, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP([]byte{10, 99, 0, 10})),
		request(f, macPXE, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP([]byte{10, 99, 0, 10})),
	}
	for _, s := range seeds {
		f.Add(s.ToBytes())
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})
	st := testStore(f, true)
	servers := []*Server{testServer(f, ModeReservation, st, nil), testServer(f, ModeProxy, st, nil)}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := dhcpv4.FromBytes(raw)
		if err != nil {
			return
		}
		// The server's encoder writes what dhcpv4's does, for any packet.
		if got, want := appendPacket(nil, req), req.ToBytes(); !bytes.Equal(got, want) {
			t.Fatalf("appendPacket differs from ToBytes:\n got %x\nwant %x", got, want)
		}
		for _, s := range servers {
			reply, dst := s.Handle(ctx, req)
			if reply == nil {
				continue
			}
			if dst == nil {
				t.Fatalf("%s: reply without destination", s.opts.Mode)
			}
			if mac := req.ClientHWAddr.String(); mac != macPXE.String() && mac != macNoPXE.String() {
				t.Fatalf("%s: reply to unregistered MAC %s", s.opts.Mode, mac)
			}
			if reply.OpCode != dhcpv4.OpcodeBootReply || reply.TransactionID != req.TransactionID {
				t.Fatalf("%s: bad reply %s", s.opts.Mode, reply.Summary())
			}
			if !bytes.Equal(appendPacket(nil, reply), reply.ToBytes()) {
				t.Fatalf("%s: appendPacket differs from ToBytes for the reply", s.opts.Mode)
			}
			if _, err := dhcpv4.FromBytes(reply.ToBytes()); err != nil {
				t.Fatalf("%s: reply does not parse back: %v", s.opts.Mode, err)
			}
		}
	})
}
