package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestE2ERelay installs servers that sit on a segment of their own, behind
// a router: a namespace with a leg on each segment, IPv4 forwarding, and
// ISC dhcrelay relaying their DHCP to provisiond, which has no address and
// no socket on the servers' segment. Real terraform installs a BIOS server
// (QEMU's iPXE ROM) and a UEFI one (OVMF's PXE, then snponly.efi over
// TFTP); DHCP, TFTP, HTTP and gRPC all cross the router. The installed
// demo OS reads its metadata from provisiond, which finds it by its routed
// address. Destroy wipes both servers and powers them off.
func TestE2ERelay(t *testing.T) {
	root := requireLab(t)
	lab.RequireRelay(t)
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	uefi := true
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		uefi = false
		t.Logf("OVMF not installed (apt-get install ovmf): both servers boot legacy BIOS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	cfg := rackConfig(root, dir, bin, "e2erl", 2, uefi)
	cfg.Routed = true
	rack := startRackWith(t, ctx, dir, cfg)
	consoles := rack.consoles
	router := rack.Router
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dhcrelay log (tail):\n%s", lab.Tail([]byte(lab.ReadLog(router.Log)), 4000))
		}
	})
	t.Logf("%6.1fs rack up: provisiond %s on %s (namespace %s); router %s/%s (namespace %s) running dhcrelay; %d servers on %s",
		since(start), lab.RackAddress, lab.RackBridge, rack.NS.Name, lab.RouterUplink, lab.RouterGateway, router.NS.Name,
		len(rack.Servers), lab.ServersNetwork)
	admin := rack.admin(t, ctx)
	checkRelayClient(t, ctx, rack, admin)
	t.Logf("%6.1fs plain DHCP client on the servers' segment checked", since(start))

	tf := newTerraform(t, ctx, rack.Rack, root, terraform, filepath.Join(bin, "terraform-provider-baremetal"), dir, "demo")
	tf.run("init", "-input=false", "-no-color")

	// 1. Install both servers through the router.
	fwdBefore, err := router.Forwarded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	marks := map[string]int{}
	for name, c := range consoles {
		marks[name] = c.Len()
	}
	applyStart := time.Now()
	tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs apply: both servers installed in %.1fs", since(start), since(applyStart))
	outputs := tf.machines()
	reDHCP := regexp.MustCompile(`DEMO-OS dhcp iface=\S+ ip=([0-9.]+)/\d+ server=([0-9.]+) router=\[([0-9. ]*)\]`)
	for _, s := range rack.Servers {
		ip := strings.Split(s.Address, "/")[0]
		if m := outputs[s.Name]; m.State != "succeeded" || m.IP != ip {
			t.Errorf("%s: output %+v, want state succeeded and ip %s", s.Name, m, ip)
		}
		checkInstalled(t, ctx, admin, consoles[s.Name], marks[s.Name], s, "revision 1", applyStart)
		checkDisk(t, ctx, filepath.Join(root, "build/images/demo-os.raw"), s, true)
		t.Logf("  %s: iPXE's network configuration (DHCPv4 through the relay, IPv6 router discovery with no RA on this segment) took %s",
			s.Name, ipxeConfigTimes(ctx, consoles[s.Name], marks[s.Name]))
		// The installed OS's DHCP came through the relay: its own routed
		// address, provisiond as the server, the router as its gateway.
		if _, l, err := consoles[s.Name].Wait(ctx, marks[s.Name], reDHCP); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		} else if m := reDHCP.FindStringSubmatch(l.Text); m[1] != ip || m[2] != lab.RackAddress || m[3] != lab.RouterGateway {
			t.Errorf("%s: installed OS: %q, want ip %s from server %s, router %s", s.Name, l.Text, ip, lab.RackAddress, lab.RouterGateway)
		}
	}
	fwdAfter, err := router.Forwarded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rackFwd, err := rack.NS.Forwarded(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("  router forwarded %d IPv4 datagrams during apply; provisiond's namespace (holding both bridges) %d in all", fwdAfter-fwdBefore, rackFwd)
	if rackFwd != 0 {
		t.Errorf("provisiond's namespace forwarded %d datagrams: it must only switch the servers' segment, the router route it", rackFwd)
	}
	// The agent OS alone is megabytes over HTTP: thousands of datagrams.
	if fwdAfter-fwdBefore < 1000 {
		t.Errorf("router forwarded only %d datagrams during the install: the traffic did not cross it", fwdAfter-fwdBefore)
	}
	checkRelayed(t, rack, router)
	// The leases provisiond recorded are the routed addresses: read from
	// its store with the daemon stopped (it holds the file's lock), then
	// started again.
	if err := rack.Daemon.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkRelayLeases(t, ctx, rack)
	if err := rack.Daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%6.1fs leases checked, provisiond restarted", since(start))

	// 2. Destroy: every server boots the agent again through the relay,
	// its disk is wiped and it is powered off.
	destroyAndCheck(t, ctx, tf, rack, admin, start)
}

// checkRelayed checks, server by server, what crossed the relay: dhcrelay
// forwarded its requests to provisiond and provisiond's replies back to
// its routed address; provisiond saw every DHCP message of it with the
// router's giaddr and none straight from the segment; it served the iPXE
// script (minting the agent's token), TFTP (UEFI) and the metadata to the
// routed address, and refused no source.
func checkRelayed(t *testing.T, rack *rackUnderTest, router *lab.Router) {
	t.Helper()
	rlog := lab.ReadLog(router.Log)
	plog := lab.ReadLog(rack.Daemon.Log)
	for _, s := range rack.Servers {
		ip := strings.Split(s.Address, "/")[0]
		var up, down int
		for _, line := range strings.Split(rlog, "\n") {
			switch {
			case strings.Contains(line, "Forwarded BOOTREQUEST for "+s.MAC+" to "+lab.RackAddress):
				up++
			case strings.Contains(line, "Forwarded BOOTREPLY for "+s.MAC+" to "):
				down++
			}
		}
		if up == 0 || down == 0 {
			t.Errorf("%s: dhcrelay forwarded %d requests to provisiond and %d replies back", s.Name, up, down)
		}
		relayed, direct := map[string]int{}, 0
		var script, tftp, meta int
		for _, line := range strings.Split(plog, "\n") {
			switch {
			case strings.Contains(line, "component=dhcp") && strings.Contains(line, "mac="+s.MAC):
				if r := logField(line, "relay"); r == lab.RouterGateway {
					if reply := logField(line, "reply"); reply != "" {
						relayed[reply]++
					}
				} else {
					direct++
					t.Errorf("%s: provisiond got DHCP not relayed by %s: %s", s.Name, lab.RouterGateway, line)
				}
			case strings.Contains(line, `msg="iPXE script: boot the agent OS"`) && strings.Contains(line, "mac="+s.MAC):
				if strings.Contains(line, "remote="+ip+":") {
					script++
				} else {
					t.Errorf("%s: agent OS script for another source than %s: %s", s.Name, ip, line)
				}
			case strings.Contains(line, `msg="TFTP transfer done"`) && strings.Contains(line, "remote="+ip+":"):
				tftp++
			case strings.Contains(line, `msg="metadata request"`) && strings.Contains(line, "ip="+ip+" "):
				meta++
			case strings.Contains(line, "mac="+s.MAC) && (strings.Contains(line, "wrong_source") || strings.Contains(line, "no token minted")):
				t.Errorf("%s: %s", s.Name, line)
			}
		}
		if relayed["OFFER"] == 0 || relayed["ACK"] == 0 {
			t.Errorf("%s: provisiond's relayed replies %v: want OFFERs and ACKs", s.Name, relayed)
		}
		if script == 0 {
			t.Errorf("%s: provisiond never served the agent OS script to %s", s.Name, ip)
		}
		if s.BMC.VM.Firmware == lab.UEFI && tftp == 0 {
			t.Errorf("%s: no TFTP transfer to %s: OVMF's PXE fetches snponly.efi through the router", s.Name, ip)
		}
		if meta == 0 {
			t.Errorf("%s: provisiond answered no metadata request from %s", s.Name, ip)
		}
		t.Logf("  %s (%s, %s): dhcrelay forwarded %d requests up and %d replies down; provisiond's replies with giaddr %s %v, %d not relayed; agent OS script to %s %d time(s), %d TFTP transfers, %d metadata requests",
			s.Name, s.BMC.VM.FirmwareName(), ip, up, down, lab.RouterGateway, relayed, direct, ip, script, tftp, meta)
	}
}

// checkRelayLeases opens provisiond's stopped store and checks that every
// server's lease is its routed address.
func checkRelayLeases(t *testing.T, ctx context.Context, rack *rackUnderTest) {
	t.Helper()
	st, err := store.Open(filepath.Join(rack.Config.Dir, "provisiond", "provisiond.db"), store.Options{})
	if err != nil {
		t.Fatalf("store after the run: %v", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}()
	var leases []string
	err = st.View(ctx, func(tx *store.Tx) error {
		for _, s := range rack.Servers {
			l, err := tx.Lease(s.MAC)
			if errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: provisiond recorded no lease for %s", s.Name, s.MAC)
				continue
			}
			if err != nil {
				return err
			}
			if want := strings.Split(s.Address, "/")[0]; l.IP != want {
				t.Errorf("%s: lease %s, want its routed address %s", s.Name, l.IP, want)
			}
			leases = append(leases, fmt.Sprintf("%s: %s until %s", s.Name, l.IP, l.Expires.Format(time.RFC3339)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("  leases in provisiond's store after the run: %s", strings.Join(leases, "; "))
}

// A plain DHCP client on the servers' segment of TestE2ERelay.
const (
	relayClientMAC = "52:54:00:b0:00:98"
	relayClientIP  = "10.98.0.50"
)

// checkRelayClient puts a plain DHCP client (a namespace with a veth into
// the servers' bridge) on the servers' segment. Unregistered, its DISCOVER
// crosses the relay and gets no answer; registered, it gets its
// reservation through the relay (DORA), and its renewal at T1, sent by
// unicast from its routed address straight to provisiond (RFC 2131 4.4.5:
// no relay on that path), is ACKed back across the router.
func checkRelayClient(t *testing.T, ctx context.Context, rack *rackUnderTest, admin *client.Client) {
	t.Helper()
	ns := clientNS(t, ctx, rack.NS, lab.ServersBridge, "e2erl-cl", "cl", relayClientMAC)
	newClient := func() *nclient4.Client {
		var (
			c   *nclient4.Client
			err error
		)
		inNS(t, ns.Name, func() {
			c, err = nclient4.New("cl0", nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(2))
		})
		if err != nil {
			t.Fatalf("DHCP client on cl0: %v", err)
		}
		return c
	}

	// Unregistered: relayed, and provisiond stays silent.
	c := newClient()
	if offer, err := c.DiscoverOffer(ctx); err == nil {
		t.Errorf("unregistered %s got an offer through the relay: %s", relayClientMAC, offer.Summary())
	} else if !errors.Is(err, nclient4.ErrNoResponse) {
		t.Errorf("DISCOVER of unregistered %s: %v", relayClientMAC, err)
	}
	_ = c.Close() // the client's raw socket

	hw, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Hostname:   "relay-client",
		Interfaces: []*pb.Interface{{Mac: relayClientMAC, Ip: fmt.Sprintf("%s/%d", relayClientIP, lab.ServersPrefix), Gateway: lab.RouterGateway}},
		Bmc:        &pb.BMC{Driver: "manual"},
		Netboot:    &pb.Netboot{AllowPxe: false},
	}})
	if err != nil {
		t.Fatalf("register %s: %v", relayClientMAC, err)
	}
	defer func() {
		if _, err := admin.DeleteHardware(ctx, &pb.DeleteHardwareRequest{Id: hw.GetId()}); err != nil {
			t.Errorf("delete the relay client's hardware: %v", err)
		}
	}()

	// Registered: DORA through the relay.
	c = newClient()
	lease, err := c.Request(ctx)
	_ = c.Close() // the client's raw socket
	if err != nil {
		t.Fatalf("DORA of %s through the relay: %v", relayClientMAC, err)
	}
	ack := lease.ACK
	if ack.YourIPAddr.String() != relayClientIP || len(ack.Router()) != 1 || ack.Router()[0].String() != lab.RouterGateway ||
		ack.ServerIdentifier().String() != lab.RackAddress || ack.GatewayIPAddr.String() != lab.RouterGateway {
		t.Fatalf("ACK through the relay: %s\nwant yiaddr %s, router %s, server id %s, giaddr %s",
			ack.Summary(), relayClientIP, lab.RouterGateway, lab.RackAddress, lab.RouterGateway)
	}
	if ack.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		t.Errorf("the ACK reached the client with option 82: dhcrelay strips what it added")
	}

	// Renewal at T1: the client, now configured, unicasts to provisiond.
	for _, st := range [][]string{
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", relayClientIP, lab.ServersPrefix), "dev", "cl0"},
		{"ip", "route", "add", "default", "via", lab.RouterGateway},
	} {
		if err := ns.Run(ctx, st[0], st[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	var conn *net.UDPConn
	inNS(t, ns.Name, func() {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(relayClientIP), Port: dhcpv4.ClientPort})
	})
	if err != nil {
		t.Fatalf("client socket %s:68: %v", relayClientIP, err)
	}
	defer func() { _ = conn.Close() }() // ours
	mac, _ := net.ParseMAC(relayClientMAC)
	renew, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
		dhcpv4.WithClientIP(net.ParseIP(relayClientIP)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(renew.ToBytes(), &net.UDPAddr{IP: net.ParseIP(lab.RackAddress), Port: dhcpv4.ServerPort}); err != nil {
		t.Fatalf("send the renewal: %v", err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer to the unicast renewal of %s: %v", relayClientIP, err)
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.TransactionID != renew.TransactionID {
			continue
		}
		if p.MessageType() != dhcpv4.MessageTypeAck || p.YourIPAddr.String() != relayClientIP || !p.GatewayIPAddr.IsUnspecified() {
			t.Fatalf("renewal answered from %s with %s", from, p.Summary())
		}
		t.Logf("  relay client %s: unregistered, no offer; registered, ACK %s through the relay; renewal ACKed by unicast from %s across the router",
			relayClientMAC, ack.YourIPAddr, from)
		break
	}
	// What crossed the relay: its DISCOVERs, unknown then known, and no
	// renewal (that went straight to provisiond).
	var relayed int
	for _, line := range strings.Split(lab.ReadLog(rack.Router.Log), "\n") {
		if strings.Contains(line, "Forwarded BOOTREQUEST for "+relayClientMAC+" to "+lab.RackAddress) {
			relayed++
		}
	}
	if relayed < 3 { // at least the unknown DISCOVER, the known DISCOVER and REQUEST
		t.Errorf("dhcrelay forwarded %d requests of %s", relayed, relayClientMAC)
	}
	var unknown, renewed bool
	for _, line := range strings.Split(lab.ReadLog(rack.Daemon.Log), "\n") {
		if !strings.Contains(line, "mac="+relayClientMAC) {
			continue
		}
		unknown = unknown || strings.Contains(line, `msg="no reply to unknown MAC"`) && logField(line, "relay") == lab.RouterGateway
		renewed = renewed || strings.Contains(line, "xid="+renew.TransactionID.String()) && strings.Contains(line, "reply=ACK") && logField(line, "relay") == ""
	}
	if !unknown {
		t.Errorf("provisiond did not log the unregistered %s as relayed by %s", relayClientMAC, lab.RouterGateway)
	}
	if !renewed {
		t.Errorf("provisiond did not log the renewal of %s as an unrelayed ACK", relayClientMAC)
	}
}

// ipxeConfigTimes lists how long each iPXE stage since console line from
// took to configure its network: from its link coming up to its
// "Configuring (net0 ...) ok".
func ipxeConfigTimes(ctx context.Context, c *lab.Console, from int) string {
	reUp := regexp.MustCompile(`\[Link:up`)
	reDone := regexp.MustCompile(`Configuring \(net0 .*ok`)
	var out []string
	for {
		// Everything looked for is already on the console: wait briefly.
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		i, up, err := c.Wait(wctx, from, reUp)
		if err != nil {
			cancel()
			break
		}
		j, done, err := c.Wait(wctx, i, reDone)
		cancel()
		if err != nil {
			break
		}
		out = append(out, fmt.Sprintf("%.1fs", done.At.Sub(up.At).Seconds()))
		from = j + 1
	}
	if len(out) == 0 {
		return "(no iPXE stage seen)"
	}
	return strings.Join(out, ", ")
}
