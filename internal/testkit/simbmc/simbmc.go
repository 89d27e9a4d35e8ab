// Package simbmc is the test kit's simulated BMCs and agents: many
// servers at once, driven through the real workflow engine. It is apart
// from package testkit because it imports the store, whose own tests use
// testkit.
package simbmc

import (
	"context"
	"sync"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/fakepower"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

// BMC plays the BMCs of many servers at once, for tests where a real
// ipmi_sim BMC and agent per server would cost more than they prove (the
// real peers have tests of their own). Its power and boot device are the
// test kit's fake BMC (fakepower), whose Calls it shows. Powering a server
// on (or resetting it) with boot device PXE "boots" it into the agent OS:
// a simulated agent takes the token the engine mints for the boot, asks
// for actions and reports each done, as the real agent does over gRPC.
// Use it with daemon.WithPower and set Engine before the first power-on.
type BMC struct {
	*fakepower.Power
	// Engine is the workflow engine the simulated agents talk to.
	Engine *workflow.Engine
	// ActionTime is how long each simulated action runs before the agent
	// reports it (0: at once), as a real image write takes its time.
	ActionTime time.Duration

	ctx    context.Context
	mu     sync.Mutex
	fail   map[string]string        // hardware id → action that fails
	hold   map[string]chan struct{} // hardware id → gate
	refuse map[string]error         // hardware id → what its BMC answers
	osBoot func(ctx context.Context, hw store.Hardware)
	agents sync.WaitGroup
}

// Cleaner is the part of testing.TB New uses.
type Cleaner interface{ Cleanup(func()) }

// New returns a BMC whose agents stop when the test ends.
func New(t Cleaner) *BMC {
	ctx, cancel := context.WithCancel(context.Background())
	b := &BMC{Power: fakepower.New(), ctx: ctx, fail: map[string]string{}, hold: map[string]chan struct{}{}, refuse: map[string]error{}}
	b.OnBoot(b.booted)
	t.Cleanup(func() { cancel(); b.agents.Wait() })
	return b
}

// Fail makes the agents of hardware hwID report action failed ("" : none).
func (b *BMC) Fail(hwID, action string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail[hwID] = action
}

// Hold makes the agents of hardware hwID wait for gate to close before
// they report anything (nil: no wait).
func (b *BMC) Hold(hwID string, gate chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold[hwID] = gate
}

// Refuse makes the BMC of hardware hwID answer every call with err, as a
// BMC that refuses the credentials does (nil: it answers again).
func (b *BMC) Refuse(hwID string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.refuse, hwID)
		return
	}
	b.refuse[hwID] = err
}

func (b *BMC) refused(hwID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refuse[hwID]
}

// PowerState implements workflow.Power; a refusing BMC answers its error.
func (b *BMC) PowerState(ctx context.Context, hw store.Hardware) (string, error) {
	if err := b.refused(hw.ID); err != nil {
		return "", err
	}
	return b.Power.PowerState(ctx, hw)
}

// SetPower implements workflow.Power; a refusing BMC answers its error.
func (b *BMC) SetPower(ctx context.Context, hw store.Hardware, action string) error {
	if err := b.refused(hw.ID); err != nil {
		return err
	}
	return b.Power.SetPower(ctx, hw, action)
}

// SetBootDevice implements workflow.Power; a refusing BMC answers its error.
func (b *BMC) SetBootDevice(ctx context.Context, hw store.Hardware, device string, persistent, efi bool) error {
	if err := b.refused(hw.ID); err != nil {
		return err
	}
	return b.Power.SetBootDevice(ctx, hw, device, persistent, efi)
}

// OnDiskBoot runs fn, in a goroutine of its own, for every boot from disk
// (power on or reset with boot device disk): the installed OS.
func (b *BMC) OnDiskBoot(fn func(ctx context.Context, hw store.Hardware)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.osBoot = fn
}

// booted starts what the boot device boots: the agent OS or the installed one.
func (b *BMC) booted(hw store.Hardware, device string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case device == "pxe":
		b.agents.Add(1)
		go b.runAgent(hw.ID, b.fail[hw.ID], b.hold[hw.ID])
	case device == "disk" && b.osBoot != nil:
		b.agents.Add(1)
		fn := b.osBoot
		go func() { defer b.agents.Done(); fn(b.ctx, hw) }()
	}
}

// runAgent is the agent OS of one boot.
func (b *BMC) runAgent(hwID, fail string, hold chan struct{}) {
	defer b.agents.Done()
	ctx := b.ctx
	var token string
	for token == "" {
		// The iPXE script asks for the token once the engine waits for the agent.
		if _, tok, err := b.Engine.MintAgentToken(ctx, hwID); err == nil {
			token = tok
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	if hold != nil {
		select {
		case <-ctx.Done():
			return
		case <-hold:
		}
	}
	for ctx.Err() == nil {
		as, err := b.Engine.NextAction(ctx, token, hwID)
		if err != nil || as.Done {
			return
		}
		if as.Action == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		act := *as.Action
		if b.ActionTime > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.ActionTime):
			}
		}
		r := workflow.Report{Index: as.Index, Task: act.Task, Action: act.Name, Attempt: act.Attempt, State: store.StateSucceeded, OutputTail: "done\n"}
		if act.Name == fail {
			r.State, r.Message, r.OutputTail = store.StateFailed, "exit status 3", "no space left on device\n"
		}
		if err := b.Engine.ReportAction(ctx, token, r); err != nil {
			return
		}
	}
}
