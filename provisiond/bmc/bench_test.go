package bmc

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc/bmctest"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// BenchmarkRedfishPowerState: one power status read (session open, GET
// system, session close) against one local Redfish BMC.
func BenchmarkRedfishPowerState(b *testing.B) {
	r := newRedfish(b, "admin", "pw")
	e := newEnv(b, Options{Timeout: 10 * time.Second, RedfishRootCAs: r.CertPool()})
	hw := redfishHW("bench", r, "admin", "pw")
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.m.powerState(ctx, hw, 0, -8); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkRedfishManyBMCs: power status reads spread over 50 BMCs from
// many goroutines, through the default 16 workers.
func BenchmarkRedfishManyBMCs(b *testing.B) {
	const n = 50
	e := newEnv(b, Options{Timeout: 10 * time.Second})
	hws := make([]store.Hardware, n)
	for i := range n {
		r := newRedfish(b, "admin", "pw")
		hws[i] = redfishHW(fmt.Sprintf("b%02d", i), r, "admin", "pw")
		hws[i].BMC.InsecureTLS = true
	}
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			hw := hws[int(next.Add(1))%n]
			if _, err := e.m.powerState(ctx, hw, 0, -8); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkIPMIPowerState: one power status read through bmclib's
// ipmitool provider against ipmi_sim (two ipmitool runs: open, read).
func BenchmarkIPMIPowerState(b *testing.B) {
	if why := bmctest.IPMIToolsMissing(); why != "" {
		b.Skip(why)
	}
	ctx := context.Background()
	sim, err := bmctest.StartIPMISim(ctx, b.TempDir(), "admin", "pw")
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	e := newEnv(b, Options{Timeout: 10 * time.Second})
	hw := store.Hardware{ID: "ipmi-bench", BMC: store.BMC{Driver: DriverIPMI, Address: sim.Host, Port: sim.Port, Username: "admin", Password: "pw"}}
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.m.powerState(ctx, hw, 0, -8); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
