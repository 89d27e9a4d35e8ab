package dhcp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// binding is what the server derived from one MAC's hardware record: the
// reserved address and the reply options, encoded once. It is shared by
// every packet of that MAC until the record changes, so nothing may modify
// it or the slices it holds (replies only read them).
type binding struct {
	hwID         string
	hostnameFull string // as stored, for the lease record
	allowPXE     bool
	addr         netip.Addr // invalid when the interface has no address
	addrString   string
	yiaddr       net.IP
	opts         []rawOption // netmask, router, DNS, host name, domain
}

type rawOption struct {
	code uint8
	val  []byte
}

// newBinding derives the binding of interface mac of hw.
func newBinding(hw store.Hardware, mac, defaultDomain string) (*binding, error) {
	b := &binding{hwID: hw.ID, hostnameFull: hw.Hostname, allowPXE: hw.Netboot.AllowPXE}
	var (
		prefix  netip.Prefix
		gateway netip.Addr
		dns     []net.IP
	)
	for _, nic := range hw.Interfaces {
		if !strings.EqualFold(nic.MAC, mac) {
			continue
		}
		if nic.IP != "" {
			p, err := netip.ParsePrefix(nic.IP)
			if err != nil {
				a, err2 := netip.ParseAddr(nic.IP)
				if err2 != nil || !a.Is4() {
					return nil, fmt.Errorf("hardware %s interface %s: address %q: %w", hw.ID, mac, nic.IP, err)
				}
				p = netip.PrefixFrom(a, 32)
			}
			if !p.Addr().Is4() {
				return nil, fmt.Errorf("hardware %s interface %s: %q is not IPv4", hw.ID, mac, nic.IP)
			}
			b.addr, prefix = p.Addr(), p
		}
		if g, err := netip.ParseAddr(nic.Gateway); err == nil && g.Is4() {
			gateway = g
		}
		for _, ns := range nic.NameServers {
			if a, err := netip.ParseAddr(ns); err == nil && a.Is4() {
				dns = append(dns, ip(a))
			}
		}
	}
	if b.addr.IsValid() {
		b.addrString, b.yiaddr = b.addr.String(), ip(b.addr)
	}
	hostname, domain := hw.Hostname, defaultDomain
	if host, dom, ok := strings.Cut(hw.Hostname, "."); ok {
		hostname, domain = host, dom
	}
	// The same options, in the same encodings, that the dhcpv4 package's
	// WithNetmask, OptRouter, OptDNS, OptHostName and OptDomainName give.
	add := func(o dhcpv4.Option) { b.opts = append(b.opts, rawOption{o.Code.Code(), o.Value.ToBytes()}) }
	if prefix.IsValid() {
		add(dhcpv4.OptSubnetMask(net.CIDRMask(prefix.Bits(), 32)))
	}
	if gateway.IsValid() {
		add(dhcpv4.OptRouter(ip(gateway)))
	}
	if len(dns) > 0 {
		add(dhcpv4.OptDNS(dns...))
	}
	if hostname != "" {
		add(dhcpv4.OptHostName(hostname))
	}
	if domain != "" {
		add(dhcpv4.OptDomainName(domain))
	}
	return b, nil
}

// hwCache keeps, per MAC, the binding derived from its hardware record
// with the stored bytes it came from. Every packet still looks the record
// up in the store, in a read transaction, so it always acts on the current
// record; only the JSON decode and the derivation are saved, when the
// stored bytes are unchanged. Nothing needs invalidating: an edit of the
// record changes its bytes (the BMC poller's power-state writes included),
// a deleted record is not found, and both drop the entry.
type hwCache struct {
	mu sync.RWMutex
	m  map[string]*hwEntry // by MAC in store.NormalizeMAC form
}

type hwEntry struct {
	raw []byte
	b   *binding
}

// maxCached bounds the cache. Entries are made only for registered MACs
// and dropped when they go, so the bound is reached only by a store with
// more interfaces than that; the cache then starts over.
const maxCached = 1 << 16

// lookup returns the binding of mac (in store.NormalizeMAC form, as
// net.HardwareAddr.String gives) from tx, decoding the record only if its
// bytes changed since the last call.
func (c *hwCache) lookup(tx *store.Tx, mac, defaultDomain string) (*binding, error) {
	raw, err := tx.HardwareByMACRaw(mac)
	c.mu.RLock()
	e := c.m[mac]
	c.mu.RUnlock()
	if err != nil {
		if e != nil {
			c.mu.Lock()
			delete(c.m, mac)
			c.mu.Unlock()
		}
		return nil, err
	}
	if e != nil && bytes.Equal(e.raw, raw) {
		return e.b, nil
	}
	hw, err := store.DecodeHardware(raw)
	if err != nil {
		return nil, fmt.Errorf("hardware with MAC %s: %w", mac, err)
	}
	b, err := newBinding(hw, mac, defaultDomain)
	if err != nil {
		return nil, err
	}
	e = &hwEntry{raw: bytes.Clone(raw), b: b}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*hwEntry)
	}
	c.m[mac] = e
	c.mu.Unlock()
	return b, nil
}

// leaseCache is hwCache for the stored leases, which a REQUEST reads to
// decide whether it can reuse its lease (Server.leaseReuse): while the
// lease is unchanged, a REQUEST costs a compare, not a decode.
type leaseCache struct {
	mu sync.RWMutex
	m  map[string]*leaseEntry
}

type leaseEntry struct {
	raw   []byte
	lease store.Lease
}

// lookup returns the lease of mac as tx sees it, and whether there is one.
func (c *leaseCache) lookup(tx *store.Tx, mac string) (store.Lease, bool, error) {
	raw, err := tx.LeaseRaw(mac)
	c.mu.RLock()
	e := c.m[mac]
	c.mu.RUnlock()
	if errors.Is(err, store.ErrNotFound) {
		if e != nil {
			c.mu.Lock()
			delete(c.m, mac)
			c.mu.Unlock()
		}
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, err
	}
	if e != nil && bytes.Equal(e.raw, raw) {
		return e.lease, true, nil
	}
	l, err := store.DecodeLease(raw)
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("lease of %s: %w", mac, err)
	}
	e = &leaseEntry{raw: bytes.Clone(raw), lease: l}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*leaseEntry)
	}
	c.m[mac] = e
	c.mu.Unlock()
	return l, true, nil
}
