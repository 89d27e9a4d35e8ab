package workflow

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// stateCollector reports what the store holds at scrape time, from one
// read transaction: hardware, machines by the state of their current
// workflow, and how long unfinished workflows have gone without progress.
// Nothing is counted by hand, so a restart or a write that bypassed the
// engine cannot make these drift from the store.
type stateCollector struct {
	e *Engine

	hardware, machines, stalledFor, stalled *prometheus.Desc
}

// collectTimeout bounds one scrape's read of the store.
const collectTimeout = 5 * time.Second

// noWorkflow is the machines' state label of a machine without a workflow.
const noWorkflow = "none"

// machineStates are the state labels of provisiond_machines: every one is
// reported, 0 included, so a dashboard's series do not come and go.
var machineStates = []string{
	string(store.StatePending), string(store.StateBooting), string(store.StateRunning),
	string(store.StateSucceeded), string(store.StateFailed), string(store.StateTimedOut),
	string(store.StateCancelled), noWorkflow,
}

// unfinished are the states a workflow makes progress in.
var unfinished = []store.State{store.StatePending, store.StateBooting, store.StateRunning}

func newStateCollector(e *Engine) *stateCollector {
	return &stateCollector{
		e: e,
		hardware: prometheus.NewDesc("provisiond_hardware",
			"Hardware records in the store.", nil, nil),
		machines: prometheus.NewDesc("provisiond_machines",
			"Machines by the state of their current workflow (none: no workflow).", []string{"state"}, nil),
		stalledFor: prometheus.NewDesc("provisiond_workflow_stalled_seconds",
			"Longest time an unfinished workflow in this state has gone without progress: since it was created "+
				"while pending or booting (no agent has called in yet), since its agent's last call while running. "+
				"0 when no workflow is in the state.", []string{"state"}, nil),
		stalled: prometheus.NewDesc("provisiond_workflows_stalled",
			"Unfinished workflows without progress for longer than their state's threshold "+
				"(pending: 1m; booting: half the boot timeout; running: the agent silence after which a new agent token may be issued, 30s by default).",
			[]string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hardware
	ch <- c.machines
	ch <- c.stalledFor
	ch <- c.stalled
}

// stallThreshold is how long a workflow in state s may go without
// progress before it counts as stalled.
func (c *stateCollector) stallThreshold(s store.State) time.Duration {
	switch s {
	case store.StatePending:
		return time.Minute // the engine moves a pending workflow on at once
	case store.StateBooting:
		return c.e.opts.BootTimeout / 2
	default:
		return c.e.opts.AgentSilence
	}
}

// progressAt is when w last made progress (see stalledFor's help).
func (c *stateCollector) progressAt(w store.Workflow) time.Time {
	if w.State != store.StateRunning {
		return w.CreatedAt
	}
	last := c.e.lastContact(w)
	if last.IsZero() {
		last = w.StartedAt
	}
	return last
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	var (
		hardware int
		current  []store.Workflow
		states   = make(map[string]int, len(machineStates))
	)
	err := c.e.st.View(ctx, func(tx *store.Tx) error {
		hardware = tx.CountHardware()
		ms, err := tx.ListMachines()
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.WorkflowID == "" {
				states[noWorkflow]++
				continue
			}
			w, err := tx.Workflow(m.WorkflowID)
			if err != nil {
				return fmt.Errorf("workflow %s of machine %s: %w", m.WorkflowID, m.HardwareID, err)
			}
			states[string(w.State)]++
			current = append(current, w)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("read the store for metrics: %w", err)
		for _, d := range []*prometheus.Desc{c.hardware, c.machines, c.stalledFor, c.stalled} {
			ch <- prometheus.NewInvalidMetric(d, err)
		}
		return
	}
	ch <- prometheus.MustNewConstMetric(c.hardware, prometheus.GaugeValue, float64(hardware))
	for _, s := range machineStates {
		ch <- prometheus.MustNewConstMetric(c.machines, prometheus.GaugeValue, float64(states[s]), s)
	}

	now := c.e.now()
	oldest := map[store.State]time.Duration{}
	stalled := map[store.State]int{}
	for _, w := range current {
		if store.Terminal(w.State) {
			continue
		}
		since := max(now.Sub(c.progressAt(w)), 0)
		oldest[w.State] = max(oldest[w.State], since)
		if since > c.stallThreshold(w.State) {
			stalled[w.State]++
		}
	}
	for _, s := range unfinished {
		ch <- prometheus.MustNewConstMetric(c.stalledFor, prometheus.GaugeValue, oldest[s].Seconds(), string(s))
		ch <- prometheus.MustNewConstMetric(c.stalled, prometheus.GaugeValue, float64(stalled[s]), string(s))
	}
}
