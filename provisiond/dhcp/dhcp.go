// Package dhcp is provisiond's DHCPv4 server: it hands registered hardware
// its reserved address and tells netbooting firmware where to find iPXE and
// the per-machine iPXE script.
//
// Modes (--dhcp-mode):
//
//   - reservation: full DHCP for MACs registered as hardware, each with the
//     address of its interface; other MACs get no reply (logged once per MAC
//     per minute and counted).
//   - proxy: ProxyDHCP beside another DHCP server: boot information only, to
//     netboot clients of registered hardware, never an address.
//   - off: nothing is served.
//
// Every ACK that grants an address is recorded in the store (group commit,
// store.Batch) before it leaves, so a crash never loses an acknowledged lease.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Modes of the server.
const (
	ModeReservation = "reservation"
	ModeProxy       = "proxy"
	ModeOff         = "off"
)

// ParseMode validates a --dhcp-mode value.
func ParseMode(s string) (string, error) {
	switch s {
	case ModeReservation, ModeProxy, ModeOff:
		return s, nil
	}
	return "", fmt.Errorf("dhcp mode %q: want %s, %s or %s", s, ModeReservation, ModeProxy, ModeOff)
}

// Binaries names the iPXE binaries by firmware family. They are file names
// relative to the TFTP root, and to HTTPBase+"/ipxe/bin/" for UEFI HTTP boot.
type Binaries struct {
	BIOS     string // default undionly.kpxe
	EFIx8664 string // default snponly.efi (some NICs need it rather than ipxe.efi: smee#79)
	EFIARM64 string // default snp-arm64.efi; Debian's ipxe package has none
}

// Options configure a Server.
type Options struct {
	// Mode is ModeReservation, ModeProxy or ModeOff.
	Mode string
	// Interface is the network interface Serve binds to (SO_BINDTODEVICE);
	// empty binds all interfaces.
	Interface string
	// Port to listen on; 0 means 67.
	Port int
	// ServerIP is the address clients reach provisiond at (--public-ip): the
	// server identifier (option 54) and the TFTP next-server (siaddr).
	ServerIP netip.Addr
	// HTTPBase is provisiond's HTTP base URL, e.g. "http://10.0.0.1:8080",
	// for the iPXE script and UEFI HTTP boot URLs.
	HTTPBase string
	// LeaseTime is option 51; 0 means one hour. The store's interfaces have
	// no per-interface lease time, so one value serves all.
	LeaseTime time.Duration
	// Domain is option 15 when the hardware's hostname is not a FQDN.
	Domain string
	// UserClass is the option-77 user class of our own iPXE build; clients
	// that send it get the script URL. Default "baremetal".
	UserClass string
	// Binaries names the iPXE binaries.
	Binaries Binaries
	// Workers bounds packets handled at once; 0 means 1024. Group commit
	// needs many in flight.
	Workers int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the DHCPv4 server.
type Server struct {
	st   *store.Store
	log  *slog.Logger
	opts Options
	m    metrics

	mu      sync.Mutex
	unknown map[string]time.Time // MAC → last time it was logged
}

type metrics struct {
	received   *prometheus.CounterVec
	replies    *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	unknownMAC prometheus.Counter
	commit     prometheus.Histogram
}

// New returns a server; it does no I/O. reg receives its metrics.
func New(st *store.Store, log *slog.Logger, reg prometheus.Registerer, opts Options) *Server {
	if opts.Port == 0 {
		opts.Port = dhcpv4.ServerPort
	}
	if opts.LeaseTime == 0 {
		opts.LeaseTime = time.Hour
	}
	if opts.UserClass == "" {
		opts.UserClass = "baremetal"
	}
	if opts.Binaries.BIOS == "" {
		opts.Binaries.BIOS = "undionly.kpxe"
	}
	if opts.Binaries.EFIx8664 == "" {
		opts.Binaries.EFIx8664 = "snponly.efi"
	}
	if opts.Binaries.EFIARM64 == "" {
		opts.Binaries.EFIARM64 = "snp-arm64.efi"
	}
	if opts.Workers == 0 {
		opts.Workers = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		st:      st,
		log:     log.With("component", "dhcp"),
		opts:    opts,
		unknown: make(map[string]time.Time),
		m: metrics{
			received: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "provisiond_dhcp_received_total", Help: "DHCP messages received, by message type.",
			}, []string{"type"}),
			replies: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "provisiond_dhcp_replies_total", Help: "DHCP replies sent, by message type.",
			}, []string{"type"}),
			dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "provisiond_dhcp_dropped_total", Help: "DHCP messages not answered, by reason.",
			}, []string{"reason"}),
			unknownMAC: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "provisiond_dhcp_unknown_mac_total", Help: "DHCP messages from MACs that are not registered hardware (discovery candidates).",
			}),
			commit: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "provisiond_dhcp_lease_commit_seconds", Help: "Time to make a lease durable before its ACK is sent.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
			}),
		},
	}
	if reg != nil {
		reg.MustRegister(s.m.received, s.m.replies, s.m.dropped, s.m.unknownMAC, s.m.commit)
	}
	return s
}

// Serve binds Options.Interface, UDP port Options.Port, and answers until
// ctx ends. In ModeOff it just waits for ctx.
func (s *Server) Serve(ctx context.Context) error {
	if s.opts.Mode == ModeOff {
		s.log.Info("DHCP is off")
		<-ctx.Done()
		return nil
	}
	conn, err := server4.NewIPv4UDPConn(s.opts.Interface, &net.UDPAddr{Port: s.opts.Port})
	if err != nil {
		return fmt.Errorf("dhcp: listen on interface %q port %d: %w", s.opts.Interface, s.opts.Port, err)
	}
	return s.ServeConn(ctx, conn)
}

// ServeConn answers DHCP on conn until ctx ends, then closes conn. Tests use
// it to serve on a socket made inside a network namespace.
func (s *Server) ServeConn(ctx context.Context, conn net.PacketConn) error {
	if _, err := ParseMode(s.opts.Mode); err != nil {
		conn.Close()
		return err
	}
	if !s.opts.ServerIP.Is4() {
		conn.Close()
		return fmt.Errorf("dhcp: server IP %v is not an IPv4 address", s.opts.ServerIP)
	}
	s.log.Info("serving DHCP", "mode", s.opts.Mode, "interface", s.opts.Interface, "addr", conn.LocalAddr().String(), "server_ip", s.opts.ServerIP)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		conn.Close()
	}()
	sem := make(chan struct{}, s.opts.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		buf := make([]byte, 1500)
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.serveOne(ctx, conn, buf[:n], peer)
		}()
	}
}

func (s *Server) serveOne(ctx context.Context, conn net.PacketConn, raw []byte, peer net.Addr) {
	req, err := dhcpv4.FromBytes(raw)
	if err != nil {
		s.m.dropped.WithLabelValues("malformed").Inc()
		s.log.Debug("dropped malformed packet", "peer", peer.String(), "err", err)
		return
	}
	reply, dst := s.Handle(ctx, req)
	if reply == nil {
		return
	}
	if _, err := conn.WriteTo(reply.ToBytes(), dst); err != nil {
		s.m.dropped.WithLabelValues("send_error").Inc()
		s.log.Warn("send reply", "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "dst", dst.String(), "err", err)
		return
	}
	s.m.replies.WithLabelValues(reply.MessageType().String()).Inc()
}

// logUnknown logs an unknown MAC at most once per minute per MAC.
func (s *Server) logUnknown(req *dhcpv4.DHCPv4) {
	s.m.unknownMAC.Inc()
	now := s.opts.Now()
	mac := req.ClientHWAddr.String()
	s.mu.Lock()
	last, seen := s.unknown[mac]
	if seen && now.Sub(last) < time.Minute {
		s.mu.Unlock()
		return
	}
	if len(s.unknown) >= 4096 { // bound memory under a flood of random MACs
		for k, t := range s.unknown {
			if now.Sub(t) >= time.Minute {
				delete(s.unknown, k)
			}
		}
		if len(s.unknown) >= 4096 {
			s.mu.Unlock()
			return // still counted; logging every one would flood the log
		}
	}
	s.unknown[mac] = now
	s.mu.Unlock()
	s.log.Info("no reply to unknown MAC", "mac", mac, "xid", req.TransactionID.String(), "type", req.MessageType().String(),
		"vendor_class", req.ClassIdentifier(), "relay", req.GatewayIPAddr.String())
}

// errNoReply means the message is dealt with and deserves no answer.
var errNoReply = errors.New("no reply")
