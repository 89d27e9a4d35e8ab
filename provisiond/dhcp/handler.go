package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Handle answers one DHCP message. It returns the reply and where to send
// it, or nil when no reply is due. A lease it grants is durable in the
// store when it returns. It touches no socket, so tests and the fuzzer
// call it directly.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	a := s.handle(ctx, req)
	if a.write != nil && s.commit(ctx, a.write) != nil {
		return nil, nil
	}
	return a.reply, a.dst
}

// answer is what the server decided for one message: the reply, if any,
// and the store write that must be durable before the reply leaves.
type answer struct {
	reply *dhcpv4.DHCPv4
	dst   *net.UDPAddr
	write *leaseWrite
}

// leaseWrite is a lease change to commit (group commit, store.Batch).
type leaseWrite struct {
	op    writeOp
	lease store.Lease // MAC and IP; all of it for writePut
	req   *dhcpv4.DHCPv4
}

type writeOp int

const (
	writePut     writeOp = iota // REQUEST: record the lease
	writeRelease                // RELEASE: drop it
	writeDecline                // DECLINE: drop it, and say so
)

// commit makes w durable. It logs and counts a failure, and returns it.
func (s *Server) commit(ctx context.Context, w *leaseWrite) error {
	log := &pktLog{s: s, req: w.req, hwID: w.lease.HardwareID}
	var err error
	switch w.op {
	case writePut:
		start := time.Now()
		err = s.st.Batch(ctx, func(tx *store.Tx) error {
			// The reservation is authoritative: a stale lease of the same
			// address to another MAC (hardware re-registered with a new NIC)
			// is dropped. Both steps are idempotent as Batch may rerun fn.
			if old, err := tx.LeaseByIP(w.lease.IP); err == nil && old.MAC != w.lease.MAC {
				if err := tx.DeleteLease(old.MAC); err != nil {
					return err
				}
			}
			return tx.PutLease(w.lease)
		})
		s.m.commit.Observe(time.Since(start).Seconds())
		if err != nil {
			err = fmt.Errorf("record lease %s → %s: %w", w.lease.MAC, w.lease.IP, err)
		}
	case writeRelease, writeDecline:
		err = s.st.Batch(ctx, func(tx *store.Tx) error {
			err := tx.DeleteLease(w.lease.MAC)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		})
		what := "release"
		if w.op == writeDecline {
			what = "decline"
		}
		if err != nil {
			err = fmt.Errorf("%s lease of %s: %w", what, w.lease.MAC, err)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down: the reply is not sent, nothing failed
		}
		s.m.droppedOf(dropError).Inc()
		log.log(slog.LevelError, "handle DHCP message", "err", err)
		return err
	}
	switch w.op {
	case writeRelease:
		log.log(slog.LevelInfo, "lease released", "ip", w.lease.IP)
	case writeDecline:
		// RFC 2131 section 4.3.3: the address is a reservation, so another
		// host on the link holds it: that is an operator problem.
		s.m.droppedOf(dropDeclined).Inc()
		log.log(slog.LevelWarn, "client DECLINEd its reserved address: another host on the link uses it", "ip", w.lease.IP)
	}
	return nil
}

// handle decides the answer to req without writing to the store.
func (s *Server) handle(ctx context.Context, req *dhcpv4.DHCPv4) answer {
	mt := msgType(req)
	s.m.receivedOf(mt).Inc()
	// RFC 2131 section 2: servers act on BOOTREQUESTs only; we serve Ethernet.
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		s.m.droppedOf(dropNotARequest).Inc()
		return answer{}
	}
	log := pktLog{s: s, req: req}
	var (
		a   answer
		err error
	)
	switch s.opts.Mode {
	case ModeReservation:
		a, err = s.reservation(ctx, &log, req, mt)
	case ModeProxy:
		a, err = s.proxy(ctx, &log, req, mt)
	default:
		return answer{}
	}
	if err != nil {
		if !errors.Is(err, errNoReply) {
			s.m.droppedOf(dropError).Inc()
			log.log(slog.LevelError, "handle DHCP message", "err", err)
		}
		return answer{}
	}
	if a.reply != nil {
		a.dst = s.destination(req, a.reply)
	}
	return a
}

// msgType is req.MessageType() without its decoding allocation, which
// showed in profiles as it runs several times per packet.
func msgType(d *dhcpv4.DHCPv4) dhcpv4.MessageType {
	if v := d.Options[uint8(dhcpv4.OptionDHCPMessageType)]; len(v) == 1 {
		return dhcpv4.MessageType(v[0])
	}
	return dhcpv4.MessageTypeNone
}

// optIP returns the IPv4 address option code of d, or nil: what
// d.ServerIdentifier() and d.RequestedIPAddress() return, without
// allocating.
func optIP(d *dhcpv4.DHCPv4, code dhcpv4.OptionCode) net.IP {
	if v := d.Options[code.Code()]; len(v) == net.IPv4len {
		return net.IP(v)
	}
	return nil
}

// pktLog logs with the attributes of one packet (mac, xid, type, relay,
// hardware). It builds the slog.Logger only when a line is due: With
// formats its attributes at once, which cost more than the rest of a
// DISCOVER at the default level, where nothing per packet is logged.
type pktLog struct {
	s    *Server
	req  *dhcpv4.DHCPv4
	hwID string
	l    *slog.Logger
}

func (p *pktLog) enabled(level slog.Level) bool {
	return p.s.log.Enabled(context.Background(), level)
}

func (p *pktLog) logger() *slog.Logger {
	if p.l == nil {
		args := []any{"mac", p.req.ClientHWAddr.String(), "xid", p.req.TransactionID.String(), "type", msgType(p.req).String()}
		if gi := p.req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
			args = append(args, "relay", gi.String())
		}
		if p.hwID != "" {
			args = append(args, "hardware", p.hwID)
		}
		p.l = p.s.log.With(args...)
	}
	return p.l
}

// log logs msg at level if that level is on. Callers on the per-packet
// path check enabled first, so their arguments are not even built.
func (p *pktLog) log(level slog.Level, msg string, args ...any) {
	if p.enabled(level) {
		p.logger().Log(context.Background(), level, msg, args...)
	}
}

func (p *pktLog) setHardware(id string) {
	p.hwID, p.l = id, nil
}

// destination picks where a reply goes, per RFC 2131 section 4.1:
//   - giaddr set: unicast to the relay agent's server port 67 (and a NAK
//     gets the broadcast bit so the relay broadcasts it);
//   - a NAK otherwise: broadcast;
//   - ciaddr set (RENEWING, REBINDING, INFORM): unicast to ciaddr:68;
//   - otherwise broadcast. (Unicast to yiaddr before the client has the
//     address needs an ARP entry we cannot inject from a UDP socket; the
//     RFC allows broadcast, and SO_BINDTODEVICE keeps it on the right link.)
func (s *Server) destination(req, reply *dhcpv4.DHCPv4) *net.UDPAddr {
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		if msgType(reply) == dhcpv4.MessageTypeNak {
			reply.SetBroadcast()
		}
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if msgType(reply) == dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	}
	if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

func ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// reservation implements ModeReservation.
func (s *Server) reservation(ctx context.Context, log *pktLog, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) (answer, error) {
	switch mt {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform:
	default:
		s.m.droppedOf(dropMessageType).Inc()
		return answer{}, errNoReply
	}
	mac := req.ClientHWAddr.String()
	// A REQUEST reads the stored lease in the same transaction, to reuse
	// it when it is fresh (see leaseReuse).
	b, lease, err := s.view(ctx, mac, mt == dhcpv4.MessageTypeRequest)
	if errors.Is(err, store.ErrNotFound) {
		s.logUnknown(req)
		return answer{}, errNoReply
	}
	if err != nil {
		return answer{}, err
	}
	log.setHardware(b.hwID)
	if !b.addr.IsValid() && mt != dhcpv4.MessageTypeInform {
		s.m.droppedOf(dropNoAddress).Inc()
		log.log(slog.LevelWarn, "hardware interface has no IPv4 address; no reply")
		return answer{}, errNoReply
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		// RFC 2131 section 4.3.1: offer the reserved address; nothing is
		// recorded until the client REQUESTs it.
		r, err := s.reply(req, b, dhcpv4.MessageTypeOffer, s.opts.LeaseTime, log)
		return answer{reply: r}, err
	case dhcpv4.MessageTypeRequest:
		return s.request(log, req, b, lease)
	case dhcpv4.MessageTypeRelease:
		// RFC 2131 section 4.3.4: mark the address free; no reply.
		if ci, ok := netip.AddrFromSlice(req.ClientIPAddr.To4()); !ok || ci != b.addr {
			log.log(slog.LevelInfo, "RELEASE of an address that is not this MAC's; ignored", "ciaddr", req.ClientIPAddr.String())
			return answer{}, errNoReply
		}
		return answer{write: &leaseWrite{op: writeRelease, req: req, lease: store.Lease{MAC: mac, IP: b.addrString, HardwareID: b.hwID}}}, nil
	case dhcpv4.MessageTypeDecline:
		// RFC 2131 section 4.3.3: the client found the address in use. Drop
		// the lease record (commit says why).
		return answer{write: &leaseWrite{op: writeDecline, req: req, lease: store.Lease{MAC: mac, IP: b.addrString, HardwareID: b.hwID}}}, nil
	case dhcpv4.MessageTypeInform:
		// RFC 2131 section 4.3.5: configuration only, no yiaddr and no lease
		// time, sent to ciaddr.
		r, err := s.reply(req, b, dhcpv4.MessageTypeAck, 0, log)
		return answer{reply: r}, err
	}
	return answer{}, errNoReply
}

// storedLease is what a REQUEST's read transaction found of the MAC's lease.
type storedLease struct {
	lease   store.Lease
	found   bool
	durable bool // store.Tx.Durable: the lease cannot be lost any more
}

// view looks the MAC up in one read transaction: its hardware (through
// the cache) and, when withLease is set, its stored lease.
func (s *Server) view(ctx context.Context, mac string, withLease bool) (*binding, storedLease, error) {
	var (
		b  *binding
		sl storedLease
	)
	err := s.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if b, err = s.hw.lookup(tx, mac, s.opts.Domain); err != nil {
			return err
		}
		if !withLease {
			return nil
		}
		l, found, err := s.leases.lookup(tx, mac)
		if err != nil || !found {
			return err
		}
		sl = storedLease{lease: l, found: true, durable: tx.Durable()}
		return nil
	})
	return b, sl, err
}

// request handles DHCPREQUEST in its four client states, RFC 2131 section 4.3.2.
func (s *Server) request(log *pktLog, req *dhcpv4.DHCPv4, b *binding, stored storedLease) (answer, error) {
	serverID := optIP(req, dhcpv4.OptionServerIdentifier)
	requested := optIP(req, dhcpv4.OptionRequestedIPAddress)
	var want net.IP
	switch {
	case serverID != nil:
		// SELECTING: the client names the server it chose. Another server's
		// name means it declined our offer: stay silent.
		if !serverID.Equal(s.serverIP) {
			if log.enabled(slog.LevelDebug) {
				log.log(slog.LevelDebug, "client selected another server", "server_id", serverID.String())
			}
			return answer{}, errNoReply
		}
		want = requested
	case requested != nil:
		// INIT-REBOOT: the client asks for the address it remembers.
		want = requested
	default:
		// RENEWING (unicast) or REBINDING (broadcast): ciaddr is the address.
		want = req.ClientIPAddr
	}
	if a, ok := netip.AddrFromSlice(want.To4()); !ok || a != b.addr {
		// The client asks for an address that is not its reservation: NAK,
		// so it restarts from INIT and gets the right one.
		log.log(slog.LevelInfo, "NAK: requested address is not the reservation", "requested", want.String(), "reserved", b.addr)
		nak := s.newReply(req, dhcpv4.MessageTypeNak)
		nak.Options[uint8(dhcpv4.OptionMessage)] = []byte("requested address is not reserved for this client")
		// RFC 2131 table 3: a NAK carries no yiaddr/ciaddr/siaddr.
		return answer{reply: nak}, nil
	}
	now := s.opts.Now()
	if lt, ok := s.leaseReuse(stored, b, now); ok {
		s.m.leaseReused.Inc()
		r, err := s.reply(req, b, dhcpv4.MessageTypeAck, lt, log)
		return answer{reply: r}, err
	}
	// The lease is recorded durably before the ACK leaves (group commit).
	r, err := s.reply(req, b, dhcpv4.MessageTypeAck, s.opts.LeaseTime, log)
	if err != nil {
		return answer{}, err
	}
	return answer{reply: r, write: &leaseWrite{op: writePut, req: req, lease: store.Lease{
		MAC: req.ClientHWAddr.String(), IP: b.addrString, HardwareID: b.hwID,
		Hostname: b.hostnameFull, Expires: now.Add(s.opts.LeaseTime).UTC(),
	}}}, nil
}

// leaseReuse decides whether a REQUEST can be ACKed from the lease already
// stored, without a write, and for how long. This is the lease caching of
// ISC dhcpd (dhcp-cache-threshold) and Kea (cache-threshold): a lease
// younger than Options.LeaseReuse, with nothing changed but its age, is
// handed out again with the time it has left rather than extended, so the
// ACK promises nothing beyond what is on disk. It matters for netboot,
// where the firmware, iPXE and the agent OS each run DORA within a minute
// of each other, and for clients that restart often; a client renewing at
// T1 (half the lease) is past the threshold and gets a fresh, written
// lease. The stored expiry stays exactly what the first ACK granted:
// rounding it up instead would let renewals skip writes too, but would
// record leases longer than any client was told.
//
// The stored lease must be durable (store.Tx.Durable: a lease another
// REQUEST is still committing does not count), for this MAC's reserved
// address, hardware and host name, and have at least
// LeaseTime-LeaseReuse left. The time granted is rounded down to whole
// seconds (option 51's unit), so the client's lease ends no later than
// the stored one. T1 and T2 follow from it.
func (s *Server) leaseReuse(st storedLease, b *binding, now time.Time) (time.Duration, bool) {
	if s.opts.LeaseReuse <= 0 || !st.found || !st.durable {
		return 0, false
	}
	l := st.lease
	if l.IP != b.addrString || l.HardwareID != b.hwID || l.Hostname != b.hostnameFull {
		return 0, false
	}
	left := l.Expires.Sub(now).Truncate(time.Second)
	if left < s.opts.LeaseTime-s.opts.LeaseReuse || left > s.opts.LeaseTime {
		return 0, false
	}
	return left, true
}

// newReply starts a reply to req of type mt, per RFC 2131 table 3: the
// request's xid, hardware address, flags and giaddr, option 54, and the
// client identifier (RFC 6842) and relay agent information (RFC 3046)
// echoed. It does what dhcpv4.NewReplyFromRequest does without drawing a
// random xid first (a getrandom call and two timers per reply, only to be
// overwritten).
func (s *Server) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		ClientHWAddr:  req.ClientHWAddr,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		Options:       make(dhcpv4.Options, 16),
	}
	r.Options[uint8(dhcpv4.OptionDHCPMessageType)] = msgTypeOption[mt]
	r.Options[uint8(dhcpv4.OptionServerIdentifier)] = s.serverIP
	for _, c := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(c); v != nil {
			r.Options[c.Code()] = v
		}
	}
	return r
}

// msgTypeOption holds option 53 for every message type, shared by replies.
var msgTypeOption = func() (o [256][]byte) {
	for i := range o {
		o[i] = []byte{byte(i)}
	}
	return o
}()

func seconds(d time.Duration) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(d/time.Second))
}

// ipxeEncap is option 175, iPXE's encapsulated options: iPXE puts it in its
// requests, so its presence marks an iPXE client.
const ipxeEncap = dhcpv4.GenericOptionCode(175)

// reply builds an OFFER or ACK for a known client with the options of RFC
// 2131 table 3 and, for netboot clients allowed to PXE, the boot file. lt
// is the lease time granted (unused for INFORM).
func (s *Server) reply(req *dhcpv4.DHCPv4, b *binding, mt dhcpv4.MessageType, lt time.Duration, log *pktLog) (*dhcpv4.DHCPv4, error) {
	r := s.newReply(req, mt)
	r.ServerIPAddr = s.serverIP
	if msgType(req) == dhcpv4.MessageTypeInform {
		// Section 4.3.5: ciaddr copied, no yiaddr, no lease time.
		r.ClientIPAddr = req.ClientIPAddr
	} else {
		r.YourIPAddr = b.yiaddr
		r.Options[uint8(dhcpv4.OptionIPAddressLeaseTime)] = s.leaseOpt(lt)
		// T1 and T2 defaults of section 4.4.5: 0.5 and 0.875 of the lease.
		r.Options[uint8(dhcpv4.OptionRenewTimeValue)] = seconds(lt / 2)
		r.Options[uint8(dhcpv4.OptionRebindingTimeValue)] = seconds(lt * 7 / 8)
	}
	for _, o := range b.opts {
		r.Options[o.code] = o.val
	}
	if b.allowPXE {
		if boot, ok := s.bootFor(req); ok {
			boot.apply(r, s.opts.ServerIP)
			if log.enabled(slog.LevelDebug) {
				log.log(slog.LevelDebug, "boot file", "boot_file", boot.file, "class", boot.vendorClass)
			}
		}
	} else if req.Options.Has(ipxeEncap) {
		// Netboot is off: no boot file, so the firmware moves on to its
		// disk. iPXE (its requests carry option 175) would first wait ~3 s
		// for a ProxyDHCP offer, as this offer has no "PXEClient" class:
		// no-pxedhcp says none is due.
		r.Options[ipxeEncap.Code()] = ipxeNoProxyDHCP
		if log.enabled(slog.LevelDebug) {
			log.log(slog.LevelDebug, "netboot is off: no boot file")
		}
	}
	if log.enabled(slog.LevelDebug) {
		log.log(slog.LevelDebug, "reply", "reply", mt.String(), "yiaddr", r.YourIPAddr.String())
	}
	return r, nil
}

// leaseOpt encodes option 51, sharing the encoding of the configured lease
// time.
func (s *Server) leaseOpt(lt time.Duration) []byte {
	if lt == s.opts.LeaseTime {
		return s.leaseTimeOpt
	}
	return seconds(lt)
}

// proxy implements ModeProxy: PXE boot information only (PXE specification
// 2.1, "ProxyDHCP"), never an address, and only to netboot clients of
// registered hardware whose netboot is allowed.
//
// It also records the address another DHCP server gave a known machine, as
// the machine's REQUEST shows it (option 50 while selecting, ciaddr when
// renewing or asking on port 4011): the iPXE handler mints a machine's
// agent token only for a request from that address.
func (s *Server) proxy(ctx context.Context, log *pktLog, req *dhcpv4.DHCPv4, reqType dhcpv4.MessageType) (answer, error) {
	var mt dhcpv4.MessageType
	switch reqType {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		mt = dhcpv4.MessageTypeAck
	default:
		return answer{}, errNoReply
	}
	boot, ok := s.bootFor(req)
	if !ok {
		s.m.droppedOf(dropNotNetboot).Inc()
		return answer{}, errNoReply
	}
	b, stored, err := s.view(ctx, req.ClientHWAddr.String(), reqType == dhcpv4.MessageTypeRequest)
	if errors.Is(err, store.ErrNotFound) {
		s.logUnknown(req)
		return answer{}, errNoReply
	}
	if err != nil {
		return answer{}, err
	}
	log.setHardware(b.hwID)
	if !b.allowPXE {
		log.log(slog.LevelDebug, "netboot not allowed; ProxyDHCP stays silent")
		return answer{}, errNoReply
	}
	var a answer
	if reqType == dhcpv4.MessageTypeRequest {
		a.write = s.observe(log, req, b, stored)
		// Only a REQUEST naming us (or none, e.g. to port 4011) gets an ACK.
		if id := optIP(req, dhcpv4.OptionServerIdentifier); id != nil && !id.Equal(s.serverIP) {
			return a, nil
		}
	}
	r := s.newReply(req, mt)
	r.ServerIPAddr = s.serverIP
	boot.apply(r, s.opts.ServerIP)
	// A ProxyDHCP reply carries no address: yiaddr stays 0.0.0.0.
	log.log(slog.LevelDebug, "ProxyDHCP reply", "boot_file", boot.file, "class", boot.vendorClass)
	a.reply = r
	return a, nil
}

// observe returns the lease record of the address a proxy-mode REQUEST
// shows the client taking from another server, or nil when there is none
// or the stored record is the same and fresh (no write per packet).
func (s *Server) observe(log *pktLog, req *dhcpv4.DHCPv4, b *binding, stored storedLease) *leaseWrite {
	addr := req.ClientIPAddr.To4()
	if addr == nil || addr.IsUnspecified() {
		addr = optIP(req, dhcpv4.OptionRequestedIPAddress).To4()
	}
	a, ok := netip.AddrFromSlice(addr)
	if !ok || !a.IsGlobalUnicast() {
		return nil
	}
	now := s.opts.Now()
	if stored.found && stored.lease.IP == a.String() && stored.lease.Expires.Sub(now) > s.opts.LeaseTime/2 {
		return nil
	}
	if log.enabled(slog.LevelDebug) {
		log.log(slog.LevelDebug, "address from another DHCP server recorded", "ip", a.String())
	}
	return &leaseWrite{op: writePut, req: req, lease: store.Lease{
		MAC: req.ClientHWAddr.String(), IP: a.String(), HardwareID: b.hwID,
		Hostname: b.hostnameFull, Expires: now.Add(s.opts.LeaseTime).UTC(),
	}}
}
