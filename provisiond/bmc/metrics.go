package bmc

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	power        *prometheus.GaugeVec
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inflight     prometheus.Gauge
	pollDuration prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		power: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "provisiond", Subsystem: "bmc", Name: "power_state",
			Help: "Power state last seen by the BMC poll: 1 for the current state of each hardware, 0 for the others.",
		}, []string{"hardware_id", "state"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "provisiond", Subsystem: "bmc", Name: "requests_total",
			Help: "BMC operation attempts by driver, operation and result (ok, error, timeout, auth_error, operator).",
		}, []string{"driver", "op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "provisiond", Subsystem: "bmc", Name: "request_duration_seconds",
			Help:    "Duration of one BMC operation attempt, session open and close included.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"driver", "op"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "provisiond", Subsystem: "bmc", Name: "inflight",
			Help: "BMC operation attempts in flight (bounded by the worker pool).",
		}),
		pollDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "provisiond", Subsystem: "bmc", Name: "poll_duration_seconds",
			Help: "Duration of the last power poll over all hardware with a BMC.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.power, m.requests, m.duration, m.inflight, m.pollDuration)
	}
	return m
}
