package workflow

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
	duration *prometheus.HistogramVec
	boot     *prometheus.HistogramVec
	actions  *prometheus.CounterVec
	active   prometheus.Gauge
	bmc      *prometheus.CounterVec
	// logDropped counts agent output beyond the per-attempt log cap.
	logDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "started_total",
			Help: "Workflows started, by kind.",
		}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "finished_total",
			Help: "Workflows ended, by kind and final state.",
		}, []string{"kind", "state"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "duration_seconds",
			Help:    "Time from creation to end of a workflow.",
			Buckets: []float64{1, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}, []string{"kind", "state"}),
		boot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "boot_seconds",
			Help:    "Time from creation of a workflow to its agent's first call.",
			Buckets: []float64{1, 10, 30, 60, 120, 300, 600, 900},
		}, []string{"kind"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "action_results_total",
			Help: "Action attempts reported, by built-in image and result.",
		}, []string{"image", "state"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "active",
			Help: "Workflows being driven now.",
		}),
		bmc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "bmc_calls_total",
			Help: "BMC calls made by the engine, by operation and result.",
		}, []string{"op", "result"}),
		logDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "workflow", Name: "log_dropped_bytes_total",
			Help: "Bytes of action output not stored because the action attempt's output passed the log cap.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.started, m.finished, m.duration, m.boot, m.actions, m.active, m.bmc, m.logDropped)
	}
	return m
}
