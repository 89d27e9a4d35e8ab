package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

// quietPower is a BMC that does what it is told and boots nothing: the
// test plays the agent itself, so that it decides when the agent is
// silent.
type quietPower struct {
	mu    sync.Mutex
	calls []string
}

func (p *quietPower) PowerState(context.Context, store.Hardware) (string, error) { return "off", nil }
func (p *quietPower) SetPower(_ context.Context, hw store.Hardware, action string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, hw.ID+" power "+action)
	return nil
}
func (p *quietPower) SetBootDevice(_ context.Context, hw store.Hardware, dev string, _, _ bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, hw.ID+" boot "+dev)
	return nil
}

// clock is time.Now plus an offset the test moves.
type clock struct{ ahead atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *clock) advance(d time.Duration) { c.ahead.Add(int64(d)) }

// scrape reads /metrics from addr over loopback.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the value of the series of family name whose labels include
// labels (pairs), or -1 when there is none. For a histogram it is the
// sample count.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

// want fails the test unless each family's series holds its value.
func want(t *testing.T, fams map[string]*dto.MetricFamily, checks ...check) {
	t.Helper()
	for _, c := range checks {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

type check struct {
	name   string
	labels []string
	want   float64
}

func machines(state string, n float64) check {
	return check{"provisiond_machines", []string{"state", state}, n}
}

func handled(method, code string, n float64) check {
	return check{"grpc_server_handled_total", []string{"grpc_method", method, "grpc_code", code}, n}
}

// TestMetrics: the families an operator dashboards on, scraped from the
// metrics listener of a daemon built as provisiond builds it, change as
// hardware, a machine and its workflow do.
func TestMetrics(t *testing.T) {
	clk := &clock{}
	power := &quietPower{}
	const version = "v9.8.7-test"
	d, err := daemon.New(daemon.Config{
		DataDir: t.TempDir(), GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
		PublicIP: "127.0.0.1", Token: "metrics-test-admin-token-0123456789", NoSync: true, Version: version,
		Workflow: workflow.Options{BootTimeout: time.Hour, HeartbeatTimeout: time.Hour, AgentSilence: 30 * time.Second},
	}, daemon.WithPower(power), daemon.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	maddr := d.MetricsAddr()
	if maddr == "" || maddr == d.HTTPAddr() {
		t.Fatalf("metrics listener %q: want one of its own", maddr)
	}
	// /metrics left the port machines reach.
	if resp, err := http.Get("http://" + d.HTTPAddr() + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the HTTP listener: %v %v, want 404", resp.Status, err)
	}

	c, err := client.New(ctx, client.Config{Endpoint: "http://" + d.GRPCAddr(), Token: "metrics-test-admin-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	fams := scrape(t, maddr)
	want(t, fams,
		check{"provisiond_build_info", []string{"version", version, "goversion", runtime.Version()}, 1},
		check{"provisiond_hardware", nil, 0},
		machines("none", 0), machines("running", 0), machines("succeeded", 0),
		check{"provisiond_workflow_stalled_seconds", []string{"state", "running"}, 0},
		check{"provisiond_workflows_stalled", []string{"state", "running"}, 0},
		handled("CreateHardware", "OK", -1), // no call yet, no series
	)

	hw := &pb.Hardware{Id: "n1", Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:01"}}, Disks: []string{"/dev/vda"},
		Bmc: &pb.BMC{Driver: "ipmi", Address: "127.0.0.1", Port: 9, Username: "admin", Password: "x"}}
	if _, err := c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: hw})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second create: %v, want AlreadyExists", err)
	}
	fams = scrape(t, maddr)
	want(t, fams,
		check{"provisiond_hardware", nil, 1},
		handled("CreateHardware", "OK", 1), handled("CreateHardware", "AlreadyExists", 1),
		check{"grpc_server_handling_seconds", []string{"grpc_method", "CreateHardware"}, 2},
		check{"grpc_server_started_total", []string{"grpc_method", "CreateHardware"}, 2},
	)

	tpl := "version: \"0.1\"\nname: one\nglobal_timeout: 600\ntasks:\n  - name: install\n    worker: \"{{ .Hardware.MAC }}\"\n    actions:\n" +
		"      - name: a1\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n"
	if _, err := c.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Id: "one", Name: "one", Content: tpl}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: "n1", TemplateId: "one"}); err != nil {
		t.Fatal(err)
	}

	// The agent of the boot: it takes its token once the engine waits
	// for it, and asks for its first action.
	var token string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, tok, err := d.Engine().MintAgentToken(ctx, "n1")
		if err == nil {
			token = tok
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agent token within 10s: %v (power calls %v)", err, power.calls)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Booting, and no agent call yet: stalled since the workflow was made.
	clk.advance(10 * time.Minute)
	fams = scrape(t, maddr)
	want(t, fams, machines("booting", 1), machines("none", 0))
	if got := value(fams, "provisiond_workflow_stalled_seconds", "state", "booting"); got < 600 || got > 660 {
		t.Errorf("stalled seconds while booting = %v, want about 600", got)
	}
	want(t, fams, check{"provisiond_workflows_stalled", []string{"state", "booting"}, 0}) // half the boot timeout is 30m

	as, err := d.Engine().NextAction(ctx, token, "n1")
	if err != nil || as.Action == nil {
		t.Fatalf("next action: %+v, %v", as, err)
	}
	fams = scrape(t, maddr)
	want(t, fams, machines("running", 1), machines("booting", 0),
		check{"provisiond_workflows_stalled", []string{"state", "running"}, 0})
	if got := value(fams, "provisiond_workflow_stalled_seconds", "state", "running"); got < 0 || got > 5 {
		t.Errorf("stalled seconds right after the agent's call = %v, want about 0", got)
	}

	// The agent goes silent for 2 minutes: past the 30 s agent silence.
	clk.advance(2 * time.Minute)
	fams = scrape(t, maddr)
	want(t, fams, check{"provisiond_workflows_stalled", []string{"state", "running"}, 1})
	if got := value(fams, "provisiond_workflow_stalled_seconds", "state", "running"); got < 120 || got > 130 {
		t.Errorf("stalled seconds after 2m of silence = %v, want about 120", got)
	}

	// A heartbeat is progress again.
	if _, err := d.Engine().Heartbeat(ctx, token, "n1"); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, maddr)
	want(t, fams, check{"provisiond_workflows_stalled", []string{"state", "running"}, 0})
	if got := value(fams, "provisiond_workflow_stalled_seconds", "state", "running"); got > 5 {
		t.Errorf("stalled seconds after a heartbeat = %v, want about 0", got)
	}

	act := *as.Action
	if err := d.Engine().ReportAction(ctx, token, workflow.Report{Index: as.Index, Task: act.Task, Action: act.Name, Attempt: act.Attempt, State: store.StateSucceeded}); err != nil {
		t.Fatal(err)
	}
	var states string
	for deadline := time.Now().Add(10 * time.Second); ; {
		fams = scrape(t, maddr)
		if value(fams, "provisiond_machines", "state", "succeeded") == 1 {
			break
		}
		if time.Now().After(deadline) {
			for _, s := range []string{"pending", "booting", "running", "succeeded", "failed"} {
				states += fmt.Sprintf(" %s=%v", s, value(fams, "provisiond_machines", "state", s))
			}
			t.Fatalf("machine not succeeded within 10s:%s", states)
		}
		time.Sleep(20 * time.Millisecond)
	}
	want(t, fams, machines("running", 0), check{"provisiond_hardware", nil, 1},
		check{"provisiond_workflow_stalled_seconds", []string{"state", "running"}, 0},
		check{"provisiond_workflows_stalled", []string{"state", "running"}, 0},
		handled("ProvisionMachine", "OK", 1), handled("CreateTemplate", "OK", 1))
	if !strings.Contains(fmt.Sprint(power.calls), "n1 boot disk") {
		t.Errorf("power calls %v: the install did not finish with a disk boot", power.calls)
	}
}
