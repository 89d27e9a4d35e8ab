package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

type rfState struct{ Power, Target, Enabled, Mode string }

// TestRedfishLifecycle drives bmclib's real Redfish (gofish) provider
// against the Redfish test server through the Manager.
func TestRedfishLifecycle(t *testing.T) {
	r := newRedfish(t, "admin", "s3cret-pw")
	e := newEnv(t, Options{Timeout: 10 * time.Second, RedfishRootCAs: r.CertPool()})
	hw := e.create(t, redfishHW("rf1", r, "admin", "s3cret-pw"))
	ctx := ctxT(t, time.Minute)

	steps := []struct {
		name       string
		do         func() error
		wantState  rfState
		wantResets []string
	}{
		{"status off", func() error { return expectPower(ctx, e.m, hw, "off") }, rfState{"Off", "None", "Disabled", "UEFI"}, nil},
		{"pxe once uefi", func() error { return e.m.SetBootDevice(ctx, hw, "pxe", false, true) }, rfState{"Off", "Pxe", "Once", "UEFI"}, nil},
		{"cycle while off powers on", func() error { return e.m.SetPower(ctx, hw, "cycle") }, rfState{"On", "Pxe", "Disabled", "UEFI"}, []string{"On"}},
		{"status on", func() error { return expectPower(ctx, e.m, hw, "on") }, rfState{"On", "Pxe", "Disabled", "UEFI"}, []string{"On"}},
		{"on is idempotent", func() error { return e.m.SetPower(ctx, hw, "on") }, rfState{"On", "Pxe", "Disabled", "UEFI"}, []string{"On"}},
		{"disk persistent legacy", func() error { return e.m.SetBootDevice(ctx, hw, "disk", true, false) }, rfState{"On", "Hdd", "Continuous", "Legacy"}, []string{"On"}},
		{"cycle while on", func() error { return e.m.SetPower(ctx, hw, "cycle") }, rfState{"On", "Hdd", "Continuous", "Legacy"}, []string{"On", "ForceRestart"}},
		{"reset", func() error { return e.m.SetPower(ctx, hw, "reset") }, rfState{"On", "Hdd", "Continuous", "Legacy"}, []string{"On", "ForceRestart", "PowerCycle"}},
		{"bios", func() error { return e.m.SetBootDevice(ctx, hw, "bios", false, true) }, rfState{"On", "BiosSetup", "Once", "UEFI"}, []string{"On", "ForceRestart", "PowerCycle"}},
		{"cdrom", func() error { return e.m.SetBootDevice(ctx, hw, "cdrom", false, true) }, rfState{"On", "Cd", "Once", "UEFI"}, []string{"On", "ForceRestart", "PowerCycle"}},
		{"soft off", func() error { return e.m.SetPower(ctx, hw, "soft") }, rfState{"Off", "Cd", "Once", "UEFI"}, []string{"On", "ForceRestart", "PowerCycle", "GracefulShutdown"}},
		{"off when off sends nothing", func() error { return e.m.SetPower(ctx, hw, "off") }, rfState{"Off", "Cd", "Once", "UEFI"}, []string{"On", "ForceRestart", "PowerCycle", "GracefulShutdown"}},
		{"on", func() error { return e.m.SetPower(ctx, hw, "on") }, rfState{"On", "Cd", "Disabled", "UEFI"}, []string{"On", "ForceRestart", "PowerCycle", "GracefulShutdown", "On"}},
		{"off", func() error { return e.m.SetPower(ctx, hw, "off") }, rfState{"Off", "Cd", "Disabled", "UEFI"}, []string{"On", "ForceRestart", "PowerCycle", "GracefulShutdown", "On", "ForceOff"}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var got rfState
		got.Power, got.Target, got.Enabled, got.Mode = r.State()
		if diff := cmp.Diff(s.wantState, got); diff != "" {
			t.Errorf("%s: BMC state (-want +got):\n%s", s.name, diff)
		}
		if diff := cmp.Diff(s.wantResets, r.Resets()); diff != "" {
			t.Errorf("%s: resets sent (-want +got):\n%s", s.name, diff)
		}
	}
	if n := r.MaxOpenSessions(); n != 1 {
		t.Errorf("max open sessions = %d, want 1 (sessions are closed after each operation)", n)
	}
	if !strings.Contains(e.logs.String(), "provider=gofish") {
		t.Errorf("log does not name the provider that answered")
	}
	if strings.Contains(e.logs.String(), "s3cret-pw") {
		t.Errorf("password in the log")
	}
	// PowerState wrote what it saw to the store.
	got, err := e.st.GetHardware(ctx, hw.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Power != "on" || got.PowerSeenAt.IsZero() {
		t.Errorf("stored power = %q at %v, want on with a time", got.Power, got.PowerSeenAt)
	}
	// Power events were recorded.
	evs, err := store.Read(ctx, e.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events("", 0) })
	if err != nil {
		t.Fatal(err)
	}
	power := 0
	for _, ev := range evs {
		if ev.Type == store.EventPower && ev.HardwareID == hw.ID {
			power++
		}
	}
	if power != 8 {
		t.Errorf("power events = %d, want 8: %+v", power, evs)
	}
}

func expectPower(ctx context.Context, m *Manager, hw store.Hardware, want string) error {
	got, err := m.PowerState(ctx, hw)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("power state = %q, want %q", got, want)
	}
	return nil
}

func TestRedfishTLSVerification(t *testing.T) {
	r := newRedfish(t, "admin", "pw")
	ctx := ctxT(t, time.Minute)
	// No CA for the test certificate: verification must fail, and a
	// certificate error is not retried into success.
	e := newEnv(t, Options{Timeout: 5 * time.Second, Retries: -1})
	hw := redfishHW("rf-tls", r, "admin", "pw")
	_, err := e.m.PowerState(ctx, hw)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("PowerState against an untrusted certificate: err = %v, want a certificate error", err)
	}
	if r.LoginAttempts.Load() != 0 {
		t.Errorf("credentials were sent to an unverified BMC")
	}
	hw.BMC.InsecureTLS = true
	if err := expectPower(ctx, e.m, hw, "off"); err != nil {
		t.Fatalf("with insecure_tls: %v", err)
	}
}

func TestRedfishWrongPassword(t *testing.T) {
	r := newRedfish(t, "admin", "right-password")
	e := newEnv(t, Options{Timeout: 5 * time.Second, Retries: 5, RetryBackoff: 10 * time.Millisecond, RedfishRootCAs: r.CertPool()})
	hw := redfishHW("rf-auth", r, "admin", "wrong-password-123")
	err := e.m.SetPower(ctxT(t, time.Minute), hw, "on")
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("err = %v, want ErrAuth", err)
	}
	t.Logf("error: %v", err)
	if host := fmt.Sprintf("%s:%d", r.Host(), r.Port()); !strings.Contains(err.Error(), host) {
		t.Errorf("error does not name the BMC %s", host)
	}
	if n := r.LoginAttempts.Load(); n != 1 {
		t.Errorf("login attempts = %d, want 1 (no retry storm with Retries=5)", n)
	}
	for _, s := range []string{err.Error(), e.logs.String()} {
		if strings.Contains(s, "wrong-password-123") {
			t.Errorf("password leaked: %s", s)
		}
	}
	if v, _ := gauge(t, e.reg, "provisiond_bmc_requests_total", map[string]string{"result": "auth_error"}); v != 1 {
		t.Errorf("auth_error count = %v, want 1", v)
	}
}

// silentListener accepts TCP connections and never answers: a hung BMC.
func silentListener(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close the hung BMC's listener: %v", err)
		}
		mu.Lock()
		for _, c := range conns {
			if err := c.Close(); err != nil {
				t.Errorf("close a hung BMC connection: %v", err)
			}
		}
		mu.Unlock()
	})
	a := l.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

func TestRedfishNoAnswer(t *testing.T) {
	host, port := silentListener(t)
	e := newEnv(t, Options{Timeout: 500 * time.Millisecond, Retries: 1, RetryBackoff: 50 * time.Millisecond})
	hw := store.Hardware{ID: "rf-hung", BMC: store.BMC{Driver: DriverRedfish, Address: host, Port: port, Username: "u", Password: "p"}}
	start := time.Now()
	err := e.m.SetBootDevice(ctxT(t, time.Minute), hw, "pxe", false, false)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	t.Logf("error after %s: %v", took.Round(time.Millisecond), err)
	if want := fmt.Sprintf("%s:%d", host, port); !strings.Contains(err.Error(), want) {
		t.Errorf("error does not name the BMC %s", want)
	}
	if !strings.Contains(err.Error(), "after 2 attempts") {
		t.Errorf("error does not say it retried: %v", err)
	}
	if v, _ := gauge(t, e.reg, "provisiond_bmc_requests_total", map[string]string{"result": "timeout"}); v != 2 {
		t.Errorf("timeout count = %v, want 2", v)
	}
}

// TestRedfishSlowBMCDoesNotBlockOthers: a BMC that takes seconds per
// request still works, and a fast BMC is served meanwhile.
func TestRedfishSlowBMCDoesNotBlockOthers(t *testing.T) {
	slow := newRedfish(t, "admin", "pw")
	slow.SetDelay(400 * time.Millisecond) // ~6 requests per operation
	fast := newRedfish(t, "admin", "pw")
	e := newEnv(t, Options{Timeout: 20 * time.Second, Workers: 4})
	hs, hf := redfishHW("slow", slow, "admin", "pw"), redfishHW("fast", fast, "admin", "pw")
	hs.BMC.InsecureTLS, hf.BMC.InsecureTLS = true, true
	ctx := ctxT(t, time.Minute)

	type done struct {
		name string
		at   time.Time
		err  error
	}
	ch := make(chan done, 2)
	start := time.Now()
	go func() { err := e.m.SetPower(ctx, hs, "on"); ch <- done{"slow", time.Now(), err} }()
	time.Sleep(50 * time.Millisecond) // the slow one is in flight first
	go func() { err := e.m.SetPower(ctx, hf, "on"); ch <- done{"fast", time.Now(), err} }()
	first, second := <-ch, <-ch
	for _, d := range []done{first, second} {
		if d.err != nil {
			t.Fatalf("%s: %v", d.name, d.err)
		}
		t.Logf("%s BMC done after %s", d.name, d.at.Sub(start).Round(time.Millisecond))
	}
	if first.name != "fast" {
		t.Errorf("the slow BMC finished first: the fast one was blocked behind it")
	}
	if p, _, _, _ := slow.State(); p != "On" {
		t.Errorf("slow BMC power = %s, want On", p)
	}
}

// TestOneBMCIsSerialised: concurrent calls on one BMC never overlap.
func TestOneBMCIsSerialised(t *testing.T) {
	r := newRedfish(t, "admin", "pw")
	e := newEnv(t, Options{Timeout: 10 * time.Second, Workers: 8, RedfishRootCAs: r.CertPool()})
	hw := redfishHW("ser", r, "admin", "pw")
	ctx := ctxT(t, time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := []string{"pxe", "disk"}[i%2]
			errs <- e.m.SetBootDevice(ctx, hw, dev, false, true)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := r.MaxOpenSessions(); n != 1 {
		t.Errorf("max concurrent sessions on one BMC = %d, want 1", n)
	}
	if n := r.MaxInflight(); n != 1 {
		t.Errorf("max concurrent requests on one BMC = %d, want 1", n)
	}
}

// TestFiftyBMCsAtOnce drives 50 Redfish BMCs (each answering in 100 ms
// per request) at once through a pool of 16 workers.
func TestFiftyBMCsAtOnce(t *testing.T) {
	const n = 50
	e := newEnv(t, Options{Timeout: 30 * time.Second, Workers: 16})
	ctx := ctxT(t, 2*time.Minute)
	servers := make([]*struct {
		hw store.Hardware
		r  interface {
			State() (string, string, string, string)
			MaxOpenSessions() int
		}
	}, n)
	for i := range n {
		r := newRedfish(t, "admin", "pw")
		r.SetDelay(100 * time.Millisecond)
		hw := redfishHW(fmt.Sprintf("hw%02d", i), r, "admin", "pw")
		hw.BMC.InsecureTLS = true
		servers[i] = &struct {
			hw store.Hardware
			r  interface {
				State() (string, string, string, string)
				MaxOpenSessions() int
			}
		}{hw, r}
	}
	start := time.Now()
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	errs := make([]error, n)
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if err := e.m.SetBootDevice(ctx, s.hw, "pxe", false, true); err != nil {
				errs[i] = err
				return
			}
			errs[i] = e.m.SetPower(ctx, s.hw, "cycle")
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	total := time.Since(start)
	var slowest, sum time.Duration
	for i, s := range servers {
		if errs[i] != nil {
			t.Errorf("%s: %v", s.hw.ID, errs[i])
			continue
		}
		if p, tgt, _, _ := s.r.State(); p != "On" || tgt != "Pxe" {
			t.Errorf("%s: power %s target %s, want On Pxe", s.hw.ID, p, tgt)
		}
		slowest = max(slowest, took[i])
		sum += took[i]
	}
	fmt.Printf("50 Redfish BMCs (100 ms/request), boot pxe + power cycle each, 16 workers: total %s, slowest BMC %s, sum of per-BMC times %s\n",
		total.Round(time.Millisecond), slowest.Round(time.Millisecond), sum.Round(time.Millisecond))
	if total >= sum {
		t.Errorf("total %s >= sum of per-BMC times %s: BMCs ran one after another", total, sum)
	}
}
