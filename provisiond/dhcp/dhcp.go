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
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Mode is how the server answers (--dhcp-mode).
type Mode string

// Modes of the server.
const (
	ModeReservation Mode = "reservation"
	ModeProxy       Mode = "proxy"
	ModeOff         Mode = "off"
)

// ParseMode validates a --dhcp-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeReservation, ModeProxy, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("dhcp mode %q: want %s, %s or %s", s, ModeReservation, ModeProxy, ModeOff)
}

// Binaries names the iPXE binaries by firmware family. They are file names
// relative to the TFTP root, and to HTTPBase+"/ipxe/bin/" for UEFI HTTP boot.
type Binaries struct {
	BIOS     string // default undionly.kpxe
	EFIx8664 string // default snponly.efi (some NICs need it rather than ipxe.efi: smee#79)
	EFIARM64 string // default snp-arm64.efi; Debian's ipxe package has none: provisiond --efi-arm64-binary names GRUB's
}

// Options configure a Server.
type Options struct {
	// Mode is ModeReservation, ModeProxy or ModeOff.
	Mode Mode
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
	// LeaseReuse is the age under which a stored lease is handed out again
	// without a write (lease caching, see Server.leaseReuse); 0 means a
	// quarter of LeaseTime, the default of ISC dhcpd's dhcp-cache-threshold
	// (Kea's cache-threshold is the same feature, off unless set). It is
	// capped at half of LeaseTime so that a client renewing at T1 always
	// gets a fresh lease. Negative: every REQUEST writes.
	LeaseReuse time.Duration
	// Domain is option 15 when the hardware's hostname is not a FQDN.
	Domain string
	// UserClass is the option-77 user class of our own iPXE build; clients
	// that send it get the script URL. Default "baremetal".
	UserClass string
	// Binaries names the iPXE binaries.
	Binaries Binaries
	// Readers is the number of goroutines that read packets, answer them
	// and send the replies; 0 means 1. Nothing they do blocks for long
	// (lease writes are handed off, see Workers), and the socket lets one
	// read at a time: a second reader doubled the CPU per DORA at 2,000
	// DORA/s on 2 cores (each read hands the socket's lock over, waking a
	// goroutine and often a thread) and did not raise the peak. More may
	// pay on many cores at rates far above 10,000 DORA/s.
	Readers int
	// Workers bounds the lease writes in flight: a REQUEST whose lease must
	// be written waits, on a goroutine of its own, until the group commit
	// is on disk (milliseconds), and group commit needs many of those at
	// once. 0 means 1024. When all are taken, reading waits.
	Workers int
	// ReadBuffer is the socket receive buffer (SO_RCVBUF) in bytes; 0 means
	// 4 MiB. The kernel default (about 200 KiB) overflows, and drops
	// packets, within milliseconds of a burst at a few thousand packets/s
	// (a rack powering on). As root, SO_RCVBUFFORCE lifts it past
	// net.core.rmem_max.
	ReadBuffer int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the DHCPv4 server.
type Server struct {
	st     *store.Store
	log    *slog.Logger
	opts   Options
	m      metrics
	hw     hwCache
	leases leaseCache

	serverIP     net.IP // opts.ServerIP: siaddr and option 54
	leaseTimeOpt []byte // option 51 for opts.LeaseTime

	mu      sync.Mutex
	unknown map[string]time.Time // MAC → last time it was logged
}

// Reasons for dropped messages (the "reason" label).
const (
	dropNotARequest = iota
	dropMessageType
	dropNoAddress
	dropDeclined
	dropNotNetboot
	dropMalformed
	dropSendError
	dropError
	numDrops
)

var dropReasons = [numDrops]string{"not_a_request", "message_type", "no_address", "declined", "not_netboot", "malformed", "send_error", "error"}

type metrics struct {
	received    *prometheus.CounterVec
	replies     *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	unknownMAC  prometheus.Counter
	leaseReused prometheus.Counter
	commit      prometheus.Histogram

	// The children of the vectors, resolved once: WithLabelValues hashes
	// its labels and takes a lock, on every packet otherwise.
	receivedBy [256]atomic.Pointer[prometheus.Counter]
	repliesBy  [256]atomic.Pointer[prometheus.Counter]
	droppedBy  [numDrops]prometheus.Counter
}

func counterOf(cache *[256]atomic.Pointer[prometheus.Counter], vec *prometheus.CounterVec, mt dhcpv4.MessageType) prometheus.Counter {
	if c := cache[mt].Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(mt.String())
	cache[mt].Store(&c)
	return c
}

func (m *metrics) receivedOf(mt dhcpv4.MessageType) prometheus.Counter {
	return counterOf(&m.receivedBy, m.received, mt)
}

func (m *metrics) repliesOf(mt dhcpv4.MessageType) prometheus.Counter {
	return counterOf(&m.repliesBy, m.replies, mt)
}

func (m *metrics) droppedOf(reason int) prometheus.Counter { return m.droppedBy[reason] }

// New returns a server; it does no I/O. reg receives its metrics.
func New(st *store.Store, log *slog.Logger, reg prometheus.Registerer, opts Options) *Server {
	if opts.Port == 0 {
		opts.Port = dhcpv4.ServerPort
	}
	if opts.LeaseTime == 0 {
		opts.LeaseTime = time.Hour
	}
	if opts.LeaseReuse == 0 {
		opts.LeaseReuse = opts.LeaseTime / 4
	}
	opts.LeaseReuse = min(opts.LeaseReuse, opts.LeaseTime/2)
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
	if opts.Readers == 0 {
		opts.Readers = 1
	}
	if opts.Workers == 0 {
		opts.Workers = 1024
	}
	if opts.ReadBuffer == 0 {
		opts.ReadBuffer = 4 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		st:           st,
		log:          log.With("component", "dhcp"),
		opts:         opts,
		serverIP:     ip(opts.ServerIP),
		leaseTimeOpt: seconds(opts.LeaseTime),
		unknown:      make(map[string]time.Time),
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
			leaseReused: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "provisiond_dhcp_lease_reused_total", Help: "REQUESTs ACKed from a fresh stored lease, without a write (lease caching).",
			}),
			commit: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "provisiond_dhcp_lease_commit_seconds", Help: "Time to make a lease durable before its ACK is sent.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
			}),
		},
	}
	for i, r := range dropReasons {
		s.m.droppedBy[i] = s.m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(s.m.received, s.m.replies, s.m.dropped, s.m.unknownMAC, s.m.leaseReused, s.m.commit)
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
//
// Options.Readers goroutines (one by default) each read a packet, answer
// it and send the reply, then read the next, reusing their buffers. A
// packet whose answer needs a lease write goes to a goroutine of its own,
// which sends the reply once the write is durable, so a reader never
// waits for a disk. Neither a goroutine per packet (its stack grows anew
// on every packet) nor hundreds of blocked readers (the socket's lock is
// handed from one to the next on every packet, waking goroutines and
// threads, and each GC scans all their stacks) came out as fast in the
// perfdhcp benchmark.
func (s *Server) ServeConn(ctx context.Context, conn net.PacketConn) error {
	if _, err := ParseMode(string(s.opts.Mode)); err != nil {
		_ = conn.Close() // ours to close; a failed close of a socket we stop using changes nothing
		return err
	}
	if !s.opts.ServerIP.Is4() {
		_ = conn.Close() // ours to close; a failed close of a socket we stop using changes nothing
		return fmt.Errorf("dhcp: server IP %v is not an IPv4 address", s.opts.ServerIP)
	}
	rcvbuf := setReadBuffer(conn, s.opts.ReadBuffer)
	s.log.Info("serving DHCP", "mode", s.opts.Mode, "interface", s.opts.Interface, "addr", conn.LocalAddr().String(),
		"server_ip", s.opts.ServerIP, "readers", s.opts.Readers, "rcvbuf", rcvbuf)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		_ = conn.Close() // ours to close; a failed close of a socket we stop using changes nothing
	}()
	w := &writers{sem: make(chan struct{}, s.opts.Workers)}
	errs := make(chan error, s.opts.Readers)
	var readers sync.WaitGroup
	for range s.opts.Readers {
		readers.Add(1)
		go func() {
			defer readers.Done()
			errs <- s.reader(ctx, conn, w)
		}()
	}
	// The first reader to stop (conn closed, or a read error) closes conn,
	// which stops the others.
	err := <-errs
	close(done)
	readers.Wait()
	w.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// writers runs lease writes, at most cap(sem) at once.
type writers struct {
	sem chan struct{}
	wg  sync.WaitGroup
}

// reader serves packets from conn until a read fails.
func (s *Server) reader(ctx context.Context, conn net.PacketConn, w *writers) error {
	buf, out := make([]byte, 1500), make([]byte, 0, 1500)
	udp, _ := conn.(*net.UDPConn)
	for {
		var (
			n    int
			ap   netip.AddrPort // the netip form allocates no address per packet
			peer net.Addr
			err  error
		)
		if udp != nil {
			n, ap, err = udp.ReadFromUDPAddrPort(buf)
		} else {
			n, peer, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		req, err := dhcpv4.FromBytes(buf[:n]) // copies what it keeps
		if err != nil {
			s.m.droppedOf(dropMalformed).Inc()
			if s.log.Enabled(ctx, slog.LevelDebug) {
				from := ap.String()
				if peer != nil {
					from = peer.String()
				}
				s.log.Debug("dropped malformed packet", "peer", from, "err", err)
			}
			continue
		}
		a := s.handle(ctx, req)
		if a.write == nil {
			out = s.send(conn, udp, req, a, out[:0])
			continue
		}
		w.sem <- struct{}{}
		w.wg.Add(1)
		go s.commitAndSend(ctx, conn, udp, req, a, w)
	}
}

// commitAndSend makes a's write durable, then sends its reply.
func (s *Server) commitAndSend(ctx context.Context, conn net.PacketConn, udp *net.UDPConn, req *dhcpv4.DHCPv4, a answer, w *writers) {
	defer func() { <-w.sem; w.wg.Done() }()
	if s.commit(ctx, a.write) == nil {
		s.send(conn, udp, req, a, nil)
	}
}

// send sends a's reply, if any, encoded into buf, which it returns for
// reuse.
func (s *Server) send(conn net.PacketConn, udp *net.UDPConn, req *dhcpv4.DHCPv4, a answer, buf []byte) []byte {
	if a.reply == nil {
		return buf
	}
	buf = appendPacket(buf, a.reply)
	var err error
	if udp != nil {
		ip, _ := netip.AddrFromSlice(a.dst.IP.To4())
		_, err = udp.WriteToUDPAddrPort(buf, netip.AddrPortFrom(ip, uint16(a.dst.Port)))
	} else {
		_, err = conn.WriteTo(buf, a.dst)
	}
	if err != nil {
		s.m.droppedOf(dropSendError).Inc()
		s.log.Warn("send reply", "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "dst", a.dst.String(), "err", err)
		return buf
	}
	s.m.repliesOf(msgType(a.reply)).Inc()
	return buf
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
