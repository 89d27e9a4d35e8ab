package ra

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/netns"
)

// Addresses of the two ends of the test link. cliMAC is in QEMU's range,
// as the machines that solicit are.
var (
	srvMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	cliMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
)

func testLogger(t testing.TB) *slog.Logger {
	if _, fuzz := t.(*testing.F); testing.Verbose() && !fuzz {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// link is two network namespaces joined by a veth pair: vsrv (srvMAC) in
// srv, where the responder runs, and vcli (cliMAC) in cli, the host that
// solicits. Neither kernel sends solicitations of its own
// (router_solicitations=0), so every one on the wire is the test's, and DAD
// is off so the link-local addresses are usable at once. Nothing leaves the
// namespaces; both are deleted in cleanup.
type link struct {
	srv, cli     *netns.NS
	srvLL, cliLL netip.Addr
}

func newLink(t *testing.T) link {
	t.Helper()
	netns.Require(t, "sysctl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var l link
	var err error
	for _, ns := range []struct {
		p      **netns.NS
		prefix string
	}{{&l.srv, "bmra-s"}, {&l.cli, "bmra-c"}} {
		if *ns.p, err = netns.New(ctx, ns.prefix); err != nil {
			t.Fatal(err)
		}
		n := *ns.p
		t.Cleanup(func() {
			if err := n.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	must := func(ns *netns.NS, args ...string) {
		t.Helper()
		if err := ns.Run(ctx, args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := netns.AddVeth(ctx, l.srv, "vsrv", srvMAC.String(), l.cli, "vcli", cliMAC.String()); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		ns  *netns.NS
		dev string
	}{{l.srv, "vsrv"}, {l.cli, "vcli"}} {
		must(side.ns, "sysctl", "-q", "-w", "net.ipv6.conf."+side.dev+".accept_dad=0")
		must(side.ns, "sysctl", "-q", "-w", "net.ipv6.conf."+side.dev+".router_solicitations=0")
		must(side.ns, "ip", "link", "set", side.dev, "up")
	}
	l.srvLL = waitLinkLocal(t, l.srv, "vsrv")
	l.cliLL = waitLinkLocal(t, l.cli, "vcli")
	return l
}

// waitLinkLocal returns dev's link-local address once the kernel has made it
// (when the veth's carrier comes up).
func waitLinkLocal(t *testing.T, ns *netns.NS, dev string) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ll netip.Addr
		var err error
		netns.In(t, ns.Name, func() {
			var ifi *net.Interface
			if ifi, err = net.InterfaceByName(dev); err == nil {
				_, ll, err = linkLocal(ifi.Index)
			}
		})
		if err == nil {
			return ll
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link-local address on %s in %s: %v", dev, ns.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveIn runs r.Serve inside ns on a thread of its own until stop is
// called or the test ends. stop checks that Serve returned nil promptly;
// once it has, every counter Serve touches is final, which is when tests
// read them (the peer may see an advertisement before the responder has
// counted it).
func serveIn(t *testing.T, ns string, r *Responder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, left in ns, ends with the goroutine.
		runtime.LockOSThread()
		if err := netns.Enter(ns); err != nil {
			errc <- err
			return
		}
		errc <- r.Serve(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Serve did not return within 5 s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newResponder(t *testing.T, opts Options) *Responder {
	if opts.Interface == "" {
		opts.Interface = "vsrv"
	}
	return New(testLogger(t), prometheus.NewRegistry(), opts)
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// peer is the soliciting host: a raw ICMPv6 socket on vcli that lets only
// Router Advertisements in and sends whatever bytes a test gives it.
type peer struct {
	pc       *ipv6.PacketConn
	index    int
	ras      chan advert
	received atomic.Int64 // advertisements read, whether or not a test took them from ras
}

// advert is a Router Advertisement the peer received.
type advert struct {
	at       time.Time
	ra       *ndp.RouterAdvertisement
	src, dst netip.Addr
	hopLimit int
}

func newPeer(t *testing.T, l link) *peer {
	t.Helper()
	p := &peer{ras: make(chan advert, 64)}
	var err error
	var c *icmp.PacketConn
	netns.In(t, l.cli.Name, func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("vcli"); err != nil {
			return
		}
		p.index = ifi.Index
		c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close NDP conn: %v", err)
		}
	})
	p.pc = c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := p.pc.SetICMPFilter(&f); err != nil {
		t.Fatal(err)
	}
	if err := p.pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
		t.Fatal(err)
	}
	go func() {
		b := make([]byte, 1500)
		for {
			n, cm, src, err := p.pc.ReadFrom(b)
			if err != nil {
				close(p.ras)
				return
			}
			m, err := ndp.ParseMessage(b[:n])
			ra, ok := m.(*ndp.RouterAdvertisement)
			if err != nil || !ok || cm == nil || cm.IfIndex != p.index {
				continue
			}
			a := advert{at: time.Now(), ra: ra, hopLimit: cm.HopLimit}
			a.src, _ = netip.AddrFromSlice(src.(*net.IPAddr).IP)
			a.dst, _ = netip.AddrFromSlice(cm.Dst)
			p.received.Add(1)
			p.ras <- a
		}
	}()
	return p
}

// send sends msg, an ICMPv6 message (the kernel fills in the checksum),
// from vcli's link-local address to ff02::2 with the given IP hop limit.
func (p *peer) send(t *testing.T, msg []byte, hopLimit int) {
	t.Helper()
	cm := &ipv6.ControlMessage{HopLimit: hopLimit, IfIndex: p.index}
	if _, err := p.pc.WriteTo(msg, cm, &net.IPAddr{IP: allRouters.AsSlice()}); err != nil {
		t.Fatalf("send ICMPv6 type %d: %v", msg[0], err)
	}
}

// next returns the next advertisement, or false when none comes within d.
func (p *peer) next(d time.Duration) (advert, bool) {
	select {
	case a, ok := <-p.ras:
		return a, ok
	case <-time.After(d):
		return advert{}, false
	}
}

// solicit sends valid solicitations, as a host does, until an
// advertisement comes back: the responder is then up.
func (p *peer) solicit(t *testing.T) advert {
	t.Helper()
	for i := 0; i < 25; i++ {
		p.send(t, rs(0, slla...), 255)
		if a, ok := p.next(200 * time.Millisecond); ok {
			return a
		}
	}
	t.Fatal("no router advertisement within 5 s of soliciting")
	return advert{}
}

// checkNoRouter checks everything that makes an advertisement say "no
// router, nothing to configure".
func checkNoRouter(t *testing.T, a advert, l link) {
	t.Helper()
	ra := a.ra
	if ra.RouterLifetime != 0 {
		t.Errorf("router lifetime %v, want 0", ra.RouterLifetime)
	}
	if ra.ManagedConfiguration || ra.OtherConfiguration {
		t.Errorf("M=%v O=%v, want both clear", ra.ManagedConfiguration, ra.OtherConfiguration)
	}
	if ra.CurrentHopLimit != 0 || ra.ReachableTime != 0 || ra.RetransmitTimer != 0 {
		t.Errorf("hop limit %d, reachable %v, retrans %v: want all unspecified (0)", ra.CurrentHopLimit, ra.ReachableTime, ra.RetransmitTimer)
	}
	var lla net.HardwareAddr
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.LinkLayerAddress:
			if o.Direction == ndp.Source {
				lla = o.Addr
			}
		case *ndp.PrefixInformation:
			t.Errorf("prefix information option %s/%d: want none", o.Prefix, o.PrefixLength)
		default:
			t.Errorf("option %T: want only the source link-layer address", o)
		}
	}
	if lla.String() != srvMAC.String() {
		t.Errorf("source link-layer address %q, want %s", lla, srvMAC)
	}
	if a.hopLimit != 255 {
		t.Errorf("IP hop limit %d, want 255", a.hopLimit)
	}
	if a.src != l.srvLL {
		t.Errorf("sent from %s, want the responder's link-local %s", a.src, l.srvLL)
	}
}

// TestAnswersSolicitation: a host on the link solicits, as iPXE does (from
// its link-local address, with its MAC in a source link-layer address
// option), using the ndp library's client; the answer comes back to it by
// unicast and says there is no router. The host's Linux kernel, which
// processes the same advertisement, then has no default route and no
// address beyond its link-local one.
func TestAnswersSolicitation(t *testing.T) {
	l := newLink(t)
	r := newResponder(t, Options{})
	stop := serveIn(t, l.srv.Name, r)

	var c *ndp.Conn
	var err error
	netns.In(t, l.cli.Name, func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("vcli"); err == nil {
			// Under its index as name, for the reason listen gives.
			byIndex := *ifi
			byIndex.Name = strconv.Itoa(ifi.Index)
			c, _, err = ndp.Listen(&byIndex, ndp.LinkLocal)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("close NDP conn: %v", err)
		}
	}()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		t.Fatal(err)
	}
	if err := c.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst, true); err != nil {
		t.Fatal(err)
	}
	solicitation := &ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: cliMAC}}}
	var a advert
	for i := 0; ; i++ {
		if i == 25 {
			t.Fatal("no router advertisement within 5 s of soliciting")
		}
		if err := c.WriteTo(solicitation, nil, allRouters); err != nil {
			t.Fatalf("send router solicitation: %v", err)
		}
		if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		m, cm, src, err := c.ReadFrom()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ra, ok := m.(*ndp.RouterAdvertisement)
		if !ok {
			t.Fatalf("got %T, want a router advertisement", m)
		}
		a = advert{ra: ra, src: src.WithZone(""), hopLimit: cm.HopLimit}
		a.dst, _ = netip.AddrFromSlice(cm.Dst)
		break
	}
	checkNoRouter(t, a, l)
	if a.dst != l.cliLL {
		t.Errorf("sent to %s, want the soliciting host %s (unicast)", a.dst, l.cliLL)
	}
	stop()
	if got := value(t, r.m.advertisements.WithLabelValues("unicast")); got < 1 {
		t.Errorf("unicast advertisements counted: %v, want at least 1", got)
	}
	if got := value(t, r.m.solicitations); got < 1 {
		t.Errorf("solicitations counted: %v, want at least 1", got)
	}

	// The host's own kernel took nothing from us.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"-6", "route", "show", "default"},
		{"-6", "addr", "show", "dev", "vcli", "scope", "global"},
	} {
		out, err := l.cli.Command(ctx, "ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Errorf("after our advertisement, ip %s in the host's namespace shows:\n%s\nwant nothing", strings.Join(args, " "), s)
		}
	}
}

// TestRdisc6: rdisc6 (Debian ndisc6), an independent implementation of
// router discovery, solicits and prints what it got.
func TestRdisc6(t *testing.T) {
	lab.RequireBinaries(t, "rdisc6")
	l := newLink(t)
	serveIn(t, l.srv.Name, newResponder(t, Options{}))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// -r 10: rdisc6 may solicit before the responder has joined ff02::2.
	out, err := l.cli.Command(ctx, "rdisc6", "-1", "-n", "-r", "10", "-w", "500", "vcli").CombinedOutput()
	if err != nil {
		t.Fatalf("rdisc6: %v\n%s", err, out)
	}
	t.Logf("rdisc6:\n%s", out)
	fields := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for k, want := range map[string]string{
		"Hop limit":                 "undefined (      0x00)",
		"Stateful address conf.":    "No",
		"Stateful other conf.":      "No",
		"Router lifetime":           "0 (0x00000000) seconds",
		"Source link-layer address": srvMAC.String(),
	} {
		if got := fields[k]; !strings.EqualFold(got, want) { // rdisc6 prints MACs in upper case
			t.Errorf("rdisc6 %q: %q, want %q", k, got, want)
		}
	}
	if strings.Contains(string(out), "Prefix") {
		t.Error("rdisc6 shows a prefix: want none")
	}
	if !strings.Contains(string(out), "from "+l.srvLL.String()) {
		t.Errorf("rdisc6 does not show the advertisement coming from %s", l.srvLL)
	}
}

// TestIgnores: other ICMPv6 types, and solicitations that RFC 4861 §6.1.1
// says to drop, get no answer; each drop the responder sees is counted by
// reason. Valid solicitations before and after bracket the bad ones: the
// link keeps order and the responder handles one message at a time, so once
// the last answer is in, every bad message has been dealt with. Then every
// advertisement the host received answers a valid solicitation, one each.
func TestIgnores(t *testing.T) {
	l := newLink(t)
	r := newResponder(t, Options{})
	stop := serveIn(t, l.srv.Name, r)
	p := newPeer(t, l)
	p.solicit(t)

	ra, err := ndp.MarshalMessage(advertisement(cliMAC))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: l.srvLL})
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		msg      []byte
		hopLimit int
		reason   string // counted by the responder; "" when the kernel's filter drops it first
	}{
		{ra, 255, ""},
		{ns, 255, ""},
		{[]byte{128, 0, 0, 0, 0, 1, 0, 1}, 64, ""}, // echo request
		{rs(1, slla...), 255, dropCode},
		{rs(0, slla...), 64, dropHopLimit},
		{rs(0)[:4], 255, dropShort},
		{rs(0, 1, 0, 0, 0, 0, 0, 0, 0), 255, dropOption},
	}
	for _, m := range bad {
		p.send(t, m.msg, m.hopLimit)
	}
	checkNoRouter(t, p.solicit(t), l)
	// Let late answers to repeated solicitations arrive, then stop.
	for n := p.received.Load(); ; n = p.received.Load() {
		time.Sleep(300 * time.Millisecond)
		if p.received.Load() == n {
			break
		}
	}
	stop()

	var drops float64
	for _, m := range bad {
		if m.reason == "" {
			continue
		}
		drops++
		if got := value(t, r.m.dropped.WithLabelValues(m.reason)); got != 1 {
			t.Errorf("dropped{reason=%q} = %v, want 1", m.reason, got)
		}
	}
	if got := value(t, r.m.dropped.WithLabelValues(dropNotRS)); got != 0 {
		t.Errorf("dropped{reason=%q} = %v: the socket's ICMPv6 filter let another type through", dropNotRS, got)
	}
	solicitations := value(t, r.m.solicitations)
	sent := value(t, r.m.advertisements.WithLabelValues("unicast"))
	if sent != solicitations-drops {
		t.Errorf("%v solicitations, %v dropped, %v advertisements: want every other one answered once", solicitations, drops, sent)
	}
	if got := float64(p.received.Load()); got != sent {
		t.Errorf("the host received %v advertisements, the responder sent %v: something else was answered", got, sent)
	}
	if sent < 2 {
		t.Errorf("%v advertisements, want at least 2 (the solicitations before and after)", sent)
	}
}

// sendUnspecified sends a Router Solicitation from the unspecified address,
// as a host does before it has any address, as a raw Ethernet frame on vcli
// (the kernel will not send from :: through a socket).
func sendUnspecified(t *testing.T, fd int, index int) {
	t.Helper()
	src := netip.IPv6Unspecified()
	icmpMsg, err := ndp.MarshalMessageChecksum(&ndp.RouterSolicitation{}, src, allRouters)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 40, 40+len(icmpMsg))
	pkt[0] = 0x60 // version 6
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmpMsg)))
	pkt[6] = 58 // ICMPv6
	pkt[7] = 255
	s, d := src.As16(), allRouters.As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	pkt = append(pkt, icmpMsg...)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: index, Halen: 6}
	copy(to.Addr[:], []byte{0x33, 0x33, 0, 0, 0, 2}) // ff02::2's multicast MAC
	if err := unix.Sendto(fd, pkt, 0, to); err != nil {
		t.Fatalf("send solicitation from ::: %v", err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestUnspecifiedSourceMulticastRateLimited: solicitations from the
// unspecified address are answered to all nodes, at most once per
// MIN_DELAY_BETWEEN_RAS (shortened here to 600 ms): of three sent at once,
// the first is answered at once and the other two by one advertisement no
// sooner than 600 ms later.
func TestUnspecifiedSourceMulticastRateLimited(t *testing.T) {
	const gap = 600 * time.Millisecond
	l := newLink(t)
	r := newResponder(t, Options{MinDelayBetweenRAs: gap, MaxRADelay: 100 * time.Millisecond})
	stop := serveIn(t, l.srv.Name, r)
	p := newPeer(t, l)
	p.solicit(t) // the responder is up

	var fd int
	var err error
	netns.In(t, l.cli.Name, func() {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IPV6)))
	})
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	defer func() {
		if err := unix.Close(fd); err != nil {
			t.Errorf("close packet socket: %v", err)
		}
	}()

	for range 3 {
		sendUnspecified(t, fd, p.index)
	}
	var got []advert
	deadline := time.After(gap + 1500*time.Millisecond)
collect:
	for {
		select {
		case a := <-p.ras:
			got = append(got, a)
		case <-deadline:
			break collect
		}
	}
	if len(got) != 2 {
		t.Fatalf("got %d advertisements, want 2 (one at once, one for the two held back)", len(got))
	}
	for _, a := range got {
		checkNoRouter(t, a, l)
		if a.dst != allNodes {
			t.Errorf("sent to %s, want ff02::1", a.dst)
		}
	}
	if d := got[1].at.Sub(got[0].at); d < gap-20*time.Millisecond { // 20 ms: timestamps are taken by the reader, not the wire
		t.Errorf("multicast advertisements %v apart, want at least %v", d, gap)
	} else {
		t.Logf("multicast advertisements %v apart (minimum %v)", d, gap)
	}
	stop()
	if got := value(t, r.m.advertisements.WithLabelValues("multicast")); got != 2 {
		t.Errorf("multicast advertisements counted: %v, want 2", got)
	}
	if got := value(t, r.m.dropped.WithLabelValues(dropUnspecSLLA)); got != 0 {
		t.Errorf("dropped{reason=%q} = %v, want 0", dropUnspecSLLA, got)
	}
}

// TestServeNoInterface: Serve fails, naming the interface, when it does
// not exist.
func TestServeNoInterface(t *testing.T) {
	r := New(testLogger(t), nil, Options{Interface: "bmra-nosuch0"})
	err := r.Serve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "bmra-nosuch0") {
		t.Fatalf("Serve = %v, want an error naming the interface", err)
	}
}

// TestServeWaitsForLinkLocal: the responder starts on an interface with no
// link-local address yet (a tap or bridge without carrier), counts what it
// cannot answer, and answers once the address appears.
func TestServeWaitsForLinkLocal(t *testing.T) {
	netns.Require(t)
	// Build the link but hold vsrv's address back: addr_gen_mode none makes
	// no link-local when it comes up.
	l := link{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if l.srv, err = netns.New(ctx, "bmra-s"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.srv.Close(); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	})
	if l.cli, err = netns.New(ctx, "bmra-c"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.cli.Close(); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	})
	for _, s := range []struct {
		ns   *netns.NS
		args []string
	}{
		{l.srv, []string{"ip", "link", "add", "vsrv", "address", srvMAC.String(), "type", "veth", "peer", "name", "vcli", "address", cliMAC.String(), "netns", l.cli.Name}},
		{l.srv, []string{"ip", "link", "set", "vsrv", "addrgenmode", "none"}},
		{l.srv, []string{"sysctl", "-q", "-w", "net.ipv6.conf.vsrv.accept_dad=0"}},
		{l.srv, []string{"sysctl", "-q", "-w", "net.ipv6.conf.vsrv.router_solicitations=0"}},
		{l.cli, []string{"sysctl", "-q", "-w", "net.ipv6.conf.vcli.accept_dad=0"}},
		{l.cli, []string{"sysctl", "-q", "-w", "net.ipv6.conf.vcli.router_solicitations=0"}},
		{l.srv, []string{"ip", "link", "set", "vsrv", "up"}},
		{l.cli, []string{"ip", "link", "set", "vcli", "up"}},
	} {
		if err := s.ns.Run(ctx, s.args[0], s.args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	l.cliLL = waitLinkLocal(t, l.cli, "vcli")
	r := newResponder(t, Options{})
	serveIn(t, l.srv.Name, r)
	p := newPeer(t, l)

	// Until the address exists, solicitations are counted as unanswerable.
	deadline := time.Now().Add(5 * time.Second)
	for value(t, r.m.dropped.WithLabelValues(dropNoLinkLocal)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no solicitation counted as unanswerable within 5 s")
		}
		p.send(t, rs(0, slla...), 255)
		time.Sleep(100 * time.Millisecond)
	}
	if a, ok := p.next(0); ok {
		t.Fatalf("advertisement from %s before vsrv had a link-local address", a.src)
	}
	ll := netip.MustParseAddr("fe80::1")
	if err := l.srv.Run(ctx, "ip", "addr", "add", ll.String()+"/64", "dev", "vsrv"); err != nil {
		t.Fatal(err)
	}
	l.srvLL = ll
	checkNoRouter(t, p.solicit(t), l)
}
