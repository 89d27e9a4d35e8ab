package ra

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/ndp"
)

// rs builds a Router Solicitation: type 133, the given code, checksum and
// reserved zero, then the raw options.
func rs(code byte, opts ...byte) []byte {
	return append([]byte{typeRouterSolicitation, code, 0, 0, 0, 0, 0, 0}, opts...)
}

var (
	hostLL  = netip.MustParseAddr("fe80::5054:ff:fe12:3456")
	hostMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	// slla is a Source Link-Layer Address option for hostMAC, as iPXE sends.
	slla = []byte{optSourceLLA, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
)

func TestDecide(t *testing.T) {
	for name, tc := range map[string]struct {
		msg []byte
		src netip.Addr
		hop int
		// want
		want verdict
	}{
		"iPXE: link-local source with SLLA": {
			msg: rs(0, slla...), src: hostLL, hop: 255,
			want: verdict{Reply: true, Dst: hostLL, MAC: hostMAC},
		},
		"no options": {
			msg: rs(0), src: hostLL, hop: 255,
			want: verdict{Reply: true, Dst: hostLL},
		},
		"global source is answered by unicast too": {
			msg: rs(0), src: netip.MustParseAddr("2001:db8::1"), hop: 255,
			want: verdict{Reply: true, Dst: netip.MustParseAddr("2001:db8::1")},
		},
		"unspecified source goes to all nodes": {
			msg: rs(0), src: netip.IPv6Unspecified(), hop: 255,
			want: verdict{Reply: true, Dst: allNodes},
		},
		"unknown and oddly sized options are ignored": {
			// A non-Ethernet SLLA (16 bytes) and an unknown option 200.
			msg: rs(0, append([]byte{optSourceLLA, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 200, 1, 0, 0, 0, 0, 0, 0)...),
			src: hostLL, hop: 255,
			want: verdict{Reply: true, Dst: hostLL},
		},
		"unspecified source with SLLA": {
			msg: rs(0, slla...), src: netip.IPv6Unspecified(), hop: 255,
			want: verdict{Drop: dropUnspecSLLA},
		},
		"router advertisement": {
			msg: []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, src: hostLL, hop: 255,
			want: verdict{Drop: dropNotRS},
		},
		"echo request": {
			msg: []byte{128, 0, 0, 0, 0, 1, 0, 1}, src: hostLL, hop: 64,
			want: verdict{Drop: dropNotRS},
		},
		"empty": {
			msg: nil, src: hostLL, hop: 255,
			want: verdict{Drop: dropNotRS},
		},
		"truncated": {
			msg: []byte{typeRouterSolicitation, 0, 0, 0}, src: hostLL, hop: 255,
			want: verdict{Drop: dropShort},
		},
		"code 1": {
			msg: rs(1), src: hostLL, hop: 255,
			want: verdict{Drop: dropCode},
		},
		"routed: hop limit 64": {
			msg: rs(0), src: hostLL, hop: 64,
			want: verdict{Drop: dropHopLimit},
		},
		"hop limit unknown": {
			msg: rs(0), src: hostLL, hop: -1,
			want: verdict{Drop: dropHopLimit},
		},
		"zero-length option": {
			msg: rs(0, 1, 0, 0, 0, 0, 0, 0, 0), src: hostLL, hop: 255,
			want: verdict{Drop: dropOption},
		},
		"option runs past the end": {
			msg: rs(0, 1, 2, 0, 0, 0, 0, 0, 0), src: hostLL, hop: 255,
			want: verdict{Drop: dropOption},
		},
		"trailing byte": {
			msg: rs(0, append(append([]byte(nil), slla...), 7)...), src: hostLL, hop: 255,
			want: verdict{Drop: dropOption},
		},
		"multicast source": {
			msg: rs(0), src: netip.MustParseAddr("ff02::1"), hop: 255,
			want: verdict{Drop: dropSource},
		},
		"IPv4-mapped source": {
			msg: rs(0), src: netip.MustParseAddr("::ffff:10.0.0.1"), hop: 255,
			want: verdict{Drop: dropSource},
		},
		"no source": {
			msg: rs(0), src: netip.Addr{}, hop: 255,
			want: verdict{Drop: dropSource},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := decide(tc.msg, tc.src, tc.hop)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("decide (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecideAgreesWithNDP: what ndp marshals as a solicitation, decide
// accepts, so our own option walk and the library agree on the format.
func TestDecideAgreesWithNDP(t *testing.T) {
	b, err := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: []ndp.Option{
		&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: hostMAC},
		ndp.NewNonce(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := decide(b, hostLL, 255)
	if !got.Reply || got.Dst != hostLL || got.MAC.String() != hostMAC.String() {
		t.Errorf("decide(ndp's RS) = %+v, want a unicast reply to %s naming %s", got, hostLL, hostMAC)
	}
}

// TestAdvertisement checks the bytes we send, parsed back by ndp: every
// field that could make a host take us for a router is zero.
func TestAdvertisement(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	for name, tc := range map[string]struct {
		mac  net.HardwareAddr
		want *ndp.RouterAdvertisement
	}{
		"ethernet": {mac, &ndp.RouterAdvertisement{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}}},
		"no MAC":   {nil, &ndp.RouterAdvertisement{}},
		"20-byte":  {make(net.HardwareAddr, 20), &ndp.RouterAdvertisement{}},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := ndp.MarshalMessage(advertisement(tc.mac))
			if err != nil {
				t.Fatal(err)
			}
			// Type 134, code 0, then cur hop limit, flags, lifetime (2),
			// reachable (4), retrans (4): all zero.
			if b[0] != 134 || b[1] != 0 {
				t.Fatalf("type/code = %d/%d, want 134/0", b[0], b[1])
			}
			for i, x := range b[4:16] {
				if x != 0 {
					t.Errorf("byte %d of the RA body = %#x, want 0 (%x)", i, x, b)
				}
			}
			m, err := ndp.ParseMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, m); diff != "" {
				t.Errorf("advertisement (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedule{minGap: 3 * time.Second}

	if !s.request(t0, 100*time.Millisecond) {
		t.Fatal("first request: want an answer at once")
	}
	s.sent(t0)
	if s.request(t0.Add(time.Second), 200*time.Millisecond) {
		t.Fatal("request 1 s after a multicast: want it held back")
	}
	want := t0.Add(3*time.Second + 200*time.Millisecond)
	if got := s.Pending(); !got.Equal(want) {
		t.Fatalf("pending at %v, want last + MIN_DELAY_BETWEEN_RAS + jitter = %v", got, want)
	}
	// A third solicitation before it goes is answered by the same one.
	if s.request(t0.Add(2*time.Second), 0) || !s.Pending().Equal(want) {
		t.Fatalf("third request: want it folded into the pending one at %v, got pending %v", want, s.Pending())
	}
	if s.due(want.Add(-time.Millisecond)) {
		t.Fatal("due before its time")
	}
	if !s.due(want) {
		t.Fatal("not due at its time")
	}
	s.sent(want)
	if !s.Pending().IsZero() {
		t.Fatal("still pending after sent")
	}
	if s.request(want.Add(2999*time.Millisecond), 0) {
		t.Fatal("2.999 s after the last multicast: want it held back")
	}
	s = schedule{minGap: 3 * time.Second, last: t0}
	if !s.request(t0.Add(3*time.Second), 0) {
		t.Fatal("3 s after the last multicast: want an answer at once")
	}
}
