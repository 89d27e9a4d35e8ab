// Package fakepower is the test kit's fake BMC: a workflow.Power (and
// daemon.WithPower) that keeps each server's power and boot device in
// memory, records every call, fails or hangs the calls a test names, and
// tells a hook when a server boots. The workflow engine's own tests, the
// API's and simbmc's simulated servers all use it.
//
// It imports only the store (the Power interface's Hardware), so the
// workflow package's in-package tests can use it without an import cycle.
package fakepower

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// ErrHang, given to FailCall, makes that call block until its context
// ends: a BMC that never answers.
var ErrHang = errors.New("hang")

// Power is the fake BMC of any number of servers. The zero value is not
// ready: use New.
type Power struct {
	mu     sync.Mutex
	calls  []string
	power  map[string]string // hardware id → "on" or "off"
	boot   map[string]string // hardware id → boot device
	fail   map[string]error  // call → its error
	onBoot func(hw store.Hardware, device string)
}

// New returns a Power whose servers are all off.
func New() *Power {
	return &Power{power: map[string]string{}, boot: map[string]string{}, fail: map[string]error{}}
}

// OnBoot makes every boot (a power on of a server that was off, a cycle
// or a reset) call fn with the boot device then set ("" if none was). fn
// runs on the caller's goroutine, with no lock of Power's held.
func (p *Power) OnBoot(fn func(hw store.Hardware, device string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onBoot = fn
}

// FailCall makes the call recorded as op return err from now on (nil: no
// longer fail). ErrHang blocks the call until its context ends. Calls are
// recorded as "<hw> power <action>" and "<hw> bootdev <device>
// persistent=<bool>".
func (p *Power) FailCall(op string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail[op] = err
}

// Calls returns the calls so far, in order.
func (p *Power) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

// record notes op and returns the error FailCall set for it, after
// blocking until ctx ends when that is ErrHang.
func (p *Power) record(ctx context.Context, op string) error {
	p.mu.Lock()
	p.calls = append(p.calls, op)
	err := p.fail[op]
	p.mu.Unlock()
	if errors.Is(err, ErrHang) {
		<-ctx.Done() // only the caller's deadline ends the call
		return fmt.Errorf("BMC did not answer: %w", ctx.Err())
	}
	return err
}

// PowerState implements workflow.Power: "on" or "off" (off until set).
func (p *Power) PowerState(_ context.Context, hw store.Hardware) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.power[hw.ID]; ok {
		return s, nil
	}
	return "off", nil
}

// SetPower implements workflow.Power: on, cycle and reset leave the server
// on (and boot it, see OnBoot), off and soft leave it off.
func (p *Power) SetPower(ctx context.Context, hw store.Hardware, action string) error {
	if err := p.record(ctx, hw.ID+" power "+action); err != nil {
		return err
	}
	p.mu.Lock()
	was := p.power[hw.ID]
	switch action {
	case "on", "cycle", "reset":
		p.power[hw.ID] = "on"
	case "off", "soft":
		p.power[hw.ID] = "off"
	default:
		p.mu.Unlock()
		return fmt.Errorf("unknown power action %q", action)
	}
	booted := p.power[hw.ID] == "on" && (was != "on" || action != "on")
	fn, device := p.onBoot, p.boot[hw.ID]
	p.mu.Unlock()
	if booted && fn != nil {
		fn(hw, device)
	}
	return nil
}

// SetBootDevice implements workflow.Power.
func (p *Power) SetBootDevice(ctx context.Context, hw store.Hardware, device string, persistent, _ bool) error {
	if err := p.record(ctx, fmt.Sprintf("%s bootdev %s persistent=%v", hw.ID, device, persistent)); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.boot[hw.ID] = device
	return nil
}

// BootDevice returns the boot device last set for hardware hwID.
func (p *Power) BootDevice(hwID string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.boot[hwID]
}
