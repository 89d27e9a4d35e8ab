package store

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPrune: old terminal workflows and their events go; running ones,
// recent ones and a machine's current workflow stay however old; events
// of no workflow go by their own time.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	old, recent := now.Add(-40*24*time.Hour), now.Add(-time.Hour)
	cutoff := now.Add(-30 * 24 * time.Hour)

	wfs := map[string]Workflow{
		"old-succeeded": {State: StateSucceeded, FinishedAt: old},
		"old-failed":    {State: StateFailed, FinishedAt: old},
		"old-timed-out": {State: StateTimedOut, FinishedAt: old},
		"old-cancelled": {State: StateCancelled, CreatedAt: old}, // never started: no end time
		"old-running":   {State: StateRunning, StartedAt: old},
		"old-current":   {State: StateSucceeded, FinishedAt: old, HardwareID: "m1"},
		"recent-failed": {State: StateFailed, FinishedAt: recent},
		"many-events":   {State: StateSucceeded, FinishedAt: old},
	}
	must(t, s.Update(ctx, func(tx *Tx) error {
		if err := tx.CreateHardware(hw("m1", "aa:bb:cc:00:00:01", "")); err != nil {
			return err
		}
		if err := tx.CreateTemplate(Template{ID: "t", Name: "t", Content: "x"}); err != nil {
			return err
		}
		if err := tx.PutMachine(Machine{HardwareID: "m1", TemplateID: "t", WorkflowID: "old-current"}); err != nil {
			return err
		}
		for id, w := range wfs {
			w.ID, w.Kind = id, KindProvision
			if w.HardwareID == "" {
				w.HardwareID = "hw-" + id
			}
			if err := tx.PutWorkflow(w); err != nil {
				return err
			}
			n := 3
			if id == "many-events" {
				n = 2500 // several delete batches
			}
			for i := range n {
				if _, err := tx.AppendEvent(Event{WorkflowID: id, Type: EventLog, Message: fmt.Sprint(i), Time: old}); err != nil {
					return err
				}
			}
		}
		for _, e := range []Event{
			{HardwareID: "m1", Type: EventPower, Message: "old power event", Time: old},
			{WorkflowID: "deleted-long-ago", Type: EventState, Message: "orphan", Time: old},
			{HardwareID: "m1", Type: EventOperator, Message: "recent operator event", Time: recent},
		} {
			if _, err := tx.AppendEvent(e); err != nil {
				return err
			}
		}
		return nil
	}))

	got, err := s.Prune(ctx, cutoff, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Pruned{Workflows: 5, Events: 4*3 + 2500 + 2}); got != want {
		t.Errorf("Prune = %+v, want %+v", got, want)
	}
	left, err := Read(ctx, s, func(tx *Tx) ([]string, error) {
		all, err := tx.ListWorkflows()
		var ids []string
		for _, w := range all {
			ids = append(ids, w.ID)
		}
		sort.Strings(ids)
		return ids, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"old-current", "old-running", "recent-failed"}, left); diff != "" {
		t.Errorf("workflows left (-want +got):\n%s", diff)
	}
	events, err := Read(ctx, s, func(tx *Tx) ([]Event, error) { return tx.Events("", 0) })
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]int{}
	for _, e := range events {
		key := e.WorkflowID
		if key == "" {
			key = e.Message
		}
		kept[key]++
	}
	want := map[string]int{"old-current": 3, "old-running": 3, "recent-failed": 3, "recent operator event": 1}
	if diff := cmp.Diff(want, kept); diff != "" {
		t.Errorf("events left (-want +got):\n%s", diff)
	}
	for _, id := range []string{"old-succeeded", "many-events"} {
		evs, err := Read(ctx, s, func(tx *Tx) ([]Event, error) { return tx.Events(id, 0) })
		if err != nil || len(evs) != 0 {
			t.Errorf("events of pruned workflow %s: %d, %v; want none", id, len(evs), err)
		}
		ws, err := Read(ctx, s, func(tx *Tx) ([]Workflow, error) { return tx.WorkflowsOf("hw-" + id) })
		if err != nil || len(ws) != 0 {
			t.Errorf("hardware index of pruned workflow %s: %d, %v; want none", id, len(ws), err)
		}
	}

	// A second pass finds nothing.
	if got, err := s.Prune(ctx, cutoff, 1000); err != nil || got != (Pruned{}) {
		t.Errorf("second Prune = %+v, %v; want nothing", got, err)
	}
	must(t, s.Check(ctx))
}

// TestPruneTime prunes 100,000 events of 1,000 workflows, in the default
// batches, and says how long it took.
func TestPruneTime(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 events")
	}
	ctx := context.Background()
	s, path := openTemp(t)
	old := time.Now().UTC().Add(-60 * 24 * time.Hour)
	const workflows, perWF = 1000, 100
	for b := 0; b < workflows; b += 100 {
		must(t, s.Update(ctx, func(tx *Tx) error {
			for i := b; i < b+100; i++ {
				id := fmt.Sprintf("wf-%04d", i)
				if err := tx.PutWorkflow(Workflow{ID: id, HardwareID: "hw", State: StateSucceeded, FinishedAt: old}); err != nil {
					return err
				}
				for j := range perWF {
					if _, err := tx.AppendEvent(Event{WorkflowID: id, Type: EventLog, Time: old, Message: fmt.Sprintf("line %d of a fairly ordinary action output", j)}); err != nil {
						return err
					}
				}
			}
			return nil
		}))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	start := time.Now()
	got, err := s.Prune(ctx, time.Now().Add(-30*24*time.Hour), 0)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Pruned{Workflows: workflows, Events: workflows * perWF}) {
		t.Errorf("Prune = %+v", got)
	}
	t.Logf("pruned %d workflows and %d events (database %d KiB) in %s", got.Workflows, got.Events, size>>10, took.Round(time.Millisecond))
}
