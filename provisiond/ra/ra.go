// Package ra answers IPv6 Router Solicitations on the boot interface with a
// Router Advertisement that says "no router here": router lifetime 0, no
// prefixes, Managed and Other flags clear, hop limit, reachable time and
// retransmit timer unspecified (0).
//
// Why: iPXE configures IPv6 alongside DHCPv4 and its "Configuring" step
// waits for both. On a link with no IPv6 router it sends solicitations until
// its router discovery gives up, about 16 s per iPXE stage (LAB.md pitfall
// 4), although DHCPv4 answered in milliseconds. The first advertisement ends
// its wait at once (iPXE src/net/ndp.c: with M and O clear it finishes
// autoconfiguration; a lifetime of 0 means it takes no default gateway from
// us). Linux and other hosts treat it the same way: RFC 4861 §6.3.4 puts a
// router in the default router list only with a non-zero lifetime, and with
// no prefix option there is nothing to autoconfigure.
//
// We are not a router, so we never advertise unsolicited (no periodic or
// start-up RAs, RFC 4861 §6.2.4 is for routers) and only answer
// solicitations: by unicast to the host that asked, or to the all-nodes
// group, rate-limited to one per MIN_DELAY_BETWEEN_RAS, when it asked from
// the unspecified address.
//
// On a link that does have an IPv6 router the advertisement is harmless to
// routing (a host's default router list holds each router separately, and
// ours never enters it), but a host that believes the first advertisement it
// hears, as iPXE does, may skip DHCPv6 that the real router's Managed flag
// asked for. Turn the responder off there (--ipv6-ra=false).
package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv6"
)

// allRouters is ff02::2, where hosts send their solicitations.
var allRouters = netip.MustParseAddr("ff02::2")

// Options configure a Responder.
type Options struct {
	// Interface is the name of the interface to answer on; required.
	Interface string
	// MinDelayBetweenRAs is the least time between two multicast
	// advertisements; 0 means RFC 4861's MIN_DELAY_BETWEEN_RAS (3 s).
	// Tests shorten it.
	MinDelayBetweenRAs time.Duration
	// MaxRADelay bounds the random delay added to a multicast advertisement
	// that had to wait for MinDelayBetweenRAs; 0 means RFC 4861's
	// MAX_RA_DELAY_TIME (500 ms).
	MaxRADelay time.Duration
}

// Responder answers Router Solicitations on one interface.
type Responder struct {
	log  *slog.Logger
	opts Options
	m    metrics
}

type metrics struct {
	solicitations  prometheus.Counter
	advertisements *prometheus.CounterVec
	dropped        *prometheus.CounterVec
}

// New returns a responder; it does no I/O. reg receives its metrics.
func New(log *slog.Logger, reg prometheus.Registerer, opts Options) *Responder {
	if opts.MinDelayBetweenRAs == 0 {
		opts.MinDelayBetweenRAs = MinDelayBetweenRAs
	}
	if opts.MaxRADelay == 0 {
		opts.MaxRADelay = MaxRADelay
	}
	r := &Responder{
		log:  log.With("component", "ra", "interface", opts.Interface),
		opts: opts,
		m: metrics{
			solicitations: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "provisiond_ra_solicitations_total", Help: "IPv6 Router Solicitations received on the boot interface, valid or not.",
			}),
			advertisements: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "provisiond_ra_advertisements_total", Help: "Zero-lifetime Router Advertisements sent, by destination (unicast to the soliciting host, or multicast to all nodes).",
			}, []string{"destination"}),
			dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "provisiond_ra_dropped_total", Help: "ICMPv6 messages on the boot interface not answered, by reason.",
			}, []string{"reason"}),
		},
	}
	// Both destinations exist from the start, so a dashboard sees 0, not nothing.
	r.m.advertisements.WithLabelValues("unicast")
	r.m.advertisements.WithLabelValues("multicast")
	if reg != nil {
		reg.MustRegister(r.m.solicitations, r.m.advertisements, r.m.dropped)
	}
	return r
}

// Serve opens a raw ICMPv6 socket, joins the all-routers group on
// Options.Interface and answers solicitations until ctx ends; it then
// returns nil. It fails when the interface does not exist or the socket
// cannot be opened (IPv6 disabled, no CAP_NET_RAW).
//
// The interface needs no IPv6 address when Serve starts: a tap or bridge
// without carrier gets its link-local address only when a machine plugs in,
// so the address advertisements go from is looked up for each one.
//
// Everything runs on the calling goroutine (ctx's end only closes the
// socket), so a caller that entered a network namespace on a locked thread
// serves in it.
func (r *Responder) Serve(ctx context.Context) error {
	if r.opts.Interface == "" {
		return errors.New("ra: no interface given")
	}
	ifi, err := net.InterfaceByName(r.opts.Interface)
	if err != nil {
		return fmt.Errorf("ra: look up interface %q: %w", r.opts.Interface, err)
	}
	conn, err := listen(ifi)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		_ = conn.Close() // only to end serve's read; it reports its own errors
	}()
	r.log.Info("answering IPv6 router solicitations with zero-lifetime advertisements", "index", ifi.Index)
	return r.serve(ctx, conn, ifi.Index)
}

// listen opens the socket: bound to the unspecified address (so it outlives
// changes of the interface's addresses), only Router Solicitations let
// through by the kernel, the hop limit and the arrival interface reported
// with each, and the all-routers group joined on ifi, which a host that does
// not forward has not joined.
//
// ndp puts the interface's name in the zone of every address it reads and
// writes, and Go turns zone names into indexes through a process-wide cache
// refreshed at most once a minute: one process serving in several network
// namespaces (the tests do) or an interface re-created under the same name
// can make it send with a wrong index. A numeric zone is the index itself,
// so ndp gets the interface under its index as name.
func listen(ifi *net.Interface) (*ndp.Conn, error) {
	byIndex := *ifi
	byIndex.Name = strconv.Itoa(ifi.Index)
	conn, _, err := ndp.Listen(&byIndex, ndp.Unspecified)
	if err != nil {
		return nil, fmt.Errorf("ra: open ICMPv6 socket for %s: %w", ifi.Name, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	steps := []struct {
		what string
		do   func() error
	}{
		{"set ICMPv6 filter", func() error { return conn.SetICMPFilter(&f) }},
		{"ask for control messages", func() error {
			return conn.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface|ipv6.FlagDst, true)
		}},
		{"join ff02::2", func() error { return conn.JoinGroup(allRouters) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			_ = conn.Close() // never served: the setup error is the news
			return nil, fmt.Errorf("ra: %s on %s: %w", s.what, ifi.Name, err)
		}
	}
	return conn, nil
}

// serve is the read loop. A pending multicast advertisement is sent when
// the read deadline, set to its due time, expires.
func (r *Responder) serve(ctx context.Context, conn *ndp.Conn, index int) error {
	sched := schedule{minGap: r.opts.MinDelayBetweenRAs}
	var warned time.Time // last Warn about an unanswerable solicitation
	// Any IPv6 payload fits, so a solicitation on a jumbo-frame link is
	// never cut short and mistaken for one with a broken option.
	buf := make([]byte, 1<<16)
	for {
		if err := conn.SetReadDeadline(sched.Pending()); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ra: set read deadline: %w", err)
		}
		n, cm, src, err := conn.ReadRaw(buf)
		now := time.Now()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if sched.due(now) {
				r.advertise(conn, index, allNodes, now, &warned)
				sched.sent(now)
			}
			continue
		default:
			return fmt.Errorf("ra: read: %w", err)
		}
		// The socket is bound to no interface (see listen): leave other
		// interfaces' solicitations to whoever serves them.
		if cm == nil || cm.IfIndex != index {
			continue
		}
		hop := -1
		if cm.HopLimit > 0 {
			hop = cm.HopLimit
		}
		src = src.WithZone("") // the interface is in every log line already
		v := decide(buf[:n], src, hop)
		if v.Drop != dropNotRS {
			r.m.solicitations.Inc()
		}
		log := r.log.With("src", src.String())
		if v.MAC != nil {
			log = log.With("mac", v.MAC.String())
		}
		if !v.Reply {
			r.m.dropped.WithLabelValues(v.Drop).Inc()
			typ := -1
			if n > 0 {
				typ = int(buf[0])
			}
			log.Debug("ignored ICMPv6 message", "reason", v.Drop, "type", typ, "hop_limit", hop, "len", n)
			continue
		}
		if !v.Multicast() {
			log.Debug("router solicitation: answering by unicast")
			r.advertise(conn, index, src, now, &warned)
			continue
		}
		if sched.request(now, rand.N(r.opts.MaxRADelay+1)) {
			log.Debug("router solicitation from the unspecified address: answering all nodes")
			r.advertise(conn, index, allNodes, now, &warned)
			sched.sent(now)
			continue
		}
		log.Debug("router solicitation from the unspecified address: answering all nodes later (rate limit)",
			"at", sched.Pending().Format(time.RFC3339Nano))
	}
}

// advertise sends the zero-lifetime advertisement to dst from the
// interface's link-local address (RFC 4861 §6.1.2: hosts drop
// advertisements from any other source).
func (r *Responder) advertise(conn *ndp.Conn, index int, dst netip.Addr, now time.Time, warned *time.Time) {
	ifi, src, err := linkLocal(index)
	if err == nil && dst.WithZone("") == src.WithZone("") {
		r.m.dropped.WithLabelValues(dropOwn).Inc()
		r.log.Debug("ignored our own router solicitation", "src", dst.String())
		return
	}
	reason := dropSendError
	if errors.Is(err, errNoLinkLocal) {
		reason = dropNoLinkLocal
	}
	if err == nil {
		cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: src.AsSlice(), IfIndex: index}
		err = conn.WriteTo(advertisement(ifi.HardwareAddr), cm, dst)
	}
	if err != nil {
		r.m.dropped.WithLabelValues(reason).Inc()
		// Solicitations repeat every few seconds per host: warn about a
		// lasting failure once a minute, the rest at debug.
		if now.Sub(*warned) >= time.Minute {
			*warned = now
			r.log.Warn("cannot answer router solicitation", "dst", dst.String(), "err", err)
		} else {
			r.log.Debug("cannot answer router solicitation", "dst", dst.String(), "err", err)
		}
		return
	}
	kind := "unicast"
	if dst == allNodes {
		kind = "multicast"
	}
	r.m.advertisements.WithLabelValues(kind).Inc()
	r.log.Debug("sent zero-lifetime router advertisement", "dst", dst.String(), "src", src.String())
}

var errNoLinkLocal = errors.New("no IPv6 link-local address")

// linkLocal returns the interface afresh (its MAC may have changed) and its
// IPv6 link-local address.
func linkLocal(index int) (*net.Interface, netip.Addr, error) {
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("look up interface %d: %w", index, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if ok && ip.Is6() && !ip.Is4In6() && ip.IsLinkLocalUnicast() {
			return ifi, ip, nil
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("%s: %w", ifi.Name, errNoLinkLocal)
}

// advertisement is the Router Advertisement we send (RFC 4861 §4.2): no
// router (lifetime 0; RFC 4191 §2.2 then wants preference medium), no
// stateful or other configuration by DHCPv6, and no opinion on hop limit,
// reachable time or retransmit timer (0 is "unspecified"), so hosts keep
// their own. Its only option is our link-layer address, which saves the
// host a neighbour solicitation; it is left out where the link has no
// 6-byte (Ethernet) address, the only kind ndp encodes.
func advertisement(mac net.HardwareAddr) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit:           0,
		ManagedConfiguration:      false,
		OtherConfiguration:        false,
		RouterSelectionPreference: ndp.Medium,
		RouterLifetime:            0,
		ReachableTime:             0,
		RetransmitTimer:           0,
	}
	if len(mac) == 6 {
		ra.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
	}
	return ra
}
