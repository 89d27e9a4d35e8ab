package workflow

import (
	"context"
	"fmt"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/fakepower"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// BenchmarkStateCollector is the cost of one scrape of the store-backed
// gauges (hardware, machines by state, stalled workflows) over 1000
// machines, each with a running workflow of three actions: the read
// transaction a /metrics request makes.
func BenchmarkStateCollector(b *testing.B) {
	const n = 1000
	st, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() }) // bench store
	now := time.Now().UTC()
	err = st.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.CreateTemplate(store.Template{ID: "tpl", Name: "tpl", Content: twoActions}); err != nil {
			return err
		}
		for j := range n {
			id := fmt.Sprintf("hw-%04d", j)
			if err := tx.CreateHardware(store.Hardware{ID: id, Interfaces: []store.Interface{{MAC: macOf(id)}}}); err != nil {
				return err
			}
			w := store.Workflow{ID: "wf-" + id, HardwareID: id, TemplateID: "tpl", Kind: store.KindProvision, State: store.StateRunning,
				CreatedAt: now, StartedAt: now, LastHeartbeat: now.Add(-time.Duration(j) * time.Second),
				Actions: []store.Action{{Task: "t", Name: "a1", State: store.StateSucceeded}, {Task: "t", Name: "a2", State: store.StateRunning}, {Task: "t", Name: "a3", State: store.StatePending}}}
			if err := tx.PutWorkflow(w); err != nil {
				return err
			}
			if err := tx.PutMachine(store.Machine{HardwareID: id, TemplateID: "tpl", WorkflowID: w.ID}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	New(st, quiet(), reg, fakepower.New(), testOptions())
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		fams, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == "provisiond_machines" {
				for _, m := range f.GetMetric() {
					if m.GetLabel()[0].GetValue() == "running" && m.GetGauge().GetValue() != n {
						b.Fatalf("running machines %v, want %d", m.GetGauge().GetValue(), n)
					}
				}
			}
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/scrape")
	fmt.Printf("store-backed metrics over %d machines: %s per scrape\n", n, per.Round(time.Microsecond))
}
