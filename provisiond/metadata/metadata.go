// Package metadata serves each machine its own metadata and user-data over
// HTTP: the EC2 instance metadata layout that cloud-init's Ec2 datasource
// crawls, a NoCloud seed, the OpenStack metadata files, and one JSON document
// (/metadata) for scripts and the agent.
//
// The caller is identified by its source address, looked up in the store's
// hardware-by-IP index on every request, then, for an interface with no
// configured address, in the DHCP leases (the address provisiond's DHCP
// leased, or in proxy mode saw the machine take from the site's DHCP
// server), unexpired: no cache, so a change to hardware or machine is
// visible to the next request. X-Forwarded-For is read only when
// the direct peer is inside Options.TrustedProxies. A caller whose address
// matches no hardware gets 404 for every path; no path takes a hardware id
// from the URL, so a machine can only ever read its own record.
//
// Session tokens (IMDSv2 style): PUT /latest/api/token with the header
// X-aws-ec2-metadata-token-ttl-seconds (1-21600) returns a token bound to the
// caller's hardware id and an expiry, signed with HMAC-SHA256. A request that
// carries X-aws-ec2-metadata-token must carry a valid token for the same
// hardware and the machine's current workflow (else 401). Unless
// Options.TokenOptional, the documents that can hold secrets (user-data,
// vendor-data, /metadata, the OpenStack user_data and vendor_data.json and
// the NoCloud user-data and vendor-data) are refused with 401 without one;
// the meta-data tree stays readable. See README.md for the threat model.
//
// POST /phone-home is the one write: the installed OS (cloud-init's
// phone_home module) says it is up, recorded on the caller's machine; see
// servePhoneHome.
package metadata

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Header names of the IMDSv2 session token protocol (AWS's names, so
// existing clients work unchanged).
const (
	TokenHeader    = "X-aws-ec2-metadata-token"
	TokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	// MaxTokenTTL is the longest session a token PUT may ask for (AWS's limit).
	MaxTokenTTL = 6 * time.Hour
)

// Options tune the metadata server.
type Options struct {
	// TrustedProxies are the peers whose X-Forwarded-For header is believed.
	// Empty: the header is ignored from everyone.
	TrustedProxies []netip.Prefix
	// TokenOptional serves the documents that can hold secrets (user-data,
	// vendor-data, /metadata and their OpenStack and NoCloud forms) without
	// a session token. The zero value requires one: an SSRF-able or
	// proxying service on the machine then cannot read them with a plain
	// GET. cloud-init 22.4 sends tokens only on AWS (identified by DMI), so
	// its network datasources need this on bare metal; see README.md.
	TokenOptional bool
	// TokenKey signs session tokens. Empty: a random key per process, so
	// tokens die with a restart (clients then PUT for a new one).
	TokenKey []byte
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

// Server answers metadata requests. It is safe for concurrent use.
type Server struct {
	st      *store.Store
	log     *slog.Logger
	opts    Options
	key     []byte
	now     func() time.Time
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	phone   *prometheus.CounterVec
}

// New returns a metadata server reading from st. It does no I/O; metrics are
// registered on reg (nil: not registered).
func New(st *store.Store, log *slog.Logger, reg prometheus.Registerer, opts Options) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		st:   st,
		log:  log.With("component", "metadata"),
		opts: opts,
		now:  opts.Now,
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "metadata", Name: "requests_total",
			Help: "Metadata requests by path class and HTTP status code.",
		}, []string{"class", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "provisiond", Subsystem: "metadata", Name: "request_duration_seconds",
			Help:    "Time to answer a metadata request, by path class.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5},
		}, []string{"class"}),
		phone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "metadata", Name: "phone_home_total",
			Help: "Phone-home calls of installed OSes from known machines, by result (ready, repeat, not_yet, refused, bad_body).",
		}, []string{"result"}),
	}
	for _, r := range []string{phoneReady, phoneRepeat, phoneNotReady, phoneRefused, phoneBad} {
		s.phone.WithLabelValues(r)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.key = append([]byte(nil), opts.TokenKey...)
	if len(s.key) == 0 {
		s.key = make([]byte, 32)
		_, _ = rand.Read(s.key) // crypto/rand.Read never fails
	}
	if reg != nil {
		reg.MustRegister(s.reqs, s.latency, s.phone)
	}
	return s
}

// Register mounts the metadata paths on mux.
func (s *Server) Register(mux *http.ServeMux) {
	for _, v := range ec2Versions {
		mux.Handle("GET /"+v+"/", s.wrap(classify, s.serveEC2))
	}
	mux.Handle("PUT /latest/api/token", s.wrap(func(string) string { return "token" }, s.serveToken))
	mux.Handle("GET /metadata", s.wrap(func(string) string { return "json" }, s.serveJSON))
	mux.Handle("GET /openstack/", s.wrap(func(string) string { return "openstack" }, s.serveOpenStack))
	mux.Handle("GET /nocloud/", s.wrap(func(string) string { return "nocloud" }, s.serveNoCloud))
	phone := s.wrap(func(string) string { return "phone-home" }, s.servePhoneHome)
	mux.Handle("POST /phone-home", phone)
	mux.Handle("POST /phone-home/{instance_id}", phone)
}

// ParseTrustedProxies turns "10.0.0.0/8" and bare addresses ("10.0.0.1")
// into prefixes, for the --trusted-proxies flag.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("parse trusted proxy %q: not an address or CIDR", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// record is what one request sees: one consistent read of the store.
type record struct {
	hw store.Hardware
	m  *store.Machine // nil when no machine is installed on the hardware
	ip netip.Addr     // the caller's address
}

// request is the per-request state handed to a handler.
type request struct {
	rec      record
	tokenOK  bool // a valid session token for this hardware was presented
	hasProxy bool // the direct peer is a trusted proxy
}

// statusWriter remembers the status code for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// wrap identifies the caller, checks any token, and records metrics.
func (s *Server) wrap(class func(path string) string, h func(http.ResponseWriter, *http.Request, *request)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := s.now()
		w := &statusWriter{ResponseWriter: rw}
		cls := class(r.URL.Path)
		defer func() {
			code := w.code
			if code == 0 {
				code = http.StatusOK
			}
			s.reqs.WithLabelValues(cls, strconv.Itoa(code)).Inc()
			s.latency.WithLabelValues(cls).Observe(s.now().Sub(start).Seconds())
		}()
		w.Header().Set("Cache-Control", "no-store")

		ip, trusted, err := s.callerIP(r)
		if err != nil {
			s.log.Debug("bad caller address", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		rec, err := s.lookup(r.Context(), ip)
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.log.Debug("unknown caller", "ip", ip, "path", r.URL.Path)
			http.NotFound(w, r)
			return
		case err != nil:
			s.log.Error("look up caller", "ip", ip, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		req := &request{rec: rec, hasProxy: trusted}
		if tok := r.Header.Get(TokenHeader); tok != "" {
			if !s.checkToken(tok, binding(rec)) {
				// Also a token of an earlier install: the binding moved on.
				s.log.Debug("invalid, expired or stale session token", "ip", ip, "hardware", rec.hw.ID, "path", r.URL.Path)
				http.Error(w, "invalid or expired session token", http.StatusUnauthorized)
				return
			}
			req.tokenOK = true
		}
		h(w, r, req)
		s.log.Debug("metadata request", "ip", ip, "hardware", rec.hw.ID, "path", r.URL.Path, "code", w.code)
	})
}

// callerIP returns the address the request is from. X-Forwarded-For is used
// only when the direct peer is a trusted proxy: the right-most entry that is
// not itself a trusted proxy is the client (entries further left were written
// by the client and cannot be believed).
func (s *Server) callerIP(r *http.Request) (ip netip.Addr, viaProxy bool, err error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("parse peer address %q: %w", r.RemoteAddr, err)
	}
	peer := ap.Addr().Unmap()
	if !s.trusted(peer) {
		return peer, false, nil
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return peer, false, nil
	}
	var hops []string
	for _, v := range xff {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := parseHop(hops[i])
		if err != nil {
			return netip.Addr{}, true, fmt.Errorf("X-Forwarded-For from trusted proxy %s: %w", peer, err)
		}
		if !s.trusted(a) || i == 0 {
			return a, true, nil
		}
	}
	return peer, false, nil // not reached: hops is never empty
}

// parseHop parses one X-Forwarded-For entry: an address, optionally with a
// port ("10.0.0.5", "10.0.0.5:1234", "[fd00::1]:80").
func parseHop(h string) (netip.Addr, error) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), nil
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), nil
	}
	return netip.Addr{}, fmt.Errorf("bad entry %q", h)
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lookup reads the caller's hardware and machine in one transaction.
func (s *Server) lookup(ctx context.Context, ip netip.Addr) (record, error) {
	rec := record{ip: ip}
	err := s.st.View(ctx, func(tx *store.Tx) error {
		hw, err := tx.HardwareByIP(ip.String())
		if errors.Is(err, store.ErrNotFound) {
			hw, err = s.byLease(tx, ip)
		}
		if err != nil {
			return err
		}
		rec.hw = hw
		m, err := tx.Machine(hw.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			rec.m = &m
		}
		return nil
	})
	if err != nil {
		return record{}, fmt.Errorf("look up hardware for %s: %w", ip, err)
	}
	return rec, nil
}

// byLease finds the hardware whose interface holds an unexpired DHCP
// lease of ip: a machine with no configured address, whose address came
// from provisiond's DHCP or, in proxy mode, from the site's DHCP server
// (provisiond records what it saw the machine take). ErrNotFound when
// there is none.
func (s *Server) byLease(tx *store.Tx, ip netip.Addr) (store.Hardware, error) {
	l, err := tx.LeaseByIP(ip.String())
	if err != nil {
		return store.Hardware{}, err
	}
	if !s.now().Before(l.Expires) {
		return store.Hardware{}, fmt.Errorf("lease of %s expired at %s: %w", ip, l.Expires.Format(time.RFC3339), store.ErrNotFound)
	}
	return tx.HardwareByMAC(l.MAC)
}

// ---------------------------------------------------------------- tokens

// forwardingHeaders are the headers (canonical form) by which a proxy
// announces that it forwarded a request.
var forwardingHeaders = []string{"X-Forwarded-For", "Forwarded", "Via"}

// serveToken issues a session token: PUT /latest/api/token.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, req *request) {
	// Like AWS IMDSv2: a token request that went through a proxy we do not
	// know is refused, so an open proxy or an SSRF-able service on the
	// machine cannot obtain a token and carry it off the machine. Proxies
	// announce themselves with any of three headers (X-Forwarded-For, RFC
	// 7239 Forwarded, RFC 9110 section 7.6.3 Via); the mere presence of
	// one, even empty, is enough. A trusted proxy (it named the client in
	// X-Forwarded-For) is the operator's own relay and may forward.
	if !req.hasProxy {
		for _, h := range forwardingHeaders {
			if _, ok := r.Header[h]; ok {
				s.log.Info("refused forwarded token request", "ip", req.rec.ip, "hardware", req.rec.hw.ID, "header", h)
				http.Error(w, "forwarded token requests are refused", http.StatusForbidden)
				return
			}
		}
	}
	ttl, err := strconv.Atoi(strings.TrimSpace(r.Header.Get(TokenTTLHeader)))
	if err != nil || ttl < 1 || time.Duration(ttl)*time.Second > MaxTokenTTL {
		http.Error(w, fmt.Sprintf("%s must be an integer between 1 and %d", TokenTTLHeader, int(MaxTokenTTL.Seconds())), http.StatusBadRequest)
		return
	}
	tok := s.makeToken(binding(req.rec), s.now().Add(time.Duration(ttl)*time.Second))
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set(TokenTTLHeader, strconv.Itoa(ttl))
	_, _ = w.Write([]byte(tok))
}

// binding is what a session token is bound to: the hardware and the
// machine's current workflow, or the absence of a machine. A reinstall or a
// deprovision changes the current workflow and a finished deprovision
// deletes the machine, so a token minted during one install stops working
// for the next owner of the hardware. The fields are quoted so that no two
// records share a binding, whatever their ids hold.
func binding(rec record) string {
	m := "-"
	if rec.m != nil {
		m = strconv.Quote(rec.m.WorkflowID)
	}
	return strconv.Quote(rec.hw.ID) + "|" + m
}

// makeToken returns base64url(binding "|" expiry-unix) "." base64url(HMAC).
// The binding is checked against the store on every use, not only the
// signature: the lookup that identifies the caller reads the machine
// anyway, so this costs nothing.
func (s *Server) makeToken(bind string, exp time.Time) string {
	payload := bind + "|" + strconv.FormatInt(exp.Unix(), 10)
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(payload))
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(mac.Sum(nil))
}

// checkToken reports whether tok is a live token issued for the binding
// bind (see binding).
func (s *Server) checkToken(tok, bind string) bool {
	p, sig, ok := strings.Cut(tok, ".")
	if !ok || len(tok) > 1024 {
		return false
	}
	// Strict: one token has exactly one spelling (no stray padding bits).
	enc := base64.RawURLEncoding.Strict()
	payload, err1 := enc.DecodeString(p)
	got, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return false
	}
	mac := hmac.New(sha256.New, s.key)
	mac.Write(payload)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return false
	}
	i := strings.LastIndexByte(string(payload), '|')
	if i < 0 {
		return false
	}
	exp, err := strconv.ParseInt(string(payload[i+1:]), 10, 64)
	if err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return false
	}
	return string(payload[:i]) == bind
}

// guard answers 401 and returns false when the document needs a token that
// the request does not carry.
func (s *Server) guard(w http.ResponseWriter, req *request) bool {
	if !s.opts.TokenOptional && !req.tokenOK {
		http.Error(w, "a session token is required: PUT /latest/api/token", http.StatusUnauthorized)
		return false
	}
	return true
}

// ---------------------------------------------------------------- helpers

func writeText(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(body))
}

func writeRaw(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// hostIP splits an interface address "10.0.0.5/24" (or "10.0.0.5").
func hostIP(s string) (netip.Prefix, bool) {
	if s == "" {
		return netip.Prefix{}, false
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// maskString renders the netmask of p in dotted form (IPv4) or as a prefix
// length (IPv6).
func maskString(p netip.Prefix) string {
	if p.Addr().Is4() {
		return net.IP(net.CIDRMask(p.Bits(), 32)).String()
	}
	return strconv.Itoa(p.Bits())
}
