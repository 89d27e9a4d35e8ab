package dhcp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

var (
	macPXE   = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	macNoPXE = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	macOther = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x99}
	serverIP = netip.MustParseAddr("10.99.0.1")
)

func testLogger(t testing.TB) *slog.Logger {
	if _, fuzz := t.(*testing.F); testing.Verbose() && !fuzz { // f.Log is forbidden inside fuzz targets
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// testStore opens a store with two registered machines.
func testStore(t testing.TB, noSync bool) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: noSync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // test cleanup
	err = st.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.CreateHardware(store.Hardware{
			ID: "hw-pxe", Hostname: "node1.lab.example",
			Interfaces: []store.Interface{{MAC: macPXE.String(), IP: "10.99.0.10/24", Gateway: "10.99.0.1", NameServers: []string{"10.99.0.53", "10.99.0.54"}}},
			Netboot:    store.Netboot{AllowPXE: true, AllowWorkflow: true},
		}); err != nil {
			return err
		}
		return tx.CreateHardware(store.Hardware{
			ID: "hw-nopxe", Hostname: "node2",
			Interfaces: []store.Interface{{MAC: macNoPXE.String(), IP: "10.50.0.11/16", Gateway: "10.50.0.1"}},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func testServer(t testing.TB, mode Mode, st *store.Store, reg prometheus.Registerer) *Server {
	return New(st, testLogger(t), reg, Options{
		Mode: mode, ServerIP: serverIP, HTTPBase: "http://10.99.0.1:8080", LeaseTime: 10 * time.Minute, Domain: "default.example",
	})
}

// pxe returns modifiers of a PXE ROM with architecture arch; extra user
// classes follow (iPXE sends "iPXE").
func pxe(arch iana.Arch, vendor string, userClass string) []dhcpv4.Modifier {
	m := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, make([]byte, 16)...)),
	}
	if userClass != "" {
		m = append(m, dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte(userClass)))
	}
	return m
}

func discover(t testing.TB, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func request(t testing.TB, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// summary is what the tests compare of a reply.
type summary struct {
	Type      string
	YIAddr    string
	CIAddr    string
	SIAddr    string
	File      string
	Opt60     string
	Opt175    []byte
	Opt43     []byte
	Opt17     string // root path: the arm64 GRUB loader's config URL
	Mask      string
	Router    string
	DNS       string
	Host      string
	Domain    string
	LeaseTime time.Duration
	ServerID  string
	Dst       string
	Broadcast bool
}

func summarize(r *dhcpv4.DHCPv4, dst *net.UDPAddr) *summary {
	if r == nil {
		return nil
	}
	s := &summary{
		Type: r.MessageType().String(), YIAddr: r.YourIPAddr.String(), CIAddr: r.ClientIPAddr.String(), SIAddr: r.ServerIPAddr.String(),
		File: r.BootFileName, Opt60: r.ClassIdentifier(), Opt175: r.Options.Get(dhcpv4.GenericOptionCode(175)),
		Opt43: r.Options.Get(dhcpv4.OptionVendorSpecificInformation), Opt17: string(r.Options.Get(dhcpv4.OptionRootPath)),
		Host: r.HostName(), Domain: r.DomainName(), LeaseTime: r.IPAddressLeaseTime(0), Broadcast: r.IsBroadcast(),
	}
	if m := r.SubnetMask(); m != nil {
		s.Mask = net.IP(m).String()
	}
	if rt := r.Router(); len(rt) > 0 {
		s.Router = rt[0].String()
	}
	for i, d := range r.DNS() {
		if i > 0 {
			s.DNS += ","
		}
		s.DNS += d.String()
	}
	if id := r.ServerIdentifier(); id != nil {
		s.ServerID = id.String()
	}
	if dst != nil {
		s.Dst = dst.String()
	}
	return s
}

func TestReservation(t *testing.T) {
	ctx := context.Background()
	relay := net.IPv4(10, 50, 0, 1)
	reserved := summary{
		Type: "OFFER", YIAddr: "10.99.0.10", CIAddr: "0.0.0.0", SIAddr: "10.99.0.1", Mask: "255.255.255.0", Router: "10.99.0.1",
		DNS: "10.99.0.53,10.99.0.54", Host: "node1", Domain: "lab.example", LeaseTime: 10 * time.Minute, ServerID: "10.99.0.1",
		Dst: "255.255.255.255:68",
	}
	with := func(f func(*summary)) *summary { s := reserved; f(&s); return &s }
	tests := map[string]struct {
		req  *dhcpv4.DHCPv4
		want *summary
	}{
		"discover, plain client": {req: discover(t, macPXE), want: &reserved},
		"discover, BIOS PXE ROM → undionly.kpxe over TFTP": {
			req: discover(t, macPXE, pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175, s.Opt43 = "undionly.kpxe", "PXEClient", []byte{176, 1, 1}, []byte{6, 1, 8, 255}
			}),
		},
		"discover, x86-64 UEFI PXE → snponly.efi": {
			req: discover(t, macPXE, pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", "")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175, s.Opt43 = "snponly.efi", "PXEClient", []byte{176, 1, 1}, []byte{6, 1, 8, 255}
			}),
		},
		"discover, arm64 UEFI PXE → arm64 binary and its GRUB config URL": {
			req: discover(t, macPXE, pxe(iana.EFI_ARM64, "PXEClient:Arch:00011:UNDI:003016", "")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175, s.Opt43 = "snp-arm64.efi", "PXEClient", []byte{176, 1, 1}, []byte{6, 1, 8, 255}
				s.Opt17 = "http://10.99.0.1:8080/grub/52:54:00:00:00:01"
			}),
		},
		"discover, arm64 UEFI PXE, option 93 = 0x0b as AAVMF sends it": {
			req: discover(t, macPXE, pxe(iana.Arch(0x0b), "PXEClient:Arch:00011:UNDI:003000", "")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175, s.Opt43 = "snp-arm64.efi", "PXEClient", []byte{176, 1, 1}, []byte{6, 1, 8, 255}
				s.Opt17 = "http://10.99.0.1:8080/grub/52:54:00:00:00:01"
			}),
		},
		"discover, UEFI HTTP boot → HTTP URL of the binary, option 60 echoed": {
			req: discover(t, macPXE, pxe(iana.EFI_X86_64_HTTP, "HTTPClient:Arch:00016:UNDI:003016", "")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175 = "http://10.99.0.1:8080/ipxe/bin/snponly.efi", "HTTPClient", []byte{176, 1, 1}
			}),
		},
		"discover, iPXE → script URL": {
			req: discover(t, macPXE, pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "iPXE")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175 = "http://10.99.0.1:8080/ipxe/52:54:00:00:00:01", "PXEClient", []byte{176, 1, 1}
			}),
		},
		"discover, our own user class → script URL": {
			req: discover(t, macPXE, pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", "baremetal")...),
			want: with(func(s *summary) {
				s.File, s.Opt60, s.Opt175 = "http://10.99.0.1:8080/ipxe/52:54:00:00:00:01", "PXEClient", []byte{176, 1, 1}
			}),
		},
		"discover, PXE with a bad option 97 is not netboot": {
			req: discover(t, macPXE, append(pxe(iana.INTEL_X86PC, "PXEClient", ""),
				dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, []byte{1, 2, 3}))...),
			want: &reserved,
		},
		"discover, allow_pxe off: address, no boot file": {
			req: discover(t, macNoPXE, pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")...),
			want: &summary{Type: "OFFER", YIAddr: "10.50.0.11", CIAddr: "0.0.0.0", SIAddr: "10.99.0.1", Mask: "255.255.0.0", Router: "10.50.0.1",
				Host: "node2", Domain: "default.example", LeaseTime: 10 * time.Minute, ServerID: "10.99.0.1", Dst: "255.255.255.255:68"},
		},
		"discover, unknown MAC: no reply": {req: discover(t, macOther), want: nil},
		"discover, relayed: unicast to the relay's port 67": {
			req: discover(t, macNoPXE, dhcpv4.WithGatewayIP(relay)),
			want: &summary{Type: "OFFER", YIAddr: "10.50.0.11", CIAddr: "0.0.0.0", SIAddr: "10.99.0.1", Mask: "255.255.0.0", Router: "10.50.0.1",
				Host: "node2", Domain: "default.example", LeaseTime: 10 * time.Minute, ServerID: "10.99.0.1", Dst: "10.50.0.1:67"},
		},
		"request selecting: ACK": {
			req: request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice())),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))),
			want: with(func(s *summary) { s.Type = "ACK" }),
		},
		"request selecting another server: no reply": {
			req: request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 2))),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))),
			want: nil,
		},
		"request init-reboot, wrong address: NAK broadcast": {
			req:  request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77)))),
			want: &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.99.0.1", Dst: "255.255.255.255:68"},
		},
		"request init-reboot, wrong address, relayed: NAK to relay with broadcast bit": {
			req: request(t, macPXE, dhcpv4.WithGatewayIP(relay), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77)))),
			want: &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.99.0.1", Dst: "10.50.0.1:67",
				Broadcast: true},
		},
		"request renewing: ACK unicast to ciaddr": {
			req: request(t, macPXE, dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 10))),
			want: with(func(s *summary) {
				s.Type, s.CIAddr, s.Dst = "ACK", "0.0.0.0", "10.99.0.10:68"
			}),
		},
		"request renewing a foreign address: NAK": {
			req:  request(t, macPXE, dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 200))),
			want: &summary{Type: "NAK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "0.0.0.0", ServerID: "10.99.0.1", Dst: "255.255.255.255:68"},
		},
		"inform: ACK without yiaddr or lease time, to ciaddr": {
			req: func() *dhcpv4.DHCPv4 {
				d, _ := dhcpv4.NewInform(macPXE, net.IPv4(10, 99, 0, 10))
				return d
			}(),
			want: with(func(s *summary) {
				s.Type, s.YIAddr, s.CIAddr, s.LeaseTime, s.Dst = "ACK", "0.0.0.0", "10.99.0.10", 0, "10.99.0.10:68"
			}),
		},
		"release: no reply": {
			req:  request(t, macPXE, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 10))),
			want: nil,
		},
		"a BOOTREPLY is not answered": {
			req:  discover(t, macPXE, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }),
			want: nil,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := testServer(t, ModeReservation, testStore(t, true), nil)
			// Round-trip through bytes, as from the wire.
			req, err := dhcpv4.FromBytes(tc.req.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			got := summarize(s.Handle(ctx, req))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	ctx := context.Background()
	st := testStore(t, true)
	s := testServer(t, ModeReservation, st, nil)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.opts.Now = func() time.Time { return now }

	ack, _ := s.Handle(ctx, request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("want ACK, got %v", ack)
	}
	l, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(macPXE.String()) })
	if err != nil {
		t.Fatalf("lease not recorded after ACK: %v", err)
	}
	want := store.Lease{MAC: macPXE.String(), IP: "10.99.0.10", HardwareID: "hw-pxe", Hostname: "node1.lab.example", Expires: now.Add(10 * time.Minute)}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("lease (-want +got):\n%s", diff)
	}

	// A stale lease of the same address to another MAC gives way.
	if err := st.Update(ctx, func(tx *store.Tx) error {
		if err := tx.DeleteLease(macPXE.String()); err != nil {
			return err
		}
		return tx.PutLease(store.Lease{MAC: macOther.String(), IP: "10.99.0.10"})
	}); err != nil {
		t.Fatal(err)
	}
	if ack, _ := s.Handle(ctx, request(t, macPXE, dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 10)))); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renew over a stale lease: want ACK, got %v", ack)
	}
	if owner, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.LeaseByIP("10.99.0.10") }); err != nil || owner.MAC != macPXE.String() {
		t.Fatalf("lease of 10.99.0.10 = %+v, %v; want %s", owner, err, macPXE)
	}

	// RELEASE drops it.
	if r, _ := s.Handle(ctx, request(t, macPXE, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 10)))); r != nil {
		t.Fatalf("RELEASE got a reply: %v", r)
	}
	if _, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(macPXE.String()) }); err == nil {
		t.Fatal("lease still there after RELEASE")
	}

	// DECLINE drops it too and is counted.
	s.Handle(ctx, request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))))
	if r, _ := s.Handle(ctx, request(t, macPXE, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10))))); r != nil {
		t.Fatalf("DECLINE got a reply: %v", r)
	}
	if _, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(macPXE.String()) }); err == nil {
		t.Fatal("lease still there after DECLINE")
	}
	if got := counterValue(t, s.m.dropped.WithLabelValues("declined")); got != 1 {
		t.Errorf("declined counter = %v, want 1", got)
	}
}

func TestUnknownMACLoggedOncePerMinute(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	var logged []string
	s := testServer(t, ModeReservation, testStore(t, true), reg)
	s.log = slog.New(funcHandler(func(r slog.Record) { logged = append(logged, r.Message) }))
	now := time.Unix(1000, 0)
	s.opts.Now = func() time.Time { return now }
	for i := 0; i < 5; i++ {
		s.Handle(ctx, discover(t, macOther))
	}
	now = now.Add(61 * time.Second)
	s.Handle(ctx, discover(t, macOther))
	if diff := cmp.Diff([]string{"no reply to unknown MAC", "no reply to unknown MAC"}, logged); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
	if got := counterValue(t, s.m.unknownMAC); got != 6 {
		t.Errorf("unknown MAC counter = %v, want 6", got)
	}
}

type funcHandler func(slog.Record)

func (f funcHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (f funcHandler) Handle(_ context.Context, r slog.Record) error { f(r); return nil }
func (f funcHandler) WithAttrs([]slog.Attr) slog.Handler            { return f }
func (f funcHandler) WithGroup(string) slog.Handler                 { return f }

func TestProxy(t *testing.T) {
	ctx := context.Background()
	biosPXE := pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")
	tests := map[string]struct {
		req  *dhcpv4.DHCPv4
		want *summary
	}{
		"PXE client of netbootable hardware: boot info, no address": {
			req: discover(t, macPXE, biosPXE...),
			want: &summary{Type: "OFFER", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "10.99.0.1", File: "undionly.kpxe", Opt60: "PXEClient",
				Opt175: []byte{176, 1, 1}, Opt43: []byte{6, 1, 8, 255}, ServerID: "10.99.0.1", Dst: "255.255.255.255:68"},
		},
		"iPXE request: ACK with the script": {
			req: request(t, macPXE, pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", "iPXE")...),
			want: &summary{Type: "ACK", YIAddr: "0.0.0.0", CIAddr: "0.0.0.0", SIAddr: "10.99.0.1", File: "http://10.99.0.1:8080/ipxe/52:54:00:00:00:01",
				Opt60: "PXEClient", Opt175: []byte{176, 1, 1}, ServerID: "10.99.0.1", Dst: "255.255.255.255:68"},
		},
		"not a PXE client: silent":    {req: discover(t, macPXE), want: nil},
		"allow_pxe off: silent":       {req: discover(t, macNoPXE, biosPXE...), want: nil},
		"unknown MAC: silent":         {req: discover(t, macOther, biosPXE...), want: nil},
		"request for another: silent": {req: request(t, macPXE, append(biosPXE, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(1, 2, 3, 4))))...), want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := testServer(t, ModeProxy, testStore(t, true), nil)
			got := summarize(s.Handle(ctx, tc.req))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []string{"reservation", "proxy", "off"} {
		if got, err := ParseMode(m); err != nil || string(got) != m {
			t.Errorf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	if _, err := ParseMode("auto"); err == nil {
		t.Error("ParseMode(auto): want error")
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// BenchmarkHandle measures the per-packet work of a DORA without sockets:
// parse a DISCOVER and a REQUEST as from the wire, answer both, encode the
// replies as the server does. The REQUEST reuses the lease stored by the first one (lease
// caching), so no write happens in the loop: it is the hot path of a
// client seen again within LeaseReuse.
func BenchmarkHandle(b *testing.B) {
	ctx := context.Background()
	s := testServer(b, ModeReservation, testStore(b, true), nil)
	relay := dhcpv4.WithGatewayIP(net.IPv4(10, 50, 0, 1))
	disc := discover(b, macPXE, relay).ToBytes()
	req := request(b, macPXE, relay, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))).ToBytes()
	var out []byte
	for b.Loop() {
		for _, raw := range [][]byte{disc, req} {
			p, err := dhcpv4.FromBytes(raw)
			if err != nil {
				b.Fatal(err)
			}
			r, _ := s.Handle(ctx, p)
			if r == nil {
				b.Fatal("no reply")
			}
			out = appendPacket(out[:0], r)
		}
	}
	if n := counterValue(b, s.m.leaseReused); n < float64(b.N-1) {
		b.Errorf("%v of %d REQUESTs reused the stored lease; want all but the first", n, b.N)
	}
}

// TestProxyRecordsAddress: in proxy mode the address another DHCP server
// gives a known netboot client is recorded from the client's REQUEST, so
// the iPXE handler can tie the request for its boot script (and agent
// token) to it.
func TestProxyRecordsAddress(t *testing.T) {
	ctx := context.Background()
	biosPXE := pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")
	other := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 254)))
	tests := map[string]struct {
		req    *dhcpv4.DHCPv4
		mac    net.HardwareAddr
		reply  bool
		wantIP string // "" for no lease
	}{
		"REQUEST to the site's server: its address recorded, no reply": {
			req: request(t, macPXE, append(biosPXE, other, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77))))...),
			mac: macPXE, wantIP: "10.99.0.77",
		},
		"REQUEST on port 4011 from the client's address: recorded, ACK": {
			req: request(t, macPXE, append(biosPXE, dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 78)))...),
			mac: macPXE, reply: true, wantIP: "10.99.0.78",
		},
		"not a netboot client: nothing recorded": {
			req: request(t, macPXE, other, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77)))),
			mac: macPXE,
		},
		"unknown MAC: nothing recorded": {
			req: request(t, macOther, append(biosPXE, other, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77))))...),
			mac: macOther,
		},
		"netboot off: nothing recorded": {
			req: request(t, macNoPXE, append(biosPXE, other, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 77))))...),
			mac: macNoPXE,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := testStore(t, true)
			s := testServer(t, ModeProxy, st, nil)
			reply, _ := s.Handle(ctx, tc.req)
			if (reply != nil) != tc.reply {
				t.Errorf("reply %v, want a reply: %v", reply, tc.reply)
			}
			l, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(tc.mac.String()) })
			switch {
			case tc.wantIP == "" && !errors.Is(err, store.ErrNotFound):
				t.Errorf("lease %+v, %v; want none", l, err)
			case tc.wantIP != "" && (err != nil || l.IP != tc.wantIP):
				t.Errorf("lease %+v, %v; want %s", l, err, tc.wantIP)
			}
		})
	}
}
