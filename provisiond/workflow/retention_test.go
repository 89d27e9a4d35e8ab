package workflow

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestRetention runs a real provision to its end, then passes with a clock
// moved on: the machine's current workflow stays however old; once the
// machine has a newer one, the old one and its events go.
func TestRetention(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "manual", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.State == store.StateBooting })
	ag := &agent{eng: h.eng, token: h.mint("n1"), hw: "n1"}
	if _, err := ag.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitFor(id, "success", stateIs(store.StateSucceeded))
	ctx := context.Background()

	now := time.Now().Add(90 * 24 * time.Hour) // the injected clock: long after the end
	r := NewRetention(h.st, quiet(), prometheus.NewRegistry(), RetentionOptions{MaxAge: 720 * time.Hour, Now: func() time.Time { return now }})
	if p, err := r.Prune(ctx); err != nil || p.Workflows != 0 {
		t.Fatalf("prune with the workflow current: %+v, %v; want nothing pruned", p, err)
	}
	if _, err := h.st.GetWorkflow(ctx, id); err != nil {
		t.Fatalf("the machine's current workflow went: %v", err)
	}

	// A newer workflow becomes current: the old one is fair game, but
	// only once it is older than MaxAge.
	err := h.st.Update(ctx, func(tx *store.Tx) error {
		m, err := tx.Machine("n1")
		if err != nil {
			return err
		}
		m.WorkflowID = "newer"
		if err := tx.PutWorkflow(store.Workflow{ID: "newer", HardwareID: "n1", State: store.StateSucceeded, FinishedAt: now}); err != nil {
			return err
		}
		return tx.PutMachine(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	early := NewRetention(h.st, quiet(), nil, RetentionOptions{MaxAge: 720 * time.Hour})
	if p, err := early.Prune(ctx); err != nil || p != (store.Pruned{}) {
		t.Fatalf("prune of a fresh workflow: %+v, %v; want nothing", p, err)
	}
	p, err := r.Prune(ctx)
	if err != nil || p.Workflows != 1 || p.Events == 0 {
		t.Fatalf("prune = %+v, %v; want the old workflow and its events", p, err)
	}
	if _, err := h.st.GetWorkflow(ctx, id); err == nil {
		t.Errorf("old workflow %s still there", id)
	}
	if evs := h.states(id); len(evs) != 0 {
		t.Errorf("events of the pruned workflow left: %v", evs)
	}
	if _, err := h.st.GetWorkflow(ctx, "newer"); err != nil {
		t.Errorf("current workflow: %v", err)
	}
}
