package ctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/simbmc"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// testDaemon is provisiond in the test process, built by the daemon
// package as the binary builds it, over TLS on 127.0.0.1, with the
// simulated BMC and agents of simbmc.BMC.
type testDaemon struct {
	Endpoint, Token string
	PKI             *testpki.PKI
	BMC             *simbmc.BMC
	Client          *client.Client
	tokenFile       string
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	pki := testpki.New(t)
	pair, err := tls.X509KeyPair([]byte(pki.ServerCert), []byte(pki.ServerKey))
	if err != nil {
		t.Fatal(err)
	}
	bmc := simbmc.New(t)
	cfg := daemon.Config{
		DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", PublicIP: "127.0.0.1",
		Token: "admin-token-" + store.NewID(), NoSync: true,
		TLS:     &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}},
		AgentCA: []byte(pki.CACert),
		Workflow: workflow.Options{
			BootTimeout: time.Minute, HeartbeatTimeout: time.Minute, ActionGrace: time.Second,
			PowerAttempts: 2, PowerRetryDelay: 10 * time.Millisecond,
		},
		ShutdownWait: 5 * time.Second,
	}
	dd, err := daemon.New(cfg, daemon.WithLogger(discardLogger()), daemon.WithPower(bmc))
	if err != nil {
		t.Fatalf("provisiond: %v", err)
	}
	bmc.Engine = dd.Engine()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- dd.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("provisiond: %v", err)
		}
	})
	d := &testDaemon{Endpoint: dd.GRPCAddr(), Token: cfg.Token, PKI: pki, BMC: bmc, tokenFile: filepath.Join(dir, "token")}
	if err := os.WriteFile(d.tokenFile, []byte(cfg.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(context.Background(), client.Config{Endpoint: d.Endpoint, Token: d.Token, CACert: pki.CACert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() }) // test client: nothing to flush
	d.Client = c
	return d
}

// env is the provider's environment for this daemon.
func (d *testDaemon) env() map[string]string {
	return map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint, "BAREMETAL_TOKEN": d.Token, "BAREMETAL_CA_CERT": d.PKI.CACert}
}

// ctl runs Run with the daemon's environment and returns stdout.
func (d *testDaemon) ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runCtl(t, d.env(), args...)
}

func runCtl(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errw bytes.Buffer
	err := Run(ctx, args, func(k string) string { return env[k] }, &out, &errw)
	return out.String(), err
}

func template(name string, actions ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: \"0.1\"\nname: %s\nglobal_timeout: 600\ntasks:\n  - name: install\n    worker: \"{{ .Hardware.MAC }}\"\n    actions:\n", name)
	for _, a := range actions {
		fmt.Fprintf(&b, "      - name: %s\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n", a)
	}
	return b.String()
}

const (
	bmcPassword = "bmc-secret-canary"
	userData    = "#cloud-config\npassword: user-data-canary\n"
)

// lab is two servers and a template; server-1 carries a machine whose
// workflow has run to its end.
func lab(t *testing.T) (*testDaemon, string) {
	t.Helper()
	d := startDaemon(t)
	ctx := context.Background()
	c := d.Client
	for i, mac := range []string{"02:00:00:00:00:01", "02:00:00:00:00:02"} {
		_, err := c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
			Id: fmt.Sprintf("server-%d", i+1), Hostname: fmt.Sprintf("rack1-u%d", i+1), Arch: "x86_64", Uefi: true,
			Interfaces: []*pb.Interface{{Mac: mac, Ip: fmt.Sprintf("10.0.0.%d/24", i+11), Gateway: "10.0.0.1", NameServers: []string{"10.0.0.1"}}},
			Disks:      []string{"/dev/sda"},
			Bmc:        &pb.BMC{Driver: "ipmi", Address: fmt.Sprintf("10.1.0.%d", i+11), Username: "admin", Password: bmcPassword},
			Labels:     map[string]string{"rack": "r1", "role": []string{"web", "db"}[i]},
		}})
		if err != nil {
			t.Fatalf("create hardware: %v", err)
		}
	}
	tpl, err := c.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Id: "ubuntu", Name: "ubuntu", Content: template("ubuntu", "stream-image", "write-netplan")}})
	if err != nil {
		t.Fatalf("create template: %v", err)
	}
	m, err := c.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: "server-1", TemplateId: tpl.GetId(), UserData: userData, Parameters: map[string]string{"image_url": "http://images/ubuntu.raw"}})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if out, err := d.ctl(t, "events", "server-1", "--follow"); err != nil {
		t.Fatalf("events --follow: %v\n%s", err, out)
	}
	return d, m.GetWorkflow().GetId()
}

var (
	timeRE     = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)
	durationRE = regexp.MustCompile(`\b\d+s\b`)
)

// normalise replaces times, durations and the workflow ids, each by a
// placeholder of its width so that the columns stay aligned.
func normalise(s string, ids ...string) string {
	s = timeRE.ReplaceAllString(s, "YYYY-MM-DD hh:mm:ss")
	s = durationRE.ReplaceAllStringFunc(s, func(d string) string { return strings.Repeat("N", len(d)-1) + "s" })
	for i, id := range ids {
		s = strings.ReplaceAll(s, id, (fmt.Sprintf("WORKFLOW-%d", i+1) + strings.Repeat("-", len(id)))[:len(id)])
	}
	return s
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func TestTables(t *testing.T) {
	d, wfID := lab(t)
	tests := map[string][]string{
		"hardware":          {"hardware"},
		"hardware_one":      {"hardware", "server-1"},
		"hardware_label":    {"hardware", "--label", "role=db", "-l", "rack=r1"},
		"hardware_nolabel":  {"hardware", "--label", "role=none"},
		"machines":          {"machines"},
		"machines_one":      {"machines", "server-1"},
		"templates":         {"templates"},
		"templates_one":     {"templates", "ubuntu"},
		"workflows":         {"workflows", "server-1"},
		"events":            {"events", "server-1"},
		"events_workflowid": {"events", wfID},
		"power":             {"power", "server-1"},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := d.ctl(t, args...)
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			for _, secret := range []string{bmcPassword, "user-data-canary"} {
				if strings.Contains(out, secret) {
					t.Errorf("%v printed a secret:\n%s", args, out)
				}
			}
			golden(t, name, normalise(out, wfID))
		})
	}
}

func TestShowUserData(t *testing.T) {
	d, _ := lab(t)
	out, err := d.ctl(t, "machines", "server-1", "--show-user-data", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if m["userData"] != userData {
		t.Errorf("userData = %q, want %q", m["userData"], userData)
	}
}

func TestJSON(t *testing.T) {
	d, wfID := lab(t)
	var hw struct {
		Hardware []struct {
			ID  string `json:"id"`
			BMC struct {
				Password    string `json:"password"`
				PasswordSet bool   `json:"passwordSet"`
			} `json:"bmc"`
			Power string `json:"power"`
		} `json:"hardware"`
	}
	parseJSON(t, d, &hw, "hardware", "-o", "json")
	if len(hw.Hardware) != 2 || hw.Hardware[0].ID != "server-1" || !hw.Hardware[0].BMC.PasswordSet || hw.Hardware[0].BMC.Password != "" {
		t.Errorf("hardware -o json: %+v", hw)
	}

	var ms struct {
		Machines []struct {
			HardwareID string `json:"hardwareId"`
			UserData   string `json:"userData"`
			Workflow   struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"workflow"`
		} `json:"machines"`
	}
	parseJSON(t, d, &ms, "machines", "--output=json")
	if len(ms.Machines) != 1 || ms.Machines[0].Workflow.ID != wfID || ms.Machines[0].Workflow.State != "STATE_SUCCEEDED" || strings.Contains(ms.Machines[0].UserData, "canary") {
		t.Errorf("machines -o json: %+v", ms)
	}

	var wfs struct {
		Workflows []struct {
			ID string `json:"id"`
		} `json:"workflows"`
	}
	parseJSON(t, d, &wfs, "-o", "json", "workflows", "server-1")
	if len(wfs.Workflows) != 1 || wfs.Workflows[0].ID != wfID {
		t.Errorf("workflows -o json: %+v", wfs)
	}

	out, err := d.ctl(t, "events", "server-1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last map[string]any
	for _, l := range lines {
		last = nil
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("events -o json: line %q: %v", l, err)
		}
		if last["workflowId"] != wfID {
			t.Errorf("event of workflow %v, want %s", last["workflowId"], wfID)
		}
	}
	if len(lines) < 3 || last["state"] != "STATE_SUCCEEDED" {
		t.Errorf("events -o json: %d lines, last %v", len(lines), last)
	}
}

func parseJSON(t *testing.T, d *testDaemon, v any, args ...string) {
	t.Helper()
	out, err := d.ctl(t, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// TestFollow follows workflows from before their agent starts to their
// end: one that succeeds (exit nil) and one whose action fails (an
// ExitError that names it).
func TestFollow(t *testing.T) {
	d, _ := lab(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		fail    string
		wantErr string
	}{
		"succeeds": {},
		"fails":    {fail: "write-netplan", wantErr: "failed"},
	} {
		t.Run(name, func(t *testing.T) {
			gate := make(chan struct{})
			d.BMC.Hold("server-2", gate)
			d.BMC.Fail("server-2", tc.fail)
			m, err := d.Client.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: "server-2", TemplateId: "ubuntu"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { deprovision(t, d, "server-2") })
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				env := d.env()
				var errw bytes.Buffer
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				done <- Run(cctx, []string{"events", "server-2", "--follow"}, func(k string) string { return env[k] }, pw, &errw)
				_ = pw.Close() // ends the reader below
			}()
			lines := make(chan string, 100)
			go func() {
				defer close(lines)
				buf := make([]byte, 64<<10)
				var acc string
				for {
					n, err := pr.Read(buf)
					acc += string(buf[:n])
					for strings.Contains(acc, "\n") {
						i := strings.Index(acc, "\n")
						lines <- acc[:i]
						acc = acc[i+1:]
					}
					if err != nil {
						return
					}
				}
			}()
			// The header, then events up to booting, live, before the agent runs.
			waitLine(t, lines, "TIME")
			waitLine(t, lines, "booting")
			select {
			case err := <-done:
				t.Fatalf("follow returned before the workflow ended: %v", err)
			default:
			}
			close(gate)
			var all []string
			for l := range lines {
				all = append(all, l)
			}
			err = <-done
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("follow: %v", err)
				}
			} else {
				var ee *ExitError
				if !errors.As(err, &ee) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), m.GetWorkflow().GetId()) {
					t.Fatalf("follow: %v, want an ExitError saying %q", err, tc.wantErr)
				}
			}
			joined := strings.Join(all, "\n")
			if !strings.Contains(joined, "install/write-netplan") {
				t.Errorf("no line for the last action:\n%s", joined)
			}
		})
	}
}

func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before a line with %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no line with %q", want)
		}
	}
}

// deprovision frees hardware for the next subtest.
func deprovision(t *testing.T, d *testDaemon, hwID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.BMC.Hold(hwID, nil)
	d.BMC.Fail(hwID, "")
	if _, err := d.Client.DeprovisionMachine(ctx, &pb.DeprovisionMachineRequest{HardwareId: hwID, Wipe: "none"}); err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	for {
		_, err := d.Client.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: hwID})
		if err != nil {
			return // gone (or the context ended: the next test says so)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestErrors checks that each kind of failure says what to check.
func TestErrors(t *testing.T) {
	d := startDaemon(t)
	badCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(badCA, []byte(d.PKI.OtherCACert), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"bad token": {
			env:  map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint, "BAREMETAL_TOKEN": "wrong", "BAREMETAL_CA_CERT": d.PKI.CACert},
			args: []string{"machines"},
			want: []string{"refused the credentials", "--token-file or BAREMETAL_TOKEN"},
		},
		"untrusted CA": {
			env:  map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint, "BAREMETAL_TOKEN": d.Token},
			args: []string{"--ca-cert", badCA, "hardware"},
			want: []string{"TLS problem", "--ca-cert"},
		},
		"plain text against TLS": {
			env:  map[string]string{"BAREMETAL_TOKEN": d.Token},
			args: []string{"--endpoint", "http://" + d.Endpoint, "--timeout", "2s", "hardware"},
			want: []string{"cannot reach provisiond", "TLS"},
		},
		"unreachable": {
			env:  map[string]string{"BAREMETAL_ENDPOINT": "127.0.0.1:1", "BAREMETAL_TOKEN": d.Token},
			args: []string{"hardware"},
			want: []string{"nothing listens there", "--grpc-listen"},
		},
		"no endpoint": {
			env:  map[string]string{},
			args: []string{"hardware"},
			want: []string{"BAREMETAL_ENDPOINT"},
		},
		"no token": {
			env:  map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint},
			args: []string{"hardware"},
			want: []string{"--token-file", "BAREMETAL_TOKEN"},
		},
		"CA path in the environment": {
			env:  map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint, "BAREMETAL_TOKEN": d.Token, "BAREMETAL_CA_CERT": badCA},
			args: []string{"hardware"},
			want: []string{"BAREMETAL_CA_CERT holds no PEM", "--ca-cert FILE"},
		},
		"bad BAREMETAL_INSECURE": {
			env:  map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint, "BAREMETAL_TOKEN": d.Token, "BAREMETAL_INSECURE": "maybe"},
			args: []string{"hardware"},
			want: []string{"BAREMETAL_INSECURE must be true or false"},
		},
		"unknown hardware": {
			env:  d.env(),
			args: []string{"hardware", "nope"},
			want: []string{"nope", "provisiond ctl hardware"},
		},
		"unknown command": {
			env:  d.env(),
			args: []string{"lsblk"},
			want: []string{`unknown command "lsblk"`},
		},
		"bad power action": {
			env:  d.env(),
			args: []string{"power", "server-1", "explode"},
			want: []string{"want on, off"},
		},
		"bad output": {
			env:  d.env(),
			args: []string{"-o", "yaml", "hardware"},
			want: []string{"want table or json"},
		},
		"label without a value": {
			env:  d.env(),
			args: []string{"hardware", "--label", "rack"},
			want: []string{`label "rack": want KEY=VALUE`},
		},
		"label twice": {
			env:  d.env(),
			args: []string{"hardware", "-l", "rack=r1", "-l", "rack=r2"},
			want: []string{"label rack given twice"},
		},
		"label with an id": {
			env:  d.env(),
			args: []string{"hardware", "server-1", "-l", "rack=r1"},
			want: []string{"give no hardware id"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := runCtl(t, tc.env, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), d.Token) {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}

// TestSettings checks the flags: --token-file and the PEM files override
// the environment, and --insecure reaches a TLS daemon without its CA.
func TestSettings(t *testing.T) {
	d := startDaemon(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(d.PKI.CACert), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
	}{
		"environment": {env: d.env()},
		"flags":       {env: map[string]string{"BAREMETAL_TOKEN": "wrong"}, args: []string{"--endpoint", "https://" + d.Endpoint, "--token-file", d.tokenFile, "--ca-cert", caFile}},
		"insecure":    {env: map[string]string{"BAREMETAL_ENDPOINT": d.Endpoint, "BAREMETAL_TOKEN": d.Token, "BAREMETAL_INSECURE": "true"}},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runCtl(t, tc.env, append(tc.args, "templates")...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, "ID") {
				t.Errorf("output:\n%s", out)
			}
		})
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestEventsAfterHardwareDeleted: after a destroy deleted the hardware,
// `events HARDWARE_ID` prints its latest workflow's events (provisiond
// keeps them for --retention), as before the delete.
func TestEventsAfterHardwareDeleted(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	c := d.Client
	if _, err := c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Id: "gone-1", Hostname: "gone-1", Disks: []string{"/dev/sda"},
		Interfaces: []*pb.Interface{{Mac: "02:00:00:00:00:09", Ip: "10.0.0.19/24"}},
		Bmc:        &pb.BMC{Driver: "ipmi", Address: "10.1.0.19", Username: "admin", Password: bmcPassword},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Id: "ubuntu", Name: "ubuntu", Content: template("ubuntu", "stream-image")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: "gone-1", TemplateId: "ubuntu", Parameters: map[string]string{"image_url": "http://images/ubuntu.raw"}}); err != nil {
		t.Fatal(err)
	}
	if out, err := d.ctl(t, "events", "gone-1", "--follow"); err != nil {
		t.Fatalf("events --follow: %v\n%s", err, out)
	}
	deprovision(t, d, "gone-1")
	if _, err := c.DeleteHardware(ctx, &pb.DeleteHardwareRequest{Id: "gone-1"}); err != nil {
		t.Fatal(err)
	}
	out, err := d.ctl(t, "events", "gone-1")
	if err != nil || !strings.Contains(out, "deprovision") {
		t.Fatalf("events of deleted hardware: %v\n%s", err, out)
	}
}
