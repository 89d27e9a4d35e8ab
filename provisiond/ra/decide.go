package ra

import (
	"net"
	"net/netip"
	"time"
)

// ICMPv6 and NDP constants (RFC 4861 §4.1, §4.6, §10).
const (
	typeRouterSolicitation = 133
	optSourceLLA           = 1
	// rsMinLen is the ICMPv6 header (type, code, checksum) and the 4-byte
	// Reserved field: an RS shorter than this is invalid (§6.1.1).
	rsMinLen = 8
	// ndpHopLimit is the only IP hop limit a valid NDP message carries: a
	// packet that crossed a router arrives with less (§6.1.1).
	ndpHopLimit = 255

	// MinDelayBetweenRAs is RFC 4861 §10 MIN_DELAY_BETWEEN_RAS: the least
	// time between two multicast advertisements on one interface.
	MinDelayBetweenRAs = 3 * time.Second
	// MaxRADelay is RFC 4861 §10 MAX_RA_DELAY_TIME: the bound of the random
	// delay before a solicited advertisement.
	MaxRADelay = 500 * time.Millisecond
)

// allNodes is ff02::1, where answers to hosts without an address go.
var allNodes = netip.MustParseAddr("ff02::1")

// Reasons a received message gets no advertisement: the values of the
// provisiond_ra_dropped_total "reason" label. decide only ever returns
// these, so the label set stays bounded whatever arrives.
const (
	dropNotRS       = "not_rs"     // another ICMPv6 type (the socket filter lets only RS through)
	dropShort       = "short"      // under 8 bytes
	dropCode        = "bad_code"   // ICMP code not 0
	dropHopLimit    = "hop_limit"  // IP hop limit not 255, or unknown
	dropOption      = "bad_option" // an option of length 0 or running past the end
	dropUnspecSLLA  = "unspecified_with_source_lla"
	dropSource      = "bad_source"    // multicast or non-IPv6 source address
	dropOwn         = "own"           // sent by this host
	dropNoLinkLocal = "no_link_local" // our interface has no link-local address to send from
	dropSendError   = "send_error"
)

// verdict is what to do with one received ICMPv6 message.
type verdict struct {
	// Reply is true when the message is a valid Router Solicitation.
	Reply bool
	// Dst is where the advertisement goes: the soliciting host, or the
	// all-nodes group when it has no address yet (RFC 4861 §6.2.6).
	Dst netip.Addr
	// Drop says why there is no reply.
	Drop string
	// MAC is the host's link-layer address from its Source Link-Layer
	// Address option, when it sent an Ethernet one; for logs only.
	MAC net.HardwareAddr
}

// Multicast reports whether the advertisement goes to the all-nodes group.
func (v verdict) Multicast() bool { return v.Dst == allNodes }

// decide validates msg, an ICMPv6 message received from src with IP hop
// limit hopLimit (-1 when the kernel did not say), as a Router Solicitation
// per RFC 4861 §6.1.1, and says where the answer goes. It reads only msg's
// bytes and never panics on any input (FuzzDecide).
//
// It does its own walk over the options rather than ndp.ParseMessage's: the
// RFC's checks are few (lengths, the unspecified-source rule) and it says
// unknown or odd option contents MUST be ignored, whereas ndp rejects a
// whole message when a known option's contents do not suit it (a
// non-Ethernet link-layer address, say), and does not check the code, the
// length or zero-length options the way §6.1.1 asks.
func decide(msg []byte, src netip.Addr, hopLimit int) verdict {
	if len(msg) < 1 || msg[0] != typeRouterSolicitation {
		return verdict{Drop: dropNotRS}
	}
	if len(msg) < rsMinLen {
		return verdict{Drop: dropShort}
	}
	if msg[1] != 0 {
		return verdict{Drop: dropCode}
	}
	if hopLimit != ndpHopLimit {
		return verdict{Drop: dropHopLimit}
	}
	if !src.Is6() || src.Is4In6() || src.IsMulticast() {
		return verdict{Drop: dropSource}
	}
	unspecified := src.IsUnspecified()
	var mac net.HardwareAddr
	for opts := msg[rsMinLen:]; len(opts) > 0; {
		if len(opts) < 2 {
			return verdict{Drop: dropOption}
		}
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return verdict{Drop: dropOption}
		}
		if opts[0] == optSourceLLA {
			// §6.1.1: a solicitation from the unspecified address carries
			// no source link-layer address (a host without an address
			// must not seed neighbour caches).
			if unspecified {
				return verdict{Drop: dropUnspecSLLA}
			}
			if n == 8 { // Ethernet: type, length, 6 bytes
				mac = net.HardwareAddr(append([]byte(nil), opts[2:8]...))
			}
		}
		opts = opts[n:]
	}
	if unspecified {
		return verdict{Reply: true, Dst: allNodes, MAC: mac}
	}
	return verdict{Reply: true, Dst: src, MAC: mac}
}

// schedule rate-limits multicast advertisements on one interface per RFC
// 4861 §6.2.6: at most one every minGap, and a solicitation that arrives
// sooner is answered by one advertisement at last+minGap plus a random
// delay, which also answers every solicitation that arrives before it goes.
//
// The first answer after a quiet spell goes at once, without the random
// delay the RFC asks for: that delay keeps several routers on a link from
// answering in step, and we are no router, just the quickest way to tell a
// booting host there is none; radvd answers at once the same way. Unicast
// answers are not limited: each goes to one host, as RFC 7772
// recommends for solicited advertisements, and costs the link no more than the solicitation did.
//
// Not safe for concurrent use: Serve's single loop owns it.
type schedule struct {
	minGap time.Duration
	last   time.Time // when the last multicast went; zero: never
	next   time.Time // when the pending one goes; zero: none pending
}

// request notes a solicitation needing a multicast answer at now. It
// returns true when the answer may go at once; otherwise one is pending
// (Pending) and jitter, a random delay up to MAX_RA_DELAY_TIME, is added to
// a newly scheduled one.
func (s *schedule) request(now time.Time, jitter time.Duration) bool {
	if !s.next.IsZero() {
		return false // the pending advertisement answers this one too
	}
	if s.last.IsZero() || now.Sub(s.last) >= s.minGap {
		return true
	}
	s.next = s.last.Add(s.minGap + jitter)
	return false
}

// Pending returns when the pending advertisement is due, or zero.
func (s *schedule) Pending() time.Time { return s.next }

// due reports whether a pending advertisement should go at now.
func (s *schedule) due(now time.Time) bool { return !s.next.IsZero() && !now.Before(s.next) }

// sent records a multicast advertisement sent at now.
func (s *schedule) sent(now time.Time) {
	s.last = now
	s.next = time.Time{}
}
