package bmc

import (
	"context"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc/bmctest"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"io"
	"log/slog"
	"testing"
	"time"
)

type syncBuffer = testkit.Buffer

type testEnv struct {
	st   *store.Store
	m    *Manager
	reg  *prometheus.Registry
	logs *syncBuffer
}

// newEnv makes a Manager on a fresh store; its log goes to a buffer that
// is printed with -v.
func newEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	st := teststore.Open(t)
	logs := &syncBuffer{}
	var w io.Writer = logs
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	e := &testEnv{st: st, m: NewManager(st, log, reg, opts), reg: reg, logs: logs}
	if tt, ok := t.(*testing.T); ok {
		tt.Cleanup(func() {
			if tt.Failed() || testing.Verbose() {
				tt.Logf("manager log:\n%s", logs.String())
			}
		})
	}
	return e
}

func (e *testEnv) create(t testing.TB, hw store.Hardware) store.Hardware {
	t.Helper()
	if err := e.st.Update(context.Background(), func(tx *store.Tx) error { return tx.CreateHardware(hw) }); err != nil {
		t.Fatal(err)
	}
	return hw
}

func redfishHW(id string, r *bmctest.Redfish, user, pass string) store.Hardware {
	return store.Hardware{ID: id, Hostname: "host-" + id, BMC: store.BMC{
		Driver: DriverRedfish, Address: r.Host(), Port: r.Port(), Username: user, Password: pass,
	}}
}

func ipmiHW(id string, s *bmctest.IPMISim, pass string) store.Hardware {
	return store.Hardware{ID: id, Hostname: "host-" + id, BMC: store.BMC{
		Driver: DriverIPMI, Address: s.Host, Port: s.Port, Username: s.User, Password: pass,
	}}
}

// newRedfish starts a Redfish test server closed at cleanup.
func newRedfish(t testing.TB, user, pass string) *bmctest.Redfish {
	r := bmctest.NewRedfish(user, pass)
	t.Cleanup(r.Close)
	return r
}

// gauge reads one sample of a metric family from the registry.
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if m.Gauge != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
