package dhcp

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestHardwareChangesSeen edits and deletes the hardware record between
// packets: every reply follows the record as stored, whatever the server
// derived and kept from earlier packets.
func TestHardwareChangesSeen(t *testing.T) {
	ctx := context.Background()
	st := testStore(t, true)
	s := testServer(t, ModeReservation, st, nil)
	biosPXE := pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", "")
	ask := func() *summary {
		req, err := dhcpv4.FromBytes(discover(t, macPXE, biosPXE...).ToBytes())
		if err != nil {
			t.Fatal(err)
		}
		return summarize(s.Handle(ctx, req))
	}
	edit := func(f func(*store.Hardware)) {
		t.Helper()
		if err := st.Update(ctx, func(tx *store.Tx) error {
			hw, err := tx.Hardware("hw-pxe")
			if err != nil {
				return err
			}
			f(&hw)
			return tx.UpdateHardware(hw)
		}); err != nil {
			t.Fatal(err)
		}
	}
	type view struct{ YIAddr, Host, File, Router string }
	got := func() *view {
		r := ask()
		if r == nil {
			return nil
		}
		return &view{r.YIAddr, r.Host, r.File, r.Router}
	}
	steps := []struct {
		name string
		do   func()
		want *view
	}{
		{"as registered", func() {}, &view{"10.99.0.10", "node1", "undionly.kpxe", "10.99.0.1"}},
		{"again, unchanged", func() {}, &view{"10.99.0.10", "node1", "undionly.kpxe", "10.99.0.1"}},
		{"netboot turned off", func() { edit(func(h *store.Hardware) { h.Netboot.AllowPXE = false }) }, &view{"10.99.0.10", "node1", "", "10.99.0.1"}},
		{"address, host name and gateway changed", func() {
			edit(func(h *store.Hardware) {
				h.Hostname = "renamed.lab.example"
				h.Interfaces[0].IP, h.Interfaces[0].Gateway = "10.99.0.20/24", "10.99.0.254"
			})
		}, &view{"10.99.0.20", "renamed", "", "10.99.0.254"}},
		{"power state recorded (BMC poller)", func() { edit(func(h *store.Hardware) { h.Power = "on" }) }, &view{"10.99.0.20", "renamed", "", "10.99.0.254"}},
		{"deleted", func() {
			if err := st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteHardware("hw-pxe") }); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"registered again", func() {
			if err := st.Update(ctx, func(tx *store.Tx) error {
				return tx.CreateHardware(store.Hardware{ID: "hw-new", Hostname: "back",
					Interfaces: []store.Interface{{MAC: macPXE.String(), IP: "10.99.0.30/24"}}, Netboot: store.Netboot{AllowPXE: true}})
			}); err != nil {
				t.Fatal(err)
			}
		}, &view{"10.99.0.30", "back", "undionly.kpxe", ""}},
	}
	for _, step := range steps {
		step.do()
		if diff := cmp.Diff(step.want, got()); diff != "" {
			t.Errorf("%s: reply (-want +got):\n%s", step.name, diff)
		}
	}
}

// TestLeaseReuse walks one client through repeated REQUESTs: a lease
// younger than LeaseReuse is ACKed again with the time it has left and no
// write; an older one, or one that no longer matches the reservation, is
// written anew; with LeaseReuse negative every REQUEST writes.
func TestLeaseReuse(t *testing.T) {
	ctx := context.Background()
	const lt = 10 * time.Minute // testServer's lease time; LeaseReuse defaults to 2m30s
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type step struct {
		at        time.Duration // after t0
		rename    string        // new host name for the hardware before the REQUEST
		wantLease time.Duration // option 51 of the ACK
		wantExp   time.Duration // stored expiry, after t0
		wantReuse float64       // reuse counter after the step
	}
	tests := map[string]struct {
		reuse time.Duration
		steps []step
	}{
		"default": {steps: []step{
			{at: 0, wantLease: lt, wantExp: lt},
			{at: 0, wantLease: lt, wantExp: lt, wantReuse: 1},
			{at: 90*time.Second + 500*time.Millisecond, wantLease: lt - 91*time.Second, wantExp: lt, wantReuse: 2}, // rounded down
			{at: 150 * time.Second, wantLease: lt - 150*time.Second, wantExp: lt, wantReuse: 3},
			{at: 151 * time.Second, wantLease: lt, wantExp: 151*time.Second + lt, wantReuse: 3},
			{at: 160 * time.Second, rename: "other", wantLease: lt, wantExp: 160*time.Second + lt, wantReuse: 3},
			{at: 161 * time.Second, wantLease: lt - time.Second, wantExp: 160*time.Second + lt, wantReuse: 4},
		}},
		"off": {reuse: -1, steps: []step{
			{at: 0, wantLease: lt, wantExp: lt},
			{at: time.Second, wantLease: lt, wantExp: time.Second + lt},
		}},
		"capped at half the lease": {reuse: time.Hour, steps: []step{
			{at: 0, wantLease: lt, wantExp: lt},
			{at: lt / 2, wantLease: lt / 2, wantExp: lt, wantReuse: 1},
			{at: lt/2 + time.Second, wantLease: lt, wantExp: lt/2 + time.Second + lt, wantReuse: 1},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := testStore(t, true)
			s := New(st, testLogger(t), nil, Options{Mode: ModeReservation, ServerIP: serverIP, LeaseTime: lt, LeaseReuse: tc.reuse})
			for i, step := range tc.steps {
				now := t0.Add(step.at)
				s.opts.Now = func() time.Time { return now }
				if step.rename != "" {
					if err := st.Update(ctx, func(tx *store.Tx) error {
						hw, err := tx.Hardware("hw-pxe")
						if err != nil {
							return err
						}
						hw.Hostname = step.rename
						return tx.UpdateHardware(hw)
					}); err != nil {
						t.Fatal(err)
					}
				}
				ack, _ := s.Handle(ctx, request(t, macPXE, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 99, 0, 10)))))
				if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
					t.Fatalf("step %d: want ACK, got %v", i, ack)
				}
				got := struct{ Lease, T1, T2, Expires time.Duration }{
					ack.IPAddressLeaseTime(0), ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0), 0,
				}
				l, err := store.Read(ctx, st, func(tx *store.Tx) (store.Lease, error) { return tx.Lease(macPXE.String()) })
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				got.Expires = l.Expires.Sub(t0)
				want := struct{ Lease, T1, T2, Expires time.Duration }{
					step.wantLease, step.wantLease / 2 / time.Second * time.Second, step.wantLease * 7 / 8 / time.Second * time.Second, step.wantExp,
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("step %d (at %s): (-want +got):\n%s", i, step.at, diff)
				}
				if n := counterValue(t, s.m.leaseReused); n != step.wantReuse {
					t.Errorf("step %d: reused %v times, want %v", i, n, step.wantReuse)
				}
			}
		})
	}
}

// TestLeaseReuseNeedsDurable: a stored lease that is not yet known to be
// on disk is never handed out again; nor one that differs from the
// reservation.
func TestLeaseReuseNeedsDurable(t *testing.T) {
	s := New(testStore(t, true), testLogger(t), nil, Options{Mode: ModeReservation, ServerIP: serverIP, LeaseTime: 10 * time.Minute})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := &binding{hwID: "hw-pxe", hostnameFull: "node1", addrString: "10.99.0.10"}
	fresh := store.Lease{MAC: macPXE.String(), IP: "10.99.0.10", HardwareID: "hw-pxe", Hostname: "node1", Expires: now.Add(9 * time.Minute)}
	with := func(f func(*store.Lease)) store.Lease { l := fresh; f(&l); return l }
	tests := map[string]struct {
		st   storedLease
		want bool
	}{
		"durable and fresh":      {storedLease{lease: fresh, found: true, durable: true}, true},
		"not yet durable":        {storedLease{lease: fresh, found: true, durable: false}, false},
		"none":                   {storedLease{}, false},
		"other address":          {storedLease{lease: with(func(l *store.Lease) { l.IP = "10.99.0.11" }), found: true, durable: true}, false},
		"other hardware":         {storedLease{lease: with(func(l *store.Lease) { l.HardwareID = "hw-x" }), found: true, durable: true}, false},
		"other host name":        {storedLease{lease: with(func(l *store.Lease) { l.Hostname = "x" }), found: true, durable: true}, false},
		"too old":                {storedLease{lease: with(func(l *store.Lease) { l.Expires = now.Add(7 * time.Minute) }), found: true, durable: true}, false},
		"longer than lease time": {storedLease{lease: with(func(l *store.Lease) { l.Expires = now.Add(11 * time.Minute) }), found: true, durable: true}, false},
		"expired":                {storedLease{lease: with(func(l *store.Lease) { l.Expires = now.Add(-time.Minute) }), found: true, durable: true}, false},
	}
	for name, tc := range tests {
		if _, got := s.leaseReuse(tc.st, b, now); got != tc.want {
			t.Errorf("%s: reuse = %v, want %v", name, got, tc.want)
		}
	}
}

// TestConcurrentHandle answers DORAs from many goroutines while the
// hardware record changes under them: every reply carries the reserved
// address, and the lease is stored. Run with -race, it checks the
// caches' locking.
func TestConcurrentHandle(t *testing.T) {
	ctx := context.Background()
	st := testStore(t, true)
	s := testServer(t, ModeReservation, st, nil)
	stop := make(chan struct{})
	edited := make(chan error, 1)
	go func() {
		defer close(edited)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := st.Update(ctx, func(tx *store.Tx) error {
				hw, err := tx.Hardware("hw-pxe")
				if err != nil {
					return err
				}
				hw.Netboot.AllowPXE = i%2 == 0
				return tx.UpdateHardware(hw)
			}); err != nil {
				edited <- err
				return
			}
		}
	}()
	want := map[string]string{macPXE.String(): "10.99.0.10", macNoPXE.String(): "10.50.0.11"}
	dora := map[string][]*dhcpv4.DHCPv4{}
	for _, mac := range []net.HardwareAddr{macPXE, macNoPXE} {
		dora[mac.String()] = []*dhcpv4.DHCPv4{discover(t, mac),
			request(t, mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(want[mac.String()]))))}
	}
	errs := make(chan error, 16)
	for g := range 8 {
		go func() {
			mac := macPXE
			if g%2 == 1 {
				mac = macNoPXE
			}
			for range 100 {
				for _, req := range dora[mac.String()] {
					r, _ := s.Handle(ctx, req)
					if r == nil || r.YourIPAddr.String() != want[mac.String()] {
						errs <- fmt.Errorf("%s %s: reply %v", mac, req.MessageType(), r)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	if err := <-edited; err != nil {
		t.Fatal(err)
	}
	leases, err := store.Read(ctx, st, func(tx *store.Tx) ([]store.Lease, error) { return tx.ListLeases() })
	if err != nil || len(leases) != 2 {
		t.Errorf("leases = %v, %v; want 2", leases, err)
	}
}
