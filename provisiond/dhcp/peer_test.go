package dhcp

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/netns"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestPeerNclient4 runs the server on one end of a veth pair and the Go
// nclient4 client (raw sockets, like firmware) on the other.
func TestPeerNclient4(t *testing.T) {
	l := newLink(t, macPXE.String())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := testStore(t, false)
	s := testServer(t, ModeReservation, st, prometheus.NewRegistry())

	var conn net.PacketConn
	netns.In(t, l.srv, func() {
		c, err := server4.NewIPv4UDPConn("vsrv", &net.UDPAddr{Port: dhcpv4.ServerPort})
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	})
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.ServeConn(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-serveErr; err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})

	var client *nclient4.Client
	netns.In(t, l.cli, func() {
		c, err := nclient4.New("vcli", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
		if err != nil {
			t.Fatal(err)
		}
		client = c
	})
	defer func() { _ = client.Close() }() // test cleanup

	// DORA, as a BIOS PXE ROM.
	lease, err := client.Request(ctx, pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")...)
	if err != nil {
		t.Fatalf("DORA: %v", err)
	}
	if got := lease.ACK.YourIPAddr.String(); got != "10.99.0.10" {
		t.Errorf("ACK yiaddr = %s, want 10.99.0.10", got)
	}
	if got := lease.ACK.BootFileName; got != "undionly.kpxe" {
		t.Errorf("ACK boot file = %q, want undionly.kpxe", got)
	}
	if got := lease.ACK.ServerIPAddr.String(); got != "10.99.0.1" {
		t.Errorf("ACK siaddr = %s, want 10.99.0.1", got)
	}
	if _, err := st.GetHardwareByMAC(ctx, macPXE.String()); err != nil {
		t.Fatal(err)
	}
	if l, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(macPXE.String()) }); err != nil || l.IP != "10.99.0.10" {
		t.Fatalf("stored lease = %+v, %v", l, err)
	}

	// RENEWING: the client owns the address now; the ACK comes unicast.
	run(t, "ip", "-n", l.cli, "addr", "add", "10.99.0.10/16", "dev", "vcli")
	renewed, err := client.Renew(ctx, lease)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if got := renewed.ACK.YourIPAddr.String(); got != "10.99.0.10" {
		t.Errorf("renew ACK yiaddr = %s", got)
	}

	// INIT-REBOOT asking for a foreign address: NAK.
	bad, err := dhcpv4.New(dhcpv4.WithHwAddr(macPXE), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77))))
	if err != nil {
		t.Fatal(err)
	}
	nak, err := client.SendAndRead(ctx, client.RemoteAddr(), bad, nclient4.IsMessageType(dhcpv4.MessageTypeNak, dhcpv4.MessageTypeAck))
	if err != nil {
		t.Fatalf("INIT-REBOOT with a wrong address: %v", err)
	}
	if nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("INIT-REBOOT with a wrong address got %s, want NAK", nak.MessageType())
	}

	// RELEASE: unicast from the client's address (RFC 2131 section 4.4.6;
	// nclient4's raw socket would send it from 0.0.0.0, which Linux drops
	// as a martian unless broadcast), no reply, the lease disappears.
	rel, err := dhcpv4.NewReleaseFromACK(renewed.ACK)
	if err != nil {
		t.Fatal(err)
	}
	var relConn net.PacketConn
	netns.In(t, l.cli, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 0, 10), Port: dhcpv4.ClientPort})
		if err != nil {
			t.Fatal(err)
		}
		relConn = c
	})
	defer func() { _ = relConn.Close() }() // test cleanup
	if _, err := relConn.WriteTo(rel.ToBytes(), &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: dhcpv4.ServerPort}); err != nil {
		t.Fatalf("release: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(macPXE.String()) })
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease still stored 5 s after RELEASE (err %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An unknown MAC gets nothing.
	var stranger *nclient4.Client
	netns.In(t, l.cli, func() {
		c, err := nclient4.New("vcli", nclient4.WithHWAddr(macOther), nclient4.WithTimeout(time.Second), nclient4.WithRetry(1))
		if err != nil {
			t.Fatal(err)
		}
		stranger = c
	})
	defer func() { _ = stranger.Close() }() // test cleanup
	if offer, err := stranger.DiscoverOffer(ctx); err == nil {
		t.Errorf("unknown MAC got an offer: %v", offer.Summary())
	}
	if got := counterValue(t, s.m.unknownMAC); got < 1 {
		t.Errorf("unknown MAC counter = %v, want ≥ 1", got)
	}
}

// TestPeerRelay plays a DHCP relay agent on the client side (10.99.0.2): its
// relayed DISCOVER must be answered by unicast to 10.99.0.2:67.
func TestPeerRelay(t *testing.T) {
	l := newLink(t, "52:54:00:aa:bb:cc")
	run(t, "ip", "-n", l.cli, "addr", "add", "10.99.0.2/16", "dev", "vcli")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := testServer(t, ModeReservation, testStore(t, true), nil)
	var srvConn, relay net.PacketConn
	netns.In(t, l.srv, func() {
		c, err := server4.NewIPv4UDPConn("vsrv", &net.UDPAddr{Port: dhcpv4.ServerPort})
		if err != nil {
			t.Fatal(err)
		}
		srvConn = c
	})
	netns.In(t, l.cli, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 0, 2), Port: dhcpv4.ServerPort})
		if err != nil {
			t.Fatal(err)
		}
		relay = c
	})
	defer func() { _ = relay.Close() }() // test cleanup
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.ServeConn(ctx, srvConn) }()
	defer func() { cancel(); <-serveErr }() //nolint:errcheck // the server stopping is all that matters here

	// hw-nopxe lives on 10.50.0.0/16, a rack behind the relay.
	req := discover(t, macNoPXE, dhcpv4.WithGatewayIP(net.IPv4(10, 99, 0, 2)), func(d *dhcpv4.DHCPv4) { d.HopCount = 1 })
	buf := make([]byte, 1500)
	for attempt := 0; ; attempt++ {
		if _, err := relay.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: dhcpv4.ServerPort}); err != nil {
			t.Fatal(err)
		}
		_ = relay.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			if attempt < 2 {
				continue
			}
			t.Fatalf("relay got no reply: %v", err)
		}
		reply, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if from.String() != "10.99.0.1:67" || reply.MessageType() != dhcpv4.MessageTypeOffer || reply.YourIPAddr.String() != "10.50.0.11" ||
			reply.GatewayIPAddr.String() != "10.99.0.2" {
			t.Fatalf("relay got %s from %s: %s", reply.MessageType(), from, reply.Summary())
		}
		return
	}
}
