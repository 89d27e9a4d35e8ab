package bmc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

func TestServePollsPowerIntoStore(t *testing.T) {
	on := newRedfish(t, "admin", "pw")
	on.SetPower("On")
	off := newRedfish(t, "admin", "pw")
	locked := newRedfish(t, "admin", "pw")
	e := newEnv(t, Options{Timeout: 5 * time.Second, PollInterval: 100 * time.Millisecond, Retries: 3, RedfishRootCAs: on.CertPool()})
	// All three servers share one certificate (httptest), so one pool trusts them all.
	hwOn := redfishHW("on", on, "admin", "pw")
	hwOn.Labels = map[string]string{"rack": "r1"}
	hwOn = e.create(t, hwOn)
	hwOff := e.create(t, redfishHW("off", off, "admin", "pw"))
	hwLocked := e.create(t, redfishHW("locked", locked, "admin", "wrong-pw"))
	hwManual := e.create(t, store.Hardware{ID: "manual", BMC: store.BMC{Driver: DriverManual}})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	get := func(id string) store.Hardware {
		hw, err := e.st.GetHardware(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return hw
	}
	eventually(t, 10*time.Second, "first poll round", func() bool {
		return get("on").Power == "on" && get("off").Power == "off" && get("locked").Power == "unknown"
	})
	// A concurrent edit between rounds survives the poll.
	if err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		h, err := tx.Hardware("on")
		if err != nil {
			return err
		}
		h.Hostname = "renamed"
		return tx.UpdateHardware(h)
	}); err != nil {
		t.Fatal(err)
	}
	on.SetPower("Off")
	eventually(t, 10*time.Second, "power change seen", func() bool { return get("on").Power == "off" })

	got := get("on")
	want := hwOn
	want.Hostname = "renamed"
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(store.Hardware{}, "Power", "PowerSeenAt", "UpdatedAt", "CreatedAt"), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("poll changed more than Power/PowerSeenAt (-want +got):\n%s", diff)
	}
	if got.PowerSeenAt.IsZero() {
		t.Errorf("PowerSeenAt not set")
	}
	if m := get("manual"); m.Power != "" || !m.PowerSeenAt.IsZero() {
		t.Errorf("manual hardware was polled: %+v", m)
	}
	_ = hwOff
	_ = hwManual

	// Refused credentials: one login, then the poller leaves the BMC alone
	// for AuthBackoff, round after round.
	time.Sleep(500 * time.Millisecond) // ~5 more rounds
	if n := locked.LoginAttempts.Load(); n != 1 {
		t.Errorf("login attempts on the BMC with a wrong password = %d over several rounds, want 1", n)
	}
	// New credentials are tried at once.
	if err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		h, err := tx.Hardware("locked")
		if err != nil {
			return err
		}
		h.BMC.Password = "pw"
		return tx.UpdateHardware(h)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "fixed credentials used", func() bool { return get("locked").Power == "off" })
	_ = hwLocked

	for id, state := range map[string]string{"on": "off", "off": "off", "locked": "off"} {
		if v, ok := gauge(t, e.reg, "provisiond_bmc_power_state", map[string]string{"hardware_id": id, "state": state}); !ok || v != 1 {
			t.Errorf("gauge %s/%s = %v (present %v), want 1", id, state, v, ok)
		}
	}
	// Deleted hardware leaves the metric.
	if err := e.st.Update(context.Background(), func(tx *store.Tx) error { return tx.DeleteHardware("off") }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "gauge of deleted hardware removed", func() bool {
		_, ok := gauge(t, e.reg, "provisiond_bmc_power_state", map[string]string{"hardware_id": "off"})
		return !ok
	})
	if strings.Contains(e.logs.String(), "wrong-pw") {
		t.Errorf("password in the log")
	}
}

func TestManualDriverAsksOperator(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := ctxT(t, 10*time.Second)
	hw := e.create(t, store.Hardware{ID: "m1", Hostname: "box1", BMC: store.BMC{Driver: DriverManual}})
	if err := e.m.SetBootDevice(ctx, hw, "pxe", false, false); err != nil {
		t.Fatal(err)
	}
	if err := e.m.SetPower(ctx, hw, "cycle"); err != nil {
		t.Fatal(err)
	}
	st, err := e.m.PowerState(ctx, hw)
	if err != nil || st != "unknown" {
		t.Errorf("PowerState = %q, %v; want unknown, nil", st, err)
	}
	if err := e.m.SetPower(ctx, hw, "explode"); err == nil {
		t.Errorf("invalid action accepted for manual hardware")
	}
	evs, err := store.Read(ctx, e.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events("", 0) })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		if ev.HardwareID == "m1" {
			got = append(got, string(ev.Type)+": "+ev.Message)
		}
	}
	want := []string{
		"operator: hardware m1 (box1) has no BMC (driver manual): set the boot device to pxe (next boot only, legacy BIOS) by hand",
		"operator: hardware m1 (box1) has no BMC (driver manual): power cycle the server by hand",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
