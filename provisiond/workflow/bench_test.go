package workflow

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/fakepower"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

var benchWorkflows = flag.Int("workflows", 100, "concurrent workflows per BenchmarkWorkflows iteration")

// BenchmarkWorkflows drives -workflows concurrent provision workflows, each
// with a simulated agent (heartbeats, a log line and a report per action),
// on a real bbolt store with fsync, through boot, two actions and the
// finish. It reports the wall time of the batch and the time per workflow
// (creation to success), mean and 95th percentile.
func BenchmarkWorkflows(b *testing.B) {
	n := *benchWorkflows
	for i := 0; i < b.N; i++ {
		path := filepath.Join(b.TempDir(), "bench.db")
		st, err := store.Open(path, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		power := fakepower.New()
		opts := testOptions()
		opts.BootTimeout, opts.HeartbeatTimeout = time.Minute, time.Minute
		eng := New(st, quiet(), prometheus.NewRegistry(), power, opts)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- eng.Serve(ctx) }()

		err = st.Update(ctx, func(tx *store.Tx) error {
			if err := tx.CreateTemplate(store.Template{ID: "tpl", Name: "tpl", Content: twoActions}); err != nil {
				return err
			}
			for j := 0; j < n; j++ {
				id := fmt.Sprintf("hw-%04d", j)
				hw := store.Hardware{ID: id, Hostname: id, Disks: []string{"/dev/sda"}, BMC: store.BMC{Driver: "ipmi", Address: "127.0.0.1"},
					Interfaces: []store.Interface{{MAC: macOf(id)}}}
				if err := tx.CreateHardware(hw); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}

		b.ResetTimer()
		start := time.Now()
		durations := make([]time.Duration, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				t0 := time.Now()
				hwID := fmt.Sprintf("hw-%04d", j)
				m, err := eng.Provision(ctx, store.Machine{HardwareID: hwID, TemplateID: "tpl", Parameters: map[string]string{"image": "x.raw"}})
				if err != nil {
					errs <- err
					return
				}
				// The server "boots": wait for the power cycle, then the agent starts.
				if err := waitState(ctx, st, m.WorkflowID, func(w store.Workflow) bool { return w.Step == stepPowered }); err != nil {
					errs <- err
					return
				}
				_, tok, err := eng.MintAgentToken(ctx, hwID)
				if err != nil {
					errs <- err
					return
				}
				if _, err := eng.Heartbeat(ctx, tok, hwID); err != nil {
					errs <- err
					return
				}
				ag := &agent{eng: eng, token: tok, hw: hwID}
				if _, err := ag.run(ctx); err != nil {
					errs <- err
					return
				}
				if err := waitState(ctx, st, m.WorkflowID, func(w store.Workflow) bool { return store.Terminal(w.State) }); err != nil {
					errs <- err
					return
				}
				durations[j] = time.Since(t0)
			}(j)
		}
		wg.Wait()
		total := time.Since(start)
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		var sum time.Duration
		for _, d := range durations {
			sum += d
		}
		sort.Slice(durations, func(a, c int) bool { return durations[a] < durations[c] })
		b.ReportMetric(float64(n), "workflows")
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(float64(sum.Milliseconds())/float64(n), "ms/workflow")
		b.ReportMetric(float64(durations[n*95/100].Milliseconds()), "p95-ms/workflow")
		b.Logf("%d concurrent workflows on bbolt with fsync: total %s, per workflow mean %s, p95 %s, max %s",
			n, total.Round(time.Millisecond), (sum / time.Duration(n)).Round(time.Millisecond), durations[n*95/100].Round(time.Millisecond), durations[n-1].Round(time.Millisecond))
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func waitState(ctx context.Context, st *store.Store, id string, cond func(store.Workflow) bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ch := st.Changed()
		w, err := st.GetWorkflow(ctx, id)
		if err != nil {
			return err
		}
		if cond(w) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("workflow %s stuck in %s/%s", id, w.State, w.Step)
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
