package workflow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/fakepower"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// permanentErr is a BMC error that says trying again cannot help, as the
// bmc package's ErrAuth does.
type permanentErr struct{}

func (permanentErr) Error() string   { return "BMC refused the credentials" }
func (permanentErr) Permanent() bool { return true }

const twoActions = `version: "0.1"
name: two
global_timeout: 600
tasks:
  - name: install
    worker: "{{ .device_1 }}"
    actions:
      - name: image
        image: quay.io/tinkerbell/actions/image2disk:v1.0.0
        timeout: 60
        retries: {{ index .Params "retries" | default "0" }}
        environment:
          IMG_URL: "{{ .ImagesURL }}/{{ .Params.image }}"
          DEST_DISK: "{{ .Hardware.Disks 0 }}"
      - name: hostname
        image: writefile
        timeout: {{ index .Params "timeout" | default "60" }}
        environment:
          DEST_DISK: "{{ .Hardware.Disks 0 }}1"
          DEST_PATH: /etc/hostname
          CONTENTS: "{{ .Hardware.Hostname }}"
`

type harness struct {
	t      *testing.T
	st     *store.Store
	power  *fakepower.Power
	eng    *Engine
	cancel context.CancelFunc
	done   chan error
	path   string
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOptions() Options {
	return Options{
		PublicURL: "http://10.0.0.1:8080", ImagesURL: "http://10.0.0.1:8080/images",
		BootTimeout: 10 * time.Second, HeartbeatTimeout: 10 * time.Second, ActionGrace: 200 * time.Millisecond,
		PowerAttempts: 3, PowerRetryDelay: 10 * time.Millisecond,
	}
}

// newHarness opens a file store in a temp dir and serves an engine on it.
func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, power: fakepower.New(), path: filepath.Join(t.TempDir(), "provisiond.db")}
	st, err := store.Open(h.path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	h.serve(opts)
	t.Cleanup(func() {
		h.stop()
		if err := h.st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return h
}

func (h *harness) serve(opts Options) {
	h.eng = New(h.st, quiet(), prometheus.NewRegistry(), h.power, opts)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.eng.Serve(ctx) }()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Serve: %v", err)
	}
	h.cancel = nil
}

func (h *harness) addHardware(id, driver string, disks ...string) store.Hardware {
	h.t.Helper()
	hw := store.Hardware{
		ID: id, Hostname: "host-" + id, Arch: "x86_64", Disks: disks,
		Interfaces: []store.Interface{{MAC: macOf(id), IP: "10.0.0.5/24"}},
		BMC:        store.BMC{Driver: driver, Address: "127.0.0.1"},
	}
	hw.Interfaces[0].IP = ""
	if err := h.st.Update(context.Background(), func(tx *store.Tx) error { return tx.CreateHardware(hw) }); err != nil {
		h.t.Fatal(err)
	}
	return hw
}

func macOf(id string) string {
	var sum uint32
	for _, c := range id {
		sum = sum*31 + uint32(c)
	}
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(sum>>24), byte(sum>>16), byte(sum>>8), byte(sum))
}

func (h *harness) addTemplate(id, content string) {
	h.t.Helper()
	err := h.st.Update(context.Background(), func(tx *store.Tx) error {
		return tx.CreateTemplate(store.Template{ID: id, Name: id, Content: content})
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// waitFor polls the workflow until cond holds or 10 s pass.
func (h *harness) waitFor(id string, what string, cond func(store.Workflow) bool) store.Workflow {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, err := h.st.GetWorkflow(context.Background(), id)
		if err == nil && cond(w) {
			return w
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("workflow %s: timed out waiting for %s; last: state %s step %s err %v (%v)", id, what, w.State, w.Step, w.Error, err)
		}
		select {
		case <-h.st.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func stateIs(s store.State) func(store.Workflow) bool {
	return func(w store.Workflow) bool { return w.State == s }
}

func (h *harness) states(id string) []string {
	h.t.Helper()
	evs, err := store.Read(context.Background(), h.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Type == store.EventState && (len(out) == 0 || out[len(out)-1] != e.State) {
			out = append(out, e.State)
		}
	}
	return out
}

// agent is a simulated agent that talks to the engine directly.
type agent struct {
	eng   *Engine
	token string
	hw    string
	// outcome decides each action's report: "succeeded", "failed", "timed_out" or "hang".
	outcome func(a store.Action) store.State
}

// run executes actions until the engine says done or an action hangs.
func (a *agent) run(ctx context.Context) (Assignment, error) {
	for {
		as, err := a.eng.NextAction(ctx, a.token, a.hw)
		if err != nil {
			return as, err
		}
		if as.Done {
			return as, nil
		}
		if as.Action == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		act := *as.Action
		if err := a.eng.ReportAction(ctx, a.token, Report{Index: as.Index, Task: act.Task, Action: act.Name, State: store.StateRunning, Attempt: act.Attempt}); err != nil {
			return as, err
		}
		if err := a.eng.AppendLog(ctx, a.token, as.Index, []byte("working on "+act.Name+"\n")); err != nil {
			return as, err
		}
		state := store.StateSucceeded
		if a.outcome != nil {
			state = a.outcome(act)
		}
		if state == "hang" {
			return as, nil
		}
		r := Report{Index: as.Index, Task: act.Task, Action: act.Name, State: state, Attempt: act.Attempt,
			Message: "exit status 1", OutputTail: "line 1\nfatal: " + act.Name + " broke\n"}
		if state == store.StateSucceeded {
			r.Message, r.OutputTail = "", "ok"
		}
		if err := a.eng.ReportAction(ctx, a.token, r); err != nil {
			return as, err
		}
	}
}

func (h *harness) provision(hw, tpl string, params map[string]string) string {
	h.t.Helper()
	m, err := h.eng.Provision(context.Background(), store.Machine{HardwareID: hw, TemplateID: tpl, Parameters: params})
	if err != nil {
		h.t.Fatal(err)
	}
	return m.WorkflowID
}

func (h *harness) mint(hw string) string {
	h.t.Helper()
	_, tok, err := h.eng.MintAgentToken(context.Background(), hw)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func TestProvisionWithBMC(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "jammy.raw"})

	w := h.waitFor(id, "the power cycle", func(w store.Workflow) bool { return w.Step == stepPowered })
	hw, _ := h.st.GetHardware(context.Background(), "n1")
	if !hw.Netboot.AllowPXE || !hw.Netboot.AllowWorkflow {
		t.Errorf("netboot during boot = %+v, want on", hw.Netboot)
	}
	if w.Actions[0].Environment["IMG_URL"] != "http://10.0.0.1:8080/images/jammy.raw" || w.Actions[0].Image != "image2disk" {
		t.Errorf("rendered action 0 = %+v", w.Actions[0])
	}
	ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
	last, err := ag.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Assignment{WorkflowID: id, Done: true, Then: "none"}, last); diff != "" {
		t.Errorf("last assignment (-want +got):\n%s", diff)
	}
	w = h.waitFor(id, "success", stateIs(store.StateSucceeded))
	want := []string{"n1 bootdev pxe persistent=false", "n1 power on", "n1 bootdev disk persistent=true", "n1 power reset"}
	if diff := cmp.Diff(want, h.power.Calls()); diff != "" {
		t.Errorf("BMC calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"pending", "booting", "running", "succeeded"}, h.states(id)); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	hw, _ = h.st.GetHardware(context.Background(), "n1")
	if hw.Netboot.AllowPXE || hw.Netboot.AllowWorkflow {
		t.Errorf("netboot after success = %+v, want off", hw.Netboot)
	}
	m, err := h.st.GetMachine(context.Background(), "n1")
	if err != nil || m.ProvisionedAt.IsZero() {
		t.Errorf("machine after success = %+v, %v; want ProvisionedAt set", m, err)
	}
	for _, a := range w.Actions {
		if a.State != store.StateSucceeded || a.Attempt != 1 {
			t.Errorf("action %s: state %s attempt %d", a.Name, a.State, a.Attempt)
		}
	}
	// The token dies with the workflow: reports are refused, and the
	// agent is told it is done.
	if err := h.eng.ReportAction(context.Background(), ag.token, Report{Index: 0, State: store.StateSucceeded}); !errors.Is(err, ErrNotReady) {
		t.Errorf("report after end: %v, want ErrNotReady", err)
	}
	// A second provision of the held hardware is a conflict.
	if _, err := h.eng.Provision(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "x"}}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second provision: %v, want ErrConflict", err)
	}
}

func TestProvisionManualBMC(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("m1", "manual", "/dev/vda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("m1", "tpl", map[string]string{"image": "a.raw"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	ag := &agent{eng: h.eng, token: h.mint("m1"), hw: "m1"}
	last, err := ag.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !last.Done || last.Then != "reboot" {
		t.Errorf("last assignment %+v: want done, then reboot (no BMC)", last)
	}
	h.waitFor(id, "success", stateIs(store.StateSucceeded))
	if c := h.power.Calls(); len(c) != 0 {
		t.Errorf("BMC calls for a manual server: %v", c)
	}
}

func TestRenderErrorRefused(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi") // no disks: {{ .Hardware.Disks 0 }} fails
	h.addTemplate("tpl", twoActions)
	_, err := h.eng.Provision(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "x"}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "disk 0 of hardware") {
		t.Fatalf("Provision: %v, want ErrInvalid naming the missing disk", err)
	}
	if _, err := h.st.GetMachine(context.Background(), "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("machine stored despite the error: %v", err)
	}
}

func TestRetries(t *testing.T) {
	tests := map[string]struct {
		retries   string
		failures  int // how many times the image action fails before it works
		wantState store.State
		wantTries int
	}{
		"retry then succeed":  {retries: "2", failures: 2, wantState: store.StateSucceeded, wantTries: 3},
		"retries exhausted":   {retries: "1", failures: 5, wantState: store.StateFailed, wantTries: 2},
		"no retries, failure": {retries: "0", failures: 1, wantState: store.StateFailed, wantTries: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testOptions())
			h.addHardware("n1", "ipmi", "/dev/sda")
			h.addTemplate("tpl", twoActions)
			id := h.provision("n1", "tpl", map[string]string{"image": "x", "retries": tc.retries})
			h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
			failed := 0
			ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1", outcome: func(a store.Action) store.State {
				if a.Name == "image" && failed < tc.failures {
					failed++
					return store.StateFailed
				}
				return store.StateSucceeded
			}}
			last, err := ag.run(context.Background())
			if tc.wantState == store.StateFailed {
				// The agent learns the end from its next call.
				if err != nil || !last.Done || last.Then != "none" {
					t.Fatalf("agent: %+v, %v", last, err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			w := h.waitFor(id, string(tc.wantState), stateIs(tc.wantState))
			if w.Actions[0].Attempt != tc.wantTries {
				t.Errorf("attempts = %d, want %d", w.Actions[0].Attempt, tc.wantTries)
			}
			if tc.wantState == store.StateFailed {
				wantErr := fmt.Sprintf("action install/image failed after %d attempt(s): exit status 1\n--- output (tail) ---\nline 1\nfatal: image broke\n", tc.wantTries)
				if diff := cmp.Diff(wantErr, w.Error); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
				hw, _ := h.st.GetHardware(context.Background(), "n1")
				if !hw.Netboot.AllowPXE {
					t.Errorf("netboot switched off after a failure; it stays on")
				}
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	t.Run("boot", func(t *testing.T) {
		opts := testOptions()
		opts.BootTimeout = 300 * time.Millisecond
		h := newHarness(t, opts)
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		w := h.waitFor(id, "boot timeout", stateIs(store.StateTimedOut))
		if !strings.Contains(w.Error, "no agent called in within 300ms") {
			t.Errorf("error = %q", w.Error)
		}
	})
	t.Run("heartbeat", func(t *testing.T) {
		opts := testOptions()
		opts.HeartbeatTimeout = 400 * time.Millisecond
		h := newHarness(t, opts)
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1", outcome: func(store.Action) store.State { return "hang" }}
		if _, err := ag.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The agent vanished mid-action: the workflow fails.
		w := h.waitFor(id, "heartbeat failure", stateIs(store.StateFailed))
		if !strings.Contains(w.Error, "the agent went silent during action install/image (attempt 1): ") || w.Actions[0].State != store.StateCancelled {
			t.Errorf("error %q, action state %s", w.Error, w.Actions[0].State)
		}
		stop, err := h.eng.Heartbeat(context.Background(), ag.token, "n1")
		if err != nil || !stop {
			t.Errorf("heartbeat after failure = %v, %v; want stop", stop, err)
		}
	})
	t.Run("action", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		id := h.provision("n1", "tpl", map[string]string{"image": "x", "timeout": "1"})
		h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1", outcome: func(a store.Action) store.State {
			if a.Name == "hostname" {
				return "hang"
			}
			return store.StateSucceeded
		}}
		if _, err := ag.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Keep the agent alive so only the action timeout can fire.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				_, _ = h.eng.Heartbeat(ctx, ag.token, "n1")
				time.Sleep(50 * time.Millisecond)
			}
		}()
		w := h.waitFor(id, "action timeout", stateIs(store.StateTimedOut))
		if w.Error != "action install/hostname timed out after 1 attempt(s): no report within its timeout of 1s" {
			t.Errorf("error = %q", w.Error)
		}
	})
	t.Run("global", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", strings.Replace(twoActions, "global_timeout: 600", "global_timeout: 1", 1))
		id := h.provision("n1", "tpl", map[string]string{"image": "x", "timeout": "60"})
		h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1", outcome: func(store.Action) store.State { return "hang" }}
		if _, err := ag.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		w := h.waitFor(id, "global timeout", stateIs(store.StateTimedOut))
		if w.Error != "global timeout of 1s passed" {
			t.Errorf("error = %q", w.Error)
		}
	})
}

func TestBMCFailure(t *testing.T) {
	events := func(h *harness, id string) (out []string) {
		evs, err := store.Read(context.Background(), h.eng.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Type == store.EventPower && strings.Contains(ev.Message, "failed (attempt") {
				out = append(out, ev.Message)
			}
		}
		return out
	}
	t.Run("transient: retried, each attempt an event", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		h.power.FailCall("n1 bootdev pxe persistent=false", errors.New("connection refused"))
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		w := h.waitFor(id, "failure", stateIs(store.StateFailed))
		if !strings.HasPrefix(w.Error, "BMC: boot device pxe (one time) failed 3 times in ") || !strings.HasSuffix(w.Error, ": connection refused") {
			t.Errorf("error = %q", w.Error)
		}
		if got := events(h, id); len(got) != 2 {
			t.Errorf("events of failed attempts: %q, want the 2 before the last", got)
		}
	})
	t.Run("permanent: no retry", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		h.power.FailCall("n1 bootdev pxe persistent=false", permanentErr{})
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		w := h.waitFor(id, "failure", stateIs(store.StateFailed))
		if w.Error != "BMC: boot device pxe (one time) failed, and trying again cannot help: BMC refused the credentials" {
			t.Errorf("error = %q", w.Error)
		}
		if n := len(h.power.Calls()); n != 1 {
			t.Errorf("BMC calls = %d, want 1 (credentials are never retried)", n)
		}
	})
	t.Run("silent BMC: failed within the step timeout", func(t *testing.T) {
		opts := testOptions()
		opts.PowerAttempts, opts.PowerStepTimeout, opts.PowerRetryDelay = 100, 600*time.Millisecond, 50*time.Millisecond
		h := newHarness(t, opts)
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		h.power.FailCall("n1 bootdev pxe persistent=false", fakepower.ErrHang)
		start := time.Now()
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		w := h.waitFor(id, "failure", stateIs(store.StateFailed))
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("a silent BMC failed the workflow after %s; the step timeout is %s", took, opts.PowerStepTimeout)
		}
		if !strings.Contains(w.Error, "BMC did not answer") {
			t.Errorf("error = %q", w.Error)
		}
	})
}

func TestAgentAuth(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addHardware("n2", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id1 := h.provision("n1", "tpl", map[string]string{"image": "x"})
	id2 := h.provision("n2", "tpl", map[string]string{"image": "x"})
	h.waitFor(id1, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	h.waitFor(id2, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	tok1, tok2 := h.mint("n1"), h.mint("n2")
	ctx := context.Background()

	tests := map[string]struct {
		call func() error
		want error
	}{
		"no token":            {func() error { _, err := h.eng.NextAction(ctx, "", "n1"); return err }, ErrUnauthenticated},
		"garbage":             {func() error { _, err := h.eng.NextAction(ctx, "abc", "n1"); return err }, ErrUnauthenticated},
		"wrong secret":        {func() error { _, err := h.eng.NextAction(ctx, id1+".AAAA", "n1"); return err }, ErrUnauthenticated},
		"other workflow id":   {func() error { _, err := h.eng.NextAction(ctx, id2+tok1[len(id1):], "n2"); return err }, ErrUnauthenticated},
		"other hardware":      {func() error { _, err := h.eng.NextAction(ctx, tok1, "n2"); return err }, ErrPermission},
		"heartbeat other hw":  {func() error { _, err := h.eng.Heartbeat(ctx, tok2, "n1"); return err }, ErrPermission},
		"log with bad token":  {func() error { return h.eng.AppendLog(ctx, tok1+"x", 0, []byte("x")) }, ErrUnauthenticated},
		"report bad index":    {func() error { return h.eng.ReportAction(ctx, tok1, Report{Index: 7, State: store.StateSucceeded}) }, ErrNotReady},
		"report not running":  {func() error { return h.eng.ReportAction(ctx, tok2, Report{Index: 0, State: store.StateSucceeded}) }, ErrNotReady},
		"heartbeat own token": {func() error { _, err := h.eng.Heartbeat(ctx, tok1, "n1"); return err }, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	// A fresh token replaces the old one.
	old := tok1
	tok1 = h.mint("n1")
	if _, err := h.eng.NextAction(ctx, old, "n1"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("old token after re-mint: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.eng.NextAction(ctx, tok1, "n1"); err != nil {
		t.Errorf("new token: %v", err)
	}
	// Reporting another action than the one handed out is refused.
	if err := h.eng.ReportAction(ctx, tok1, Report{Index: 1, State: store.StateSucceeded}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("report of an action not handed out: %v, want ErrConflict", err)
	}
}

func TestAgentRebootResendsAction(t *testing.T) {
	opts := testOptions()
	opts.AgentSilence = 300 * time.Millisecond
	h := newHarness(t, opts)
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	first := h.mint("n1")
	ag := &agent{eng: h.eng, token: first, hw: "n1", outcome: func(store.Action) store.State { return "hang" }}
	if _, err := ag.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// While that agent lives, nobody gets a second token (issue 13: each
	// fetch of the boot script used to replace the live agent's token).
	if _, _, err := h.eng.MintAgentToken(context.Background(), "n1"); !errors.Is(err, ErrAgentLive) {
		t.Fatalf("mint while the agent lives: %v, want ErrAgentLive", err)
	}
	if _, err := h.eng.Heartbeat(context.Background(), first, "n1"); err != nil {
		t.Fatalf("the live agent's token stopped working after a refused mint: %v", err)
	}
	// The machine reboots into the agent again: once the old agent is
	// silent, a new token, and the interrupted action runs again as its
	// second attempt.
	time.Sleep(opts.AgentSilence + 100*time.Millisecond)
	ag = &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
	if _, err := h.eng.NextAction(context.Background(), first, "n1"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("the replaced token still works: %v", err)
	}
	if _, err := ag.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := h.waitFor(id, "success", stateIs(store.StateSucceeded))
	if w.Actions[0].Attempt != 2 {
		t.Errorf("attempts of the interrupted action = %d, want 2", w.Actions[0].Attempt)
	}
}

// TestUnusedTokenIsReplaced: the firmware fetched the boot script twice
// (a failed kernel download, say) before any agent called in: the second
// token replaces the first, and an event says so.
func TestUnusedTokenIsReplaced(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	first, second := h.mint("n1"), h.mint("n1")
	if _, err := h.eng.NextAction(context.Background(), first, "n1"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("first token after a second mint: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.eng.NextAction(context.Background(), second, "n1"); err != nil {
		t.Errorf("second token: %v", err)
	}
	evs, err := store.Read(context.Background(), h.eng.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		found = found || strings.Contains(ev.Message, "no agent used the previous one")
	}
	if !found {
		t.Errorf("no event says the token was issued again: %+v", evs)
	}
}

// TestTokenDiesWithWorkflow: once the workflow has ended, the agent's
// token gives the end once (GetAction "done"), and then nothing; nor does
// it work past TokenGrace. (Issue 13: a succeeded workflow's token still
// answered GetAction and Heartbeat.)
func TestTokenDiesWithWorkflow(t *testing.T) {
	var skew atomic.Int64
	opts := testOptions()
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h := newHarness(t, opts)
	ctx := context.Background()
	for _, hw := range []string{"n1", "n2"} {
		h.addHardware(hw, "ipmi", "/dev/sda")
	}
	h.addTemplate("tpl", twoActions)

	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	tok := h.mint("n1")
	if _, err := (&agent{eng: h.eng, token: tok, hw: "n1"}).run(ctx); err != nil {
		t.Fatal(err)
	}
	h.waitFor(id, "success", stateIs(store.StateSucceeded))
	if stop, err := h.eng.Heartbeat(ctx, tok, "n1"); err != nil || stop {
		t.Errorf("heartbeat within the grace: stop %v, %v; want false, nil", stop, err)
	}
	as, err := h.eng.NextAction(ctx, tok, "n1")
	if err != nil || !as.Done || as.Action != nil {
		t.Fatalf("first GetAction after the end = %+v, %v; want done", as, err)
	}
	if _, err := h.eng.NextAction(ctx, tok, "n1"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("second GetAction after the end: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.eng.Heartbeat(ctx, tok, "n1"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("heartbeat after the end was delivered: %v, want ErrUnauthenticated", err)
	}

	// A workflow cancelled under a running agent that never asks again:
	// its token still says "stop" for the grace, then nothing.
	id2 := h.provision("n2", "tpl", map[string]string{"image": "x"})
	h.waitFor(id2, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	tok2 := h.mint("n2")
	if as, err := h.eng.NextAction(ctx, tok2, "n2"); err != nil || as.Action == nil {
		t.Fatalf("first action: %+v, %v", as, err)
	}
	if _, err := h.eng.Deprovision(ctx, "n2", "none"); err != nil {
		t.Fatal(err)
	}
	h.waitFor(id2, "cancel", stateIs(store.StateCancelled))
	if stop, err := h.eng.Heartbeat(ctx, tok2, "n2"); err != nil || !stop {
		t.Errorf("heartbeat of a cancelled workflow within the grace: stop %v, %v; want true, nil", stop, err)
	}
	if err := h.eng.ReportAction(ctx, tok2, Report{Index: 0, State: store.StateSucceeded}); !errors.Is(err, ErrNotReady) {
		t.Errorf("report to a cancelled workflow within the grace: %v, want ErrNotReady", err)
	}
	skew.Store(int64(TokenGrace + time.Minute))
	if _, err := h.eng.Heartbeat(ctx, tok2, "n2"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("heartbeat past the grace: %v, want ErrUnauthenticated", err)
	}
	if _, err := h.eng.NextAction(ctx, tok2, "n2"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("GetAction past the grace: %v, want ErrUnauthenticated", err)
	}
}

func TestDeprovision(t *testing.T) {
	t.Run("quick wipe", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "redfish", "/dev/sda", "/dev/nvme0n1")
		h.addTemplate("tpl", twoActions)
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		// Deprovision while the provision's agent has its first action
		// (image2disk, which writes): the provision is cancelled and the
		// disks are wiped.
		if as, err := h.eng.NextAction(context.Background(), h.mint("n1"), "n1"); err != nil || as.Action == nil || as.Action.Name != "image" {
			t.Fatalf("first action: %+v, %v", as, err)
		}
		m, err := h.eng.Deprovision(context.Background(), "n1", "")
		if err != nil {
			t.Fatal(err)
		}
		h.waitFor(id, "cancel", stateIs(store.StateCancelled))
		dw := h.waitFor(m.WorkflowID, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		want := []store.Action{{Task: "deprovision", Name: "wipe-disks", Image: "wipe", Timeout: 86000 * time.Second, Retries: 1, State: store.StatePending,
			Environment: map[string]string{"DEST_DISKS": "/dev/sda,/dev/nvme0n1", "WIPE_MODE": "quick"}}}
		if diff := cmp.Diff(want, dw.Actions); diff != "" {
			t.Errorf("wipe actions (-want +got):\n%s", diff)
		}
		// A second deprovision while one runs returns it unchanged.
		again, err := h.eng.Deprovision(context.Background(), "n1", "zero")
		if err != nil || again.WorkflowID != m.WorkflowID {
			t.Errorf("second deprovision = %+v, %v; want the running one", again, err)
		}
		ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
		last, err := ag.run(context.Background())
		if err != nil || !last.Done {
			t.Fatalf("agent: %+v, %v", last, err)
		}
		h.waitFor(m.WorkflowID, "success", stateIs(store.StateSucceeded))
		if _, err := h.st.GetMachine(context.Background(), "n1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("machine after deprovision: %v, want ErrNotFound", err)
		}
		calls := h.power.Calls()
		if got := calls[len(calls)-1]; got != "n1 power off" {
			t.Errorf("last BMC call %q, want power off (all: %v)", got, calls)
		}
		// The hardware is free again.
		if _, err := h.eng.Provision(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "x"}}); err != nil {
			t.Errorf("provision after deprovision: %v", err)
		}
	})
	t.Run("wipe none", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		id := h.provision("n1", "tpl", map[string]string{"image": "x"})
		h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
		if _, err := ag.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.waitFor(id, "success", stateIs(store.StateSucceeded))
		before := len(h.power.Calls())
		m, err := h.eng.Deprovision(context.Background(), "n1", "none")
		if err != nil {
			t.Fatal(err)
		}
		h.waitFor(m.WorkflowID, "success", stateIs(store.StateSucceeded))
		if diff := cmp.Diff([]string{"n1 power off"}, h.power.Calls()[before:]); diff != "" {
			t.Errorf("BMC calls of a wipe-none deprovision (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"pending", "running", "succeeded"}, h.states(m.WorkflowID)); diff != "" {
			t.Errorf("states (-want +got):\n%s", diff)
		}
	})
	t.Run("bad wipe", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		h.provision("n1", "tpl", map[string]string{"image": "x"})
		if _, err := h.eng.Deprovision(context.Background(), "n1", "shred"); !errors.Is(err, ErrInvalid) {
			t.Errorf("wipe shred: %v, want ErrInvalid", err)
		}
		if _, err := h.eng.Deprovision(context.Background(), "nope", ""); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown machine: %v, want ErrNotFound", err)
		}
	})
}

// TestRestartMidWorkflow kills the engine in the middle of a workflow
// (its context ends and the store is closed with no cleanup), opens the
// store again with a new engine, and checks that the workflow continues
// from the last reported action and finishes with the same agent token.
func TestRestartMidWorkflow(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	token := h.mint("n1")
	ctx := context.Background()

	// The agent runs the first action to success and starts the second.
	as, err := h.eng.NextAction(ctx, token, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.eng.ReportAction(ctx, token, Report{Index: as.Index, State: store.StateSucceeded, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	as, err = h.eng.NextAction(ctx, token, "n1")
	if err != nil || as.Index != 1 {
		t.Fatalf("second action: %+v, %v", as, err)
	}
	bootCalls := len(h.power.Calls())

	// Kill: no graceful step of the engine's own, the database just closes.
	h.cancel()
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	h.cancel = nil

	st, err := store.Open(h.path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	h.serve(testOptions())

	w, err := h.st.GetWorkflow(ctx, id)
	if err != nil || w.State != store.StateRunning || w.Actions[0].State != store.StateSucceeded || w.Actions[1].State != store.StateRunning {
		t.Fatalf("after restart: %+v, %v", w, err)
	}
	// The agent reports the action it was running and carries on.
	if err := h.eng.ReportAction(ctx, token, Report{Index: 1, State: store.StateSucceeded, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	as, err = h.eng.NextAction(ctx, token, "n1")
	if err != nil || !as.Done {
		t.Fatalf("after the last action: %+v, %v", as, err)
	}
	w = h.waitFor(id, "success", stateIs(store.StateSucceeded))
	// The restarted engine did not boot the server again: only the finish.
	if diff := cmp.Diff([]string{"n1 bootdev disk persistent=true", "n1 power reset"}, h.power.Calls()[bootCalls:]); diff != "" {
		t.Errorf("BMC calls after restart (-want +got):\n%s", diff)
	}
	for _, a := range w.Actions {
		if a.Attempt != 1 {
			t.Errorf("action %s ran %d times", a.Name, a.Attempt)
		}
	}
}

// TestRestartDuringBoot restarts the engine before the agent calls in:
// the resumed driver does not repeat the power cycle, and the workflow
// still finishes.
func TestRestartDuringBoot(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	h.stop()
	h.serve(testOptions())
	ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
	if _, err := ag.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitFor(id, "success", stateIs(store.StateSucceeded))
	want := []string{"n1 bootdev pxe persistent=false", "n1 power on", "n1 bootdev disk persistent=true", "n1 power reset"}
	if diff := cmp.Diff(want, h.power.Calls()); diff != "" {
		t.Errorf("BMC calls (-want +got):\n%s", diff)
	}
}

// endsIn is a hub-style template whose last action is end (kexec, reboot
// or poweroff).
func endsIn(end string) string {
	return `version: "0.1"
name: hub
global_timeout: 600
tasks:
  - name: install
    worker: "{{ .device_1 }}"
    actions:
      - name: image
        image: quay.io/tinkerbell/actions/image2disk:v1.0.0
        timeout: 60
        environment:
          IMG_URL: "{{ .ImagesURL }}/debian.raw"
          DEST_DISK: "{{ index .Hardware.Disks 0 }}"
      - name: end
        image: quay.io/tinkerbell/actions/` + end + `:v1.0.0
        timeout: 90
        pid: host
        environment:
          BLOCK_DEVICE: "{{ formatPartition (index .Hardware.Disks 0) 2 }}"
          FS_TYPE: ext4
          KERNEL_PATH: /boot/vmlinuz
          INITRD_PATH: /boot/initrd.img
          CMD_LINE: "root=/dev/sda2 ro"
`
}

// TestEndingActions: a template ending in kexec gets netboot off and boot
// device disk but no reset (that would kill the kexec'd OS); one ending in
// reboot is reset by the BMC as any other, and one ending in poweroff is
// powered off. Without a BMC, provisiond tells the agent what to do.
func TestEndingActions(t *testing.T) {
	tests := map[string]struct {
		end, driver string
		wantCalls   []string
		wantThen    Then
		wantEvent   string
	}{
		"kexec with a BMC": {end: "kexec", driver: "ipmi", wantThen: "kexec",
			wantCalls: []string{"n1 bootdev pxe persistent=false", "n1 power on", "n1 bootdev disk persistent=true"},
			wantEvent: "no power reset: the agent started the installed OS by kexec"},
		"kexec without a BMC": {end: "kexec", driver: "manual", wantThen: "kexec",
			wantEvent: "no power reset: the agent started the installed OS by kexec"},
		"reboot with a BMC": {end: "reboot", driver: "ipmi", wantThen: "none",
			wantCalls: []string{"n1 bootdev pxe persistent=false", "n1 power on", "n1 bootdev disk persistent=true", "n1 power reset"},
			wantEvent: "power reset into the installed OS"},
		"reboot without a BMC": {end: "reboot", driver: "manual", wantThen: "reboot"},
		"poweroff with a BMC": {end: "poweroff", driver: "redfish", wantThen: "none",
			wantCalls: []string{"n1 bootdev pxe persistent=false", "n1 power on", "n1 bootdev disk persistent=true", "n1 power off"},
			wantEvent: "power off (the template ends in poweroff)"},
		"poweroff without a BMC": {end: "poweroff", driver: "manual", wantThen: "poweroff"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testOptions())
			h.addHardware("n1", tc.driver, "/dev/sda")
			h.addTemplate("tpl", endsIn(tc.end))
			id := h.provision("n1", "tpl", nil)
			w := h.waitFor(id, "the power-on", func(w store.Workflow) bool { return w.Step == stepPowered })
			if got := w.Actions[1]; got.Image != tc.end || got.Environment["BLOCK_DEVICE"] != "/dev/sda2" {
				t.Errorf("rendered last action = %+v", got)
			}
			ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
			last, err := ag.run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !last.Done || last.Then != tc.wantThen {
				t.Errorf("last assignment %+v: want done, then %q", last, tc.wantThen)
			}
			h.waitFor(id, "success", stateIs(store.StateSucceeded))
			if diff := cmp.Diff(tc.wantCalls, h.power.Calls()); diff != "" {
				t.Errorf("BMC calls (-want +got):\n%s", diff)
			}
			hw, _ := h.st.GetHardware(context.Background(), "n1")
			if hw.Netboot.AllowPXE || hw.Netboot.AllowWorkflow {
				t.Errorf("netboot after success = %+v, want off", hw.Netboot)
			}
			if tc.wantEvent == "" {
				return
			}
			evs, err := store.Read(context.Background(), h.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, e := range evs {
				found = found || e.Message == tc.wantEvent
			}
			if !found {
				t.Errorf("no event %q in %+v", tc.wantEvent, evs)
			}
		})
	}
}

// TestKexecLoadFails: a kexec action that cannot load its kernel fails
// the workflow like any action: netboot stays on, no BMC call after boot.
func TestKexecLoadFails(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", endsIn("kexec"))
	id := h.provision("n1", "tpl", nil)
	h.waitFor(id, "the power-on", func(w store.Workflow) bool { return w.Step == stepPowered })
	ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1", outcome: func(a store.Action) store.State {
		if a.Image == "kexec" {
			return store.StateFailed
		}
		return store.StateSucceeded
	}}
	last, err := ag.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !last.Done || last.Then != "none" {
		t.Errorf("last assignment %+v: want done, then none", last)
	}
	w := h.waitFor(id, "failure", stateIs(store.StateFailed))
	if !strings.Contains(w.Error, "end") {
		t.Errorf("error %q does not name the action", w.Error)
	}
	if diff := cmp.Diff([]string{"n1 bootdev pxe persistent=false", "n1 power on"}, h.power.Calls()); diff != "" {
		t.Errorf("BMC calls (-want +got):\n%s", diff)
	}
	hw, _ := h.st.GetHardware(context.Background(), "n1")
	if !hw.Netboot.AllowPXE || !hw.Netboot.AllowWorkflow {
		t.Errorf("netboot after failure = %+v, want on", hw.Netboot)
	}
}

// TestCancelledReport: an agent that stopped its action because provisiond
// said so reports STATE_CANCELLED; that is accepted (and recorded) once the
// workflow has ended, and refused while the workflow and action still run.
func TestCancelledReport(t *testing.T) {
	opts := testOptions()
	opts.HeartbeatTimeout = 400 * time.Millisecond
	h := newHarness(t, opts)
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1", outcome: func(store.Action) store.State { return "hang" }}
	as, err := ag.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cancelled := Report{Index: as.Index, Task: as.Action.Task, Action: as.Action.Name, State: store.StateCancelled, Message: "stopped"}

	// While the action runs, only provisiond cancels.
	if err := h.eng.ReportAction(context.Background(), ag.token, cancelled); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cancelled report of a running action: err = %v, want ErrInvalid", err)
	}
	// Once the engine has ended the workflow (the agent went silent), the
	// report is an acknowledgement.
	h.waitFor(id, "heartbeat failure", stateIs(store.StateFailed))
	if err := h.eng.ReportAction(context.Background(), ag.token, cancelled); err != nil {
		t.Fatalf("cancelled report after the workflow ended: %v", err)
	}
	evs, err := store.Read(context.Background(), h.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	want := store.Event{Seq: last.Seq, Time: last.Time, WorkflowID: id, HardwareID: "n1", Type: store.EventAction, State: string(store.StateCancelled),
		Task: as.Action.Task, Action: as.Action.Name, Message: "the agent stopped the action: workflow failed: stopped"}
	if diff := cmp.Diff(want, last); diff != "" {
		t.Errorf("last event (-want +got):\n%s", diff)
	}
	w, err := h.st.GetWorkflow(context.Background(), id)
	if err != nil || w.State != store.StateFailed || w.Actions[as.Index].State != store.StateCancelled {
		t.Errorf("workflow after the report: %s, action %s, %v; want it unchanged (failed, cancelled)", w.State, w.Actions[as.Index].State, err)
	}
	// A wrong action index is still refused.
	bad := cancelled
	bad.Index = 99
	if err := h.eng.ReportAction(context.Background(), ag.token, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("cancelled report of action 99: err = %v, want ErrInvalid", err)
	}
}

// TestDeprovisionUntouchedDisks: a machine whose install never handed out
// an action that writes disks is deprovisioned without the wipe boot:
// power off and free, with events that say why; one whose agent was given
// such an action is wiped. The engine decides, in the deprovision's write.
func TestDeprovisionUntouchedDisks(t *testing.T) {
	const kexecOnly = `version: "0.1"
name: kexec
global_timeout: 600
tasks:
  - name: boot
    actions:
      - name: boot-installed
        image: kexec
        timeout: 60
        environment:
          BLOCK_DEVICE: /dev/sda1
          KERNEL_PATH: /boot/vmlinuz
          CMD_LINE: root=/dev/sda1
`
	for name, tc := range map[string]struct {
		tpl   string
		disks []string
		// until brings the provision as far as the test wants it.
		until func(h *harness, id string)
		wiped bool
	}{
		"waiting for its agent": {tpl: twoActions, disks: []string{"/dev/sda"}, until: func(h *harness, id string) {
			h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		}},
		"failed at the BMC": {tpl: twoActions, disks: []string{"/dev/sda"}, until: func(h *harness, id string) {
			h.waitFor(id, "failure", stateIs(store.StateFailed))
		}},
		"no disks listed": {tpl: kexecOnly, until: func(h *harness, id string) {
			h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		}},
		"agent ran an action that writes nothing": {tpl: kexecOnly, disks: []string{"/dev/sda"}, until: func(h *harness, id string) {
			h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
			if as, err := h.eng.NextAction(context.Background(), h.mint("n1"), "n1"); err != nil || as.Action == nil || as.Action.Image != "kexec" {
				h.t.Fatalf("first action: %+v, %v", as, err)
			}
		}},
		"agent was given image2disk": {tpl: twoActions, disks: []string{"/dev/sda"}, wiped: true, until: func(h *harness, id string) {
			h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
			if as, err := h.eng.NextAction(context.Background(), h.mint("n1"), "n1"); err != nil || as.Action == nil || as.Action.Name != "image" {
				h.t.Fatalf("first action: %+v, %v", as, err)
			}
		}},
		"installed": {tpl: twoActions, disks: []string{"/dev/sda"}, wiped: true, until: func(h *harness, id string) {
			h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
			ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
			if _, err := ag.run(context.Background()); err != nil {
				h.t.Fatal(err)
			}
			h.waitFor(id, "success", stateIs(store.StateSucceeded))
		}},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testOptions())
			h.addHardware("n1", "ipmi", tc.disks...)
			h.addTemplate("tpl", tc.tpl)
			if name == "failed at the BMC" {
				h.power.FailCall("n1 bootdev pxe persistent=false", permanentErr{})
			}
			id := h.provision("n1", "tpl", map[string]string{"image": "x"})
			tc.until(h, id)
			if name == "failed at the BMC" {
				h.power.FailCall("n1 bootdev pxe persistent=false", nil)
			}
			before := len(h.power.Calls())
			m, err := h.eng.Deprovision(context.Background(), "n1", "quick")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.wiped {
				w := h.waitFor(m.WorkflowID, "success", stateIs(store.StateSucceeded))
				if len(w.Actions) != 0 || w.Wipe != "quick" {
					t.Errorf("deprovision workflow: wipe %q, actions %+v; want wipe quick with no actions", w.Wipe, w.Actions)
				}
				if diff := cmp.Diff([]string{"n1 power off"}, h.power.Calls()[before:]); diff != "" {
					t.Errorf("BMC calls of the deprovision (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{"pending", "running", "succeeded"}, h.states(m.WorkflowID)); diff != "" {
					t.Errorf("states (-want +got):\n%s", diff)
				}
				evs, err := store.Read(context.Background(), h.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(m.WorkflowID, 0) })
				if err != nil {
					t.Fatal(err)
				}
				said := 0
				for _, ev := range evs {
					if strings.Contains(ev.Message, "wipe quick skipped") && strings.Contains(ev.Message, "no action that writes disks ever started") {
						said++
					}
				}
				if said != 2 {
					t.Errorf("%d events say the wipe was skipped and why, want 2 (created, running): %+v", said, evs)
				}
				if _, err := h.st.GetMachine(context.Background(), "n1"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("machine after deprovision: %v, want ErrNotFound", err)
				}
				return
			}
			w := h.waitFor(m.WorkflowID, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
			if len(w.Actions) != 1 || w.Actions[0].Image != "wipe" {
				t.Fatalf("deprovision actions %+v, want the wipe", w.Actions)
			}
			if diff := cmp.Diff([]string{"n1 bootdev pxe persistent=false", "n1 power reset"}, h.power.Calls()[before:]); diff != "" {
				t.Errorf("BMC calls of the wipe boot so far (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReinstall: a reinstall runs a new provision workflow of the same
// machine, booted at once with no deprovision: a quick wipe of every disk
// first unless preserve_data, then the template's actions with the new
// inputs. A provision still running is cancelled; a deprovision under way
// is not interrupted.
func TestReinstall(t *testing.T) {
	install := func(h *harness, id string) {
		h.t.Helper()
		h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
		if _, err := ag.run(context.Background()); err != nil {
			h.t.Fatal(err)
		}
		h.waitFor(id, "success", stateIs(store.StateSucceeded))
	}
	names := func(w store.Workflow) (out []string) {
		for _, a := range w.Actions {
			out = append(out, a.Task+"/"+a.Name)
		}
		return out
	}
	for name, tc := range map[string]struct {
		preserve bool
		want     []string
	}{
		"wipes first":   {want: []string{"reinstall/wipe-disks", "install/image", "install/hostname"}},
		"preserve data": {preserve: true, want: []string{"install/image", "install/hostname"}},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testOptions())
			h.addHardware("n1", "ipmi", "/dev/sda", "/dev/sdb")
			h.addTemplate("tpl", twoActions)
			first := h.provision("n1", "tpl", map[string]string{"image": "v1"})
			install(h, first)
			before, err := h.st.GetMachine(context.Background(), "n1")
			if err != nil {
				t.Fatal(err)
			}
			calls := len(h.power.Calls())
			m, err := h.eng.Reinstall(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "v2"}, UserData: "#cloud-config\n"}, tc.preserve)
			if err != nil {
				t.Fatal(err)
			}
			if m.WorkflowID == first || !m.CreatedAt.Equal(before.CreatedAt) || m.Wipe != before.Wipe {
				t.Errorf("reinstalled machine %+v: want a new workflow, the creation time %s and wipe %q kept", m, before.CreatedAt, before.Wipe)
			}
			w := h.waitFor(m.WorkflowID, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
			if diff := cmp.Diff(tc.want, names(w)); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if i := len(w.Actions) - 2; w.Actions[i].Environment["IMG_URL"] != "http://10.0.0.1:8080/images/v2" {
				t.Errorf("image action renders with the old parameters: %+v", w.Actions[i].Environment)
			}
			if tc.preserve {
				return
			}
			if env := w.Actions[0].Environment; env["DEST_DISKS"] != "/dev/sda,/dev/sdb" || env["WIPE_MODE"] != "quick" {
				t.Errorf("wipe action environment %+v", env)
			}
			install(h, m.WorkflowID)
			if diff := cmp.Diff([]string{"n1 bootdev pxe persistent=false", "n1 power reset", "n1 bootdev disk persistent=true", "n1 power reset"}, h.power.Calls()[calls:]); diff != "" {
				t.Errorf("BMC calls of the reinstall (-want +got):\n%s", diff)
			}
			got, err := h.st.GetMachine(context.Background(), "n1")
			if err != nil || got.WorkflowID != m.WorkflowID || got.ProvisionedAt.IsZero() || got.Parameters["image"] != "v2" || got.UserData != "#cloud-config\n" {
				t.Errorf("machine after the reinstall: %+v, %v", got, err)
			}
			if old, err := h.st.GetWorkflow(context.Background(), first); err != nil || old.State != store.StateSucceeded {
				t.Errorf("first workflow after the reinstall: %s, %v; want it left succeeded", old.State, err)
			}
		})
	}
	t.Run("cancels a running provision", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		first := h.provision("n1", "tpl", map[string]string{"image": "v1"})
		h.waitFor(first, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
		m, err := h.eng.Reinstall(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "v2"}}, true)
		if err != nil {
			t.Fatal(err)
		}
		if w := h.waitFor(first, "cancel", stateIs(store.StateCancelled)); w.Error != "cancelled by a reinstall" {
			t.Errorf("first workflow error %q", w.Error)
		}
		install(h, m.WorkflowID)
	})
	t.Run("refused", func(t *testing.T) {
		h := newHarness(t, testOptions())
		h.addHardware("n1", "ipmi", "/dev/sda")
		h.addTemplate("tpl", twoActions)
		if _, err := h.eng.Reinstall(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl"}, false); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("reinstall without a machine: %v, want ErrNotFound", err)
		}
		install(h, h.provision("n1", "tpl", map[string]string{"image": "v1"}))
		d, err := h.eng.Deprovision(context.Background(), "n1", "quick")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.eng.Reinstall(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "v2"}}, false); !errors.Is(err, store.ErrConflict) {
			t.Errorf("reinstall during a deprovision: %v, want ErrConflict", err)
		}
		if w, err := h.st.GetWorkflow(context.Background(), d.WorkflowID); err != nil || store.Terminal(w.State) {
			t.Errorf("deprovision after the refused reinstall: %s, %v; want it still running", w.State, err)
		}
	})
}
