// Package bmc controls servers' power and boot device through their
// baseboard management controllers, on bmclib v2: IPMI through bmclib's
// ipmitool provider, Redfish through its gofish provider, and a "manual"
// driver for servers without a BMC, which asks an operator by event.
//
// Every call runs under a per-attempt timeout; transient failures are
// retried with exponential backoff, refused credentials never are. Calls on
// one BMC (address:port) are serialised; calls on different BMCs run
// concurrently through a bounded pool of workers.
package bmc

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Options tune the Manager. Zero values take the defaults.
type Options struct {
	// Timeout bounds one attempt of one operation (open session, the
	// operation, close). Default 30s.
	Timeout time.Duration
	// Retries is how many more attempts follow a transient failure.
	// Default 2; a negative value means none.
	Retries int
	// RetryBackoff is the wait before the first retry; it doubles after
	// each retry up to 30s. Default 1s.
	RetryBackoff time.Duration
	// Workers bounds the operations in flight across all BMCs. Default 16.
	Workers int
	// PollInterval is how often Serve reads the power state of every
	// server with a BMC. Default 1m; negative turns polling off.
	PollInterval time.Duration
	// AuthBackoff is how long the poller leaves alone a BMC whose
	// credentials were refused, unless the credentials change. Default 15m.
	AuthBackoff time.Duration
	// IPMICipherSuite is passed to ipmitool -C. Empty: bmclib tries 3, then 17.
	IPMICipherSuite string
	// IpmitoolPath is the ipmitool binary. Empty: looked up on PATH.
	IpmitoolPath string
	// RedfishRootCAs verifies Redfish BMC certificates. Nil: system roots.
	RedfishRootCAs *x509.CertPool
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Retries == 0 {
		o.Retries = 2
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Minute
	}
	if o.AuthBackoff <= 0 {
		o.AuthBackoff = 15 * time.Minute
	}
	return o
}

const maxBackoff = 30 * time.Second

// Manager runs power and boot-device operations against BMCs. It is safe
// for concurrent use.
type Manager struct {
	st      *store.Store
	log     *slog.Logger
	opts    Options
	metrics *metrics
	drivers map[string]opener
	slots   chan struct{} // worker pool: one token per operation in flight

	mu       sync.Mutex
	locks    map[string]*bmcLock    // per BMC address:port
	authFail map[string]authFailure // per BMC address:port
	polled   map[string]bool        // hardware ids with a power gauge
}

type bmcLock struct {
	ch   chan struct{} // holds one token while the BMC is busy
	refs int
}

type authFailure struct {
	creds [32]byte
	at    time.Time
}

// NewManager returns a Manager. It does no I/O. reg may be nil (no metrics).
func NewManager(st *store.Store, log *slog.Logger, reg prometheus.Registerer, opts Options) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts = opts.withDefaults()
	m := &Manager{
		st:       st,
		log:      log.With("component", "bmc"),
		opts:     opts,
		metrics:  newMetrics(reg),
		slots:    make(chan struct{}, opts.Workers),
		locks:    make(map[string]*bmcLock),
		authFail: make(map[string]authFailure),
		polled:   make(map[string]bool),
	}
	m.drivers = map[string]opener{
		DriverIPMI:    newBMCLibDriver(DriverIPMI, &m.opts),
		DriverRedfish: newBMCLibDriver(DriverRedfish, &m.opts),
	}
	return m
}

// driverOf returns the hardware's driver name; no driver means manual.
func driverOf(hw store.Hardware) string {
	if hw.BMC.Driver == "" {
		return DriverManual
	}
	return strings.ToLower(hw.BMC.Driver)
}

// Endpoint is the BMC's address:port, with the driver's well-known port
// when none is set: how errors and logs name a BMC.
func Endpoint(b store.BMC) string { return bmcKey(b) }

// bmcKey identifies one BMC: address:port.
func bmcKey(b store.BMC) string {
	return net.JoinHostPort(b.Address, strconv.Itoa(bmcPort(b)))
}

func credsOf(b store.BMC) [32]byte {
	return sha256.Sum256([]byte(b.Driver + "\x00" + b.Username + "\x00" + b.Password))
}

// PowerState reads the server's power state: "on", "off" or "unknown"
// ("unknown", nil for a server without a BMC). The state read is also
// written to the hardware record. Blocks while another call holds the
// same BMC.
func (m *Manager) PowerState(ctx context.Context, hw store.Hardware) (string, error) {
	st, err := m.powerState(ctx, hw, m.opts.Retries, slog.LevelDebug)
	if err == nil && driverOf(hw) != DriverManual {
		m.record(ctx, hw.ID, st)
	}
	return string(st), err
}

func (m *Manager) powerState(ctx context.Context, hw store.Hardware, retries int, level slog.Level) (PowerState, error) {
	if driverOf(hw) == DriverManual {
		return PowerUnknown, nil
	}
	st := PowerUnknown
	err := m.run(ctx, hw, "power_status", retries, level, func(ctx context.Context, s session) (string, error) {
		var raw string
		var err error
		st, raw, err = s.powerState(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("power is %s (%q)", st, raw), nil
	})
	if err != nil {
		return PowerUnknown, err
	}
	return st, nil
}

// SetPower performs a power action: "on" (a no-op when already on), "off",
// "soft", "cycle" or "reset" (both power on a server that is off). With the
// manual driver it asks an operator by event and returns nil: the caller
// waits for the server to show up. Cycle and reset are not retried once the
// BMC may have acted on them.
func (m *Manager) SetPower(ctx context.Context, hw store.Hardware, action string) error {
	a, err := ParsePowerAction(action)
	if err != nil {
		return fmt.Errorf("set power on hardware %s: %w", hw.ID, err)
	}
	if driverOf(hw) == DriverManual {
		return m.askOperator(ctx, hw, "power "+string(a), fmt.Sprintf("power %s the server by hand", a))
	}
	var did string
	err = m.run(ctx, hw, "power_"+string(a), m.opts.Retries, slog.LevelInfo, func(ctx context.Context, s session) (string, error) {
		cur, raw, err := s.powerState(ctx)
		if err != nil {
			return "", err
		}
		send := a
		switch {
		case a == ActionOn && cur == PowerOn,
			(a == ActionOff || a == ActionSoft) && cur == PowerOff:
			did = fmt.Sprintf("already %s, nothing sent", cur)
			return did, nil
		case (a == ActionCycle || a == ActionReset) && cur == PowerOff:
			send = ActionOn
		}
		if err := s.setPower(ctx, send); err != nil {
			if send == ActionCycle || send == ActionReset {
				// The BMC may have acted: a second cycle would be a surprise.
				err = permanent{err}
			}
			return "", err
		}
		did = fmt.Sprintf("was %s (%q), sent %s", cur, raw, send)
		return did, nil
	})
	if err != nil {
		return err
	}
	m.event(ctx, store.Event{HardwareID: hw.ID, Type: store.EventPower, State: string(a), Message: fmt.Sprintf("power %s: %s", a, did)})
	return nil
}

// SetBootDevice sets the device the server boots from next: "pxe", "disk",
// "bios" or "cdrom"; persistent for every boot rather than the next one,
// efi for UEFI boot. Idempotent. Provisioning uses pxe, one time.
func (m *Manager) SetBootDevice(ctx context.Context, hw store.Hardware, device string, persistent, efi bool) error {
	dev, err := ParseBootDevice(device)
	if err != nil {
		return fmt.Errorf("set boot device on hardware %s: %w", hw.ID, err)
	}
	when := "next boot only"
	if persistent {
		when = "every boot"
	}
	mode := "legacy BIOS"
	if efi {
		mode = "UEFI"
	}
	if driverOf(hw) == DriverManual {
		return m.askOperator(ctx, hw, "boot "+string(dev), fmt.Sprintf("set the boot device to %s (%s, %s) by hand", dev, when, mode))
	}
	return m.run(ctx, hw, "boot_"+string(dev), m.opts.Retries, slog.LevelInfo, func(ctx context.Context, s session) (string, error) {
		if err := s.setBootDevice(ctx, dev, persistent, efi); err != nil {
			return "", err
		}
		return fmt.Sprintf("boot device %s (%s, %s)", dev, when, mode), nil
	})
}

// askOperator is the manual driver: log and record an event asking a human.
func (m *Manager) askOperator(ctx context.Context, hw store.Hardware, op, what string) error {
	name := hw.ID
	if hw.Hostname != "" {
		name = fmt.Sprintf("%s (%s)", hw.ID, hw.Hostname)
	}
	msg := fmt.Sprintf("hardware %s has no BMC (driver manual): %s", name, what)
	m.log.Warn("operator action needed", "hardware_id", hw.ID, "driver", DriverManual, "op", op, "msg", msg)
	m.metrics.requests.WithLabelValues(DriverManual, strings.ReplaceAll(op, " ", "_"), "operator").Inc()
	if m.st == nil {
		return nil
	}
	if err := m.st.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.AppendEvent(store.Event{HardwareID: hw.ID, Type: store.EventOperator, Message: msg})
		return err
	}); err != nil {
		return fmt.Errorf("ask operator to %s on hardware %s: record event: %w", op, hw.ID, err)
	}
	return nil
}

// permanent marks an error that must not be retried.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// run performs fn against hw's BMC: serialised per BMC, bounded by the
// worker pool, each attempt under Options.Timeout, transient failures
// retried. fn returns a short description of what it did, for the log.
func (m *Manager) run(ctx context.Context, hw store.Hardware, op string, retries int, level slog.Level, fn func(context.Context, session) (string, error)) error {
	drvName := driverOf(hw)
	key := bmcKey(hw.BMC)
	fail := func(err error) error {
		return fmt.Errorf("bmc %s (hardware %s, driver %s): %s: %w", key, hw.ID, drvName, strings.ReplaceAll(op, "_", " "), redact(err, hw.BMC.Password))
	}
	drv, ok := m.drivers[drvName]
	if !ok {
		return fail(fmt.Errorf("%w: unknown driver %q (want ipmi, redfish or manual)", ErrInvalid, hw.BMC.Driver))
	}
	if hw.BMC.Address == "" {
		return fail(fmt.Errorf("%w: no BMC address", ErrInvalid))
	}
	log := m.log.With("hardware_id", hw.ID, "driver", drvName, "bmc", key, "op", op)

	unlock, err := m.lock(ctx, key)
	if err != nil {
		return fail(fmt.Errorf("wait for earlier operations on this BMC: %w", err))
	}
	defer unlock()

	backoff := m.opts.RetryBackoff
	for attempt := 1; ; attempt++ {
		select {
		case m.slots <- struct{}{}:
		case <-ctx.Done():
			return fail(fmt.Errorf("wait for a free BMC worker: %w", ctx.Err()))
		}
		m.metrics.inflight.Inc()
		start := time.Now()
		provider, did, err := m.attempt(ctx, drv, drvName, hw, fn)
		took := time.Since(start)
		m.metrics.inflight.Dec()
		<-m.slots

		m.metrics.duration.WithLabelValues(drvName, op).Observe(took.Seconds())
		m.metrics.requests.WithLabelValues(drvName, op, result(err)).Inc()
		if err == nil {
			m.clearAuthFailure(key)
			log.Log(ctx, level, "bmc operation done", "provider", provider, "attempt", attempt, "duration", took.Round(time.Millisecond), "result", did)
			return nil
		}
		err = redact(err, hw.BMC.Password)
		var p permanent
		final := errors.Is(err, ErrAuth) || errors.Is(err, ErrInvalid) || errors.As(err, &p) || attempt > retries || ctx.Err() != nil
		log.Warn("bmc operation failed", "provider", provider, "attempt", attempt, "final", final, "duration", took.Round(time.Millisecond), "err", err)
		if errors.Is(err, ErrAuth) {
			m.noteAuthFailure(key, hw.BMC)
		}
		if final {
			if attempt > 1 {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return fail(err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fail(fmt.Errorf("after %d attempts: %w (gave up waiting to retry: %v)", attempt, err, ctx.Err()))
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// attempt opens a session, runs fn and closes the session, all under the
// per-attempt timeout, and classifies the error.
func (m *Manager) attempt(ctx context.Context, drv opener, drvName string, hw store.Hardware, fn func(context.Context, session) (string, error)) (provider, did string, err error) {
	actx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	start := time.Now()
	s, err := drv.open(actx, hw, m.opts.Timeout)
	if err == nil {
		provider = s.provider()
		did, err = fn(actx, s)
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		s.close(cctx)
		ccancel()
	}
	if err == nil {
		return provider, did, nil
	}
	switch {
	case errors.Is(err, ErrInvalid):
	case ctx.Err() != nil:
		// The caller gave up; that is no BMC timeout.
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	case actx.Err() != nil || isTimeout(err):
		err = fmt.Errorf("%w (no answer within %s): %w", ErrTimeout, m.opts.Timeout, err)
	case isAuthError(drvName, err, time.Since(start)):
		err = fmt.Errorf("%w (check the hardware's BMC username and password; not retried): %w", ErrAuth, err)
	}
	return provider, "", err
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrAuth):
		return "auth_error"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	}
	return "error"
}

// lock takes the BMC's lock, waiting while another operation holds it.
func (m *Manager) lock(ctx context.Context, key string) (func(), error) {
	m.mu.Lock()
	l := m.locks[key]
	if l == nil {
		l = &bmcLock{ch: make(chan struct{}, 1)}
		m.locks[key] = l
	}
	l.refs++
	m.mu.Unlock()

	release := func() {
		m.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(m.locks, key)
		}
		m.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func (m *Manager) noteAuthFailure(key string, b store.BMC) {
	m.mu.Lock()
	m.authFail[key] = authFailure{creds: credsOf(b), at: time.Now()}
	m.mu.Unlock()
}

func (m *Manager) clearAuthFailure(key string) {
	m.mu.Lock()
	delete(m.authFail, key)
	m.mu.Unlock()
}

// authBlocked reports whether the poller should leave the BMC alone: the
// same credentials were refused less than AuthBackoff ago.
func (m *Manager) authBlocked(b store.BMC) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.authFail[bmcKey(b)]
	if !ok || f.creds != credsOf(b) || time.Since(f.at) >= m.opts.AuthBackoff {
		return time.Time{}, false
	}
	return f.at, true
}

// event appends e to the store's event log; a failure is only logged, the
// BMC operation itself succeeded.
func (m *Manager) event(ctx context.Context, e store.Event) {
	if m.st == nil {
		return
	}
	err := m.st.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.AppendEvent(e)
		return err
	})
	if err != nil {
		m.log.Warn("record bmc event", "hardware_id", e.HardwareID, "err", err)
	}
}

// minRedactLen: shorter passwords are not searched for in error text; a
// one-letter password would garble every message and hides nothing.
const minRedactLen = 4

// rewrapped is an error with its text rewritten (flattened, a secret
// redacted) and its chain kept for errors.Is.
type rewrapped struct {
	msg string
	err error
}

func (r *rewrapped) Error() string { return r.msg }
func (r *rewrapped) Unwrap() error { return r.err }

// redact removes secret from err's message. bmclib passes the IPMI password
// through the environment and Redfish sends it only in the session body,
// but a provider's error text is not ours to trust.
func redact(err error, secret string) error {
	if err == nil || len(secret) < minRedactLen || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &rewrapped{msg: strings.ReplaceAll(err.Error(), secret, "<redacted>"), err: err}
}
