package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Handle answers one DHCP message. It returns the reply and where to send
// it, or nil when no reply is due. It touches no socket, so tests and the
// fuzzer call it directly.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	mt := req.MessageType()
	s.m.received.WithLabelValues(mt.String()).Inc()
	// RFC 2131 section 2: servers act on BOOTREQUESTs only; we serve Ethernet.
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		s.m.dropped.WithLabelValues("not_a_request").Inc()
		return nil, nil
	}
	log := s.log.With("mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "type", mt.String())
	if !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil {
		log = log.With("relay", req.GatewayIPAddr.String())
	}
	var (
		reply *dhcpv4.DHCPv4
		err   error
	)
	switch s.opts.Mode {
	case ModeReservation:
		reply, err = s.reservation(ctx, log, req)
	case ModeProxy:
		reply, err = s.proxy(ctx, log, req)
	default:
		return nil, nil
	}
	if err != nil {
		if !errors.Is(err, errNoReply) {
			s.m.dropped.WithLabelValues("error").Inc()
			log.Error("handle DHCP message", "err", err)
		}
		return nil, nil
	}
	if reply == nil {
		return nil, nil
	}
	return reply, s.destination(req, reply)
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
		if reply.MessageType() == dhcpv4.MessageTypeNak {
			reply.SetBroadcast()
		}
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	}
	if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// binding is what the store says about one MAC.
type binding struct {
	hw       store.Hardware
	addr     netip.Addr
	prefix   netip.Prefix
	gateway  netip.Addr
	dns      []net.IP
	hostname string
	domain   string
}

// lookup finds the hardware of the request's MAC and its interface.
func (s *Server) lookup(ctx context.Context, req *dhcpv4.DHCPv4) (binding, error) {
	hw, err := s.st.GetHardwareByMAC(ctx, req.ClientHWAddr.String())
	if err != nil {
		return binding{}, err
	}
	var b binding
	b.hw = hw
	mac := req.ClientHWAddr.String()
	for _, nic := range hw.Interfaces {
		if !strings.EqualFold(nic.MAC, mac) {
			continue
		}
		if nic.IP != "" {
			p, err := netip.ParsePrefix(nic.IP)
			if err != nil {
				a, err2 := netip.ParseAddr(nic.IP)
				if err2 != nil || !a.Is4() {
					return b, fmt.Errorf("hardware %s interface %s: address %q: %w", hw.ID, mac, nic.IP, err)
				}
				p = netip.PrefixFrom(a, 32)
			}
			if !p.Addr().Is4() {
				return b, fmt.Errorf("hardware %s interface %s: %q is not IPv4", hw.ID, mac, nic.IP)
			}
			b.addr, b.prefix = p.Addr(), p
		}
		if g, err := netip.ParseAddr(nic.Gateway); err == nil && g.Is4() {
			b.gateway = g
		}
		for _, ns := range nic.NameServers {
			if a, err := netip.ParseAddr(ns); err == nil && a.Is4() {
				b.dns = append(b.dns, net.IP(a.AsSlice()))
			}
		}
	}
	b.hostname, b.domain = hw.Hostname, s.opts.Domain
	if host, dom, ok := strings.Cut(hw.Hostname, "."); ok {
		b.hostname, b.domain = host, dom
	}
	return b, nil
}

func ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// reservation implements ModeReservation.
func (s *Server) reservation(ctx context.Context, log *slog.Logger, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	mt := req.MessageType()
	switch mt {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform:
	default:
		s.m.dropped.WithLabelValues("message_type").Inc()
		return nil, errNoReply
	}
	b, err := s.lookup(ctx, req)
	if errors.Is(err, store.ErrNotFound) {
		s.logUnknown(req)
		return nil, errNoReply
	}
	if err != nil {
		return nil, err
	}
	log = log.With("hardware", b.hw.ID)
	if !b.addr.IsValid() && mt != dhcpv4.MessageTypeInform {
		s.m.dropped.WithLabelValues("no_address").Inc()
		log.Warn("hardware interface has no IPv4 address; no reply")
		return nil, errNoReply
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		// RFC 2131 section 4.3.1: offer the reserved address; nothing is
		// recorded until the client REQUESTs it.
		return s.reply(req, b, dhcpv4.MessageTypeOffer, log)
	case dhcpv4.MessageTypeRequest:
		return s.request(ctx, log, req, b)
	case dhcpv4.MessageTypeRelease:
		// RFC 2131 section 4.3.4: mark the address free; no reply.
		if ci, ok := netip.AddrFromSlice(req.ClientIPAddr.To4()); !ok || ci != b.addr {
			log.Info("RELEASE of an address that is not this MAC's; ignored", "ciaddr", req.ClientIPAddr.String())
			return nil, errNoReply
		}
		if err := s.st.Batch(ctx, func(tx *store.Tx) error {
			err := tx.DeleteLease(req.ClientHWAddr.String())
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}); err != nil {
			return nil, fmt.Errorf("release lease of %s: %w", req.ClientHWAddr, err)
		}
		log.Info("lease released", "ip", b.addr)
		return nil, errNoReply
	case dhcpv4.MessageTypeDecline:
		// RFC 2131 section 4.3.3: the client found the address in use. The
		// address is a reservation, so another host on the link holds it:
		// that is an operator problem. Drop the lease record and say so.
		if err := s.st.Batch(ctx, func(tx *store.Tx) error {
			err := tx.DeleteLease(req.ClientHWAddr.String())
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}); err != nil {
			return nil, fmt.Errorf("decline lease of %s: %w", req.ClientHWAddr, err)
		}
		s.m.dropped.WithLabelValues("declined").Inc()
		log.Warn("client DECLINEd its reserved address: another host on the link uses it", "ip", b.addr)
		return nil, errNoReply
	case dhcpv4.MessageTypeInform:
		// RFC 2131 section 4.3.5: configuration only, no yiaddr and no lease
		// time, sent to ciaddr.
		return s.reply(req, b, dhcpv4.MessageTypeAck, log)
	}
	return nil, errNoReply
}

// request handles DHCPREQUEST in its four client states, RFC 2131 section 4.3.2.
func (s *Server) request(ctx context.Context, log *slog.Logger, req *dhcpv4.DHCPv4, b binding) (*dhcpv4.DHCPv4, error) {
	serverID := req.ServerIdentifier()
	requested := req.RequestedIPAddress()
	var want net.IP
	switch {
	case serverID != nil:
		// SELECTING: the client names the server it chose. Another server's
		// name means it declined our offer: stay silent.
		if !serverID.Equal(ip(s.opts.ServerIP)) {
			log.Debug("client selected another server", "server_id", serverID.String())
			return nil, errNoReply
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
		log.Info("NAK: requested address is not the reservation", "requested", want.String(), "reserved", b.addr)
		nak, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(s.opts.ServerIP))),
			dhcpv4.WithOption(dhcpv4.OptMessage("requested address is not reserved for this client")),
		)
		if err != nil {
			return nil, fmt.Errorf("build NAK: %w", err)
		}
		// RFC 2131 table 3: a NAK carries no yiaddr/ciaddr/siaddr.
		return nak, nil
	}
	// Record the lease durably before the ACK leaves (group commit).
	now := s.opts.Now()
	lease := store.Lease{
		MAC: req.ClientHWAddr.String(), IP: b.addr.String(), HardwareID: b.hw.ID,
		Hostname: b.hw.Hostname, Expires: now.Add(s.opts.LeaseTime).UTC(),
	}
	start := time.Now()
	err := s.st.Batch(ctx, func(tx *store.Tx) error {
		// The reservation is authoritative: a stale lease of the same
		// address to another MAC (hardware re-registered with a new NIC)
		// is dropped. Both steps are idempotent as Batch may rerun fn.
		if old, err := tx.LeaseByIP(lease.IP); err == nil && old.MAC != lease.MAC {
			if err := tx.DeleteLease(old.MAC); err != nil {
				return err
			}
		}
		return tx.PutLease(lease)
	})
	s.m.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("record lease %s → %s: %w", lease.MAC, lease.IP, err)
	}
	return s.reply(req, b, dhcpv4.MessageTypeAck, log)
}

// reply builds an OFFER or ACK for a known client with the options of RFC
// 2131 table 3 and, for netboot clients allowed to PXE, the boot file.
func (s *Server) reply(req *dhcpv4.DHCPv4, b binding, mt dhcpv4.MessageType, log *slog.Logger) (*dhcpv4.DHCPv4, error) {
	inform := req.MessageType() == dhcpv4.MessageTypeInform
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithServerIP(ip(s.opts.ServerIP)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(s.opts.ServerIP))),
	}
	if inform {
		// Section 4.3.5: ciaddr copied, no yiaddr, no lease time.
		mods = append(mods, dhcpv4.WithClientIP(req.ClientIPAddr))
	} else {
		lt := s.opts.LeaseTime
		mods = append(mods,
			dhcpv4.WithYourIP(ip(b.addr)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt)),
			// T1 and T2 defaults of section 4.4.5: 0.5 and 0.875 of the lease.
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lt/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lt*7/8)),
		)
	}
	if b.prefix.IsValid() {
		mods = append(mods, dhcpv4.WithNetmask(net.CIDRMask(b.prefix.Bits(), 32)))
	}
	if b.gateway.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(ip(b.gateway))))
	}
	if len(b.dns) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(b.dns...)))
	}
	if b.hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(b.hostname)))
	}
	if b.domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(b.domain)))
	}
	if b.hw.Netboot.AllowPXE {
		if boot, ok := s.bootFor(req); ok {
			mods = append(mods, boot.modifiers(s.opts.ServerIP)...)
			log = log.With("boot_file", boot.file)
		}
	}
	r, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", mt, err)
	}
	if inform {
		r.YourIPAddr = net.IPv4zero
	}
	log.Debug("reply", "reply", mt.String(), "yiaddr", r.YourIPAddr.String())
	return r, nil
}

// proxy implements ModeProxy: PXE boot information only (PXE specification
// 2.1, "ProxyDHCP"), never an address, and only to netboot clients of
// registered hardware whose netboot is allowed.
func (s *Server) proxy(ctx context.Context, log *slog.Logger, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// Only a REQUEST naming us (or none, e.g. to port 4011) gets an ACK.
		if id := req.ServerIdentifier(); id != nil && !id.Equal(ip(s.opts.ServerIP)) {
			return nil, errNoReply
		}
		mt = dhcpv4.MessageTypeAck
	default:
		return nil, errNoReply
	}
	boot, ok := s.bootFor(req)
	if !ok {
		s.m.dropped.WithLabelValues("not_netboot").Inc()
		return nil, errNoReply
	}
	hw, err := s.st.GetHardwareByMAC(ctx, req.ClientHWAddr.String())
	if errors.Is(err, store.ErrNotFound) {
		s.logUnknown(req)
		return nil, errNoReply
	}
	if err != nil {
		return nil, err
	}
	if !hw.Netboot.AllowPXE {
		log.Debug("netboot not allowed; ProxyDHCP stays silent", "hardware", hw.ID)
		return nil, errNoReply
	}
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithServerIP(ip(s.opts.ServerIP)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip(s.opts.ServerIP))),
	}, boot.modifiers(s.opts.ServerIP)...)
	r, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, fmt.Errorf("build proxy %s: %w", mt, err)
	}
	// A ProxyDHCP reply carries no address: yiaddr stays 0.0.0.0.
	log.Debug("ProxyDHCP reply", "hardware", hw.ID, "boot_file", boot.file)
	return r, nil
}
