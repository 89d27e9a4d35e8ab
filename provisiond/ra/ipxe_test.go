package ra

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/netns"
)

// ipxeROM is the NIC boot ROM QEMU loads for virtio-net (Debian's
// ipxe-qemu): the same iPXE that LAB.md pitfall 4 measured.
const ipxeROM = "/usr/lib/ipxe/qemu/pxe-virtio.rom"

// TestIPXEConfiguresAtOnce boots QEMU's own iPXE ROM (BIOS, TCG) in a
// namespace with a DHCPv4 server that answers at once, and times iPXE's
// "Configuring (net0 ...)" step: from its link-up line to the "ok". iPXE
// waits there for both DHCPv4 and IPv6 router discovery; without an
// advertisement the latter gives up only after about 16 s on this machine
// (LAB.md pitfall 4; ipxe src/net/ndp.c retries solicitations up to its
// IPV6CONF_MAX_TIMEOUT). With the responder the step must end long before
// that, and the responder must have answered the VM's own solicitation.
// The VM is on a bare tap, and on a tap in a bridge with the responder on
// the bridge, as the lab's racks are (multicast snooping must not keep
// ff02::2 from us).
//
// RA_IPXE_BASELINE=1 also times the tap boot without the responder, which
// shows the wait this package removes.
func TestIPXEConfiguresAtOnce(t *testing.T) {
	lab.RequireRoot(t)
	lab.RequireBinaries(t, "ip", "sysctl", lab.QEMUBinary)
	if _, err := os.Stat(ipxeROM); err != nil {
		t.Skipf("QEMU's iPXE ROM is missing (Debian ipxe-qemu, pulled in by qemu-system-x86): %v", err)
	}
	if testing.Short() {
		t.Skip("boots QEMU: skipped in -short")
	}
	for _, bridge := range []bool{false, true} {
		name := map[bool]string{false: "tap", true: "bridge"}[bridge]
		t.Run(name, func(t *testing.T) {
			withRA := bootIPXE(t, bridge, true)
			// The console is read every 100 ms: 0 means within one read.
			t.Logf("iPXE Configuring step with the responder: %v", withRA)
			// 8 s is half iPXE's own give-up time: only an answered
			// solicitation ends the step that early; DHCPv4 alone does not.
			if withRA > 8*time.Second {
				t.Errorf("iPXE took %v to configure with the responder, want well under its ~16 s router discovery timeout", withRA)
			}
			if !bridge && os.Getenv("RA_IPXE_BASELINE") != "" {
				without := bootIPXE(t, false, false)
				t.Logf("iPXE Configuring step without the responder: %v (the responder saves %v per iPXE stage)", without, without-withRA)
			}
		})
	}
}

// bootIPXE boots a VM into iPXE and returns how long "Configuring" took.
// The VM's tap is bare, or a port of a bridge; the DHCP server and the
// responder serve the tap or the bridge.
func bootIPXE(t *testing.T, bridge, responder bool) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns, err := lab.NewNetNS(ctx, "bmra-q")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	}()
	// The tap has no carrier, hence no link-local address, until QEMU
	// opens it (nor has a bridge without a live port): the responder
	// starts before that, as provisiond does.
	dev := "tap0"
	if bridge {
		dev = "br0"
		err = ns.AddBridge(ctx, dev, "10.99.0.1/24")
		if err == nil {
			err = ns.AddBridgePort(ctx, "tap0", dev)
		}
	} else {
		err = ns.AddTap(ctx, dev, "10.99.0.1/24")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Run(ctx, "sysctl", "-q", "-w", "net.ipv6.conf."+dev+".router_solicitations=0"); err != nil {
		t.Fatal(err)
	}
	stopDHCP := serveDHCP(t, ns, dev, net.IPv4(10, 99, 0, 1), net.IPv4(10, 99, 0, 10))
	defer stopDHCP()

	var r *Responder
	var stop func()
	if responder {
		r = New(testLogger(t), nil, Options{Interface: dev})
		stop = serveIn(t, ns.Name, r)
		defer stop()
	}

	vm := lab.VM{Name: "ra-ipxe", Dir: filepath.Join(t.TempDir(), "vm"), Tap: "tap0", ExtraArgs: []string{"-no-reboot"}}
	con, err := lab.FollowConsole(ctx, vm.SerialPath(), filepath.Join(vm.Dir+"-console.txt"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := vm.Start(ctx, ns, "n")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	_, up, err := con.Wait(ctx, 0, regexp.MustCompile(`\[Link:up`))
	if err != nil {
		t.Fatal(err)
	}
	_, done, err := con.Wait(ctx, 0, regexp.MustCompile(`Configuring \(net0 .*\).* ok`))
	if err != nil {
		t.Fatal(err)
	}
	took := done.At.Sub(up.At)
	t.Logf("%s\n%s", up.Text, done.Text)
	if responder {
		stop() // its counters are final
		if got := value(t, r.m.advertisements.WithLabelValues("unicast")) + value(t, r.m.advertisements.WithLabelValues("multicast")); got < 1 {
			t.Errorf("the responder sent %v advertisements, want at least one to the VM", got)
		}
	}
	return took
}

// serveDHCP answers DHCPv4 on dev inside ns with a fixed address and
// no boot file: just enough for iPXE's DHCP half of "Configuring" to end at
// once. Option 175/176 tells iPXE not to wait for ProxyDHCP (LAB.md pitfall 3).
func serveDHCP(t *testing.T, ns *lab.NetNS, dev string, server, client net.IP) func() {
	t.Helper()
	handler := func(conn net.PacketConn, _ net.Addr, req *dhcpv4.DHCPv4) {
		var mt dhcpv4.MessageType
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			mt = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			mt = dhcpv4.MessageTypeAck
		default:
			return
		}
		reply, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(mt),
			dhcpv4.WithYourIP(client),
			dhcpv4.WithServerIP(server),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithLeaseTime(3600),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
			dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{176, 1, 1}),
		)
		if err != nil {
			return
		}
		// The client has no address yet: broadcast on the bound interface
		// (LAB.md pitfall 6).
		_, _ = conn.WriteTo(reply.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
	}
	var s *server4.Server
	var err error
	netns.In(t, ns.Name, func() { s, err = server4.NewServer(dev, &net.UDPAddr{Port: dhcpv4.ServerPort}, handler) })
	if err != nil {
		t.Fatalf("DHCP server on %s: %v", dev, err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(); close(done) }()
	return func() {
		if err := s.Close(); err != nil {
			t.Errorf("stop DHCP server: %v", err)
		}
		<-done
	}
}
