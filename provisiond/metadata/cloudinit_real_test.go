package metadata

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestRealCloudInit runs Debian's cloud-init (the python3 package that
// Debian 12 images ship, 22.4) against the service, to pin down what each
// token setting means for the datasources the README documents. It answers
// from 127.0.0.1 because cloud-init's HTTP client cannot choose its source
// address; the machine is given that address.
//
// What it shows (and the README states): with tokens required (the
// default), cloud-init on bare metal still finds the instance, its host
// name and keys, but reads no user-data from Ec2 (it sends no token off
// AWS) and fails a NoCloud network seed; with tokens optional, both read
// user-data; and cloud-init's IMDSv2 code path (as on AWS) works with
// tokens required.
func TestRealCloudInit(t *testing.T) {
	// Debian's interpreter first: cloud-init is installed for it, not for
	// a python3 that a version manager may put first on PATH.
	py := "/usr/bin/python3"
	if _, err := exec.LookPath(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Skip("python3 not installed")
		}
	}
	if err := exec.Command(py, "-c", "import cloudinit.sources.DataSourceEc2").Run(); err != nil {
		t.Skip("cloud-init not installed (apt-get install --no-install-recommends cloud-init)")
	}
	for name, tc := range map[string]struct {
		optional bool
		mode     string
		wantOK   bool
		wantUD   string
	}{
		"ec2 bare metal, token optional": {true, "ec2-baremetal", true, userDataA},
		"ec2 bare metal, token required": {false, "ec2-baremetal", true, ""},
		"ec2 imdsv2, token required":     {false, "ec2-imdsv2", true, userDataA},
		"nocloud seed, token optional":   {true, "nocloud", true, userDataA},
		"nocloud seed, token required":   {false, "nocloud", false, ""},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Options{TokenOptional: tc.optional})
			err := f.st.Update(context.Background(), func(tx *store.Tx) error {
				h, err := tx.Hardware("hw-a")
				if err != nil {
					return err
				}
				h.Interfaces[0].IP = "127.0.0.1/8"
				return tx.UpdateHardware(h)
			})
			if err != nil {
				t.Fatal(err)
			}
			f.now = time.Now() // real clock: tokens cross a real network
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: f.mux, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(lis) }() // ends with Close below; its error is ErrServerClosed
			defer func() { _ = srv.Close() }()

			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, py, "testdata/cloudinit_real.py", "http://"+lis.Addr().String(), tc.mode)
			out, err := cmd.Output()
			if err != nil {
				stderr := ""
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("cloud-init: %v\n%s", err, stderr)
			}
			var got struct {
				Version    string  `json:"version"`
				OK         bool    `json:"ok"`
				UserData   *string `json:"user_data"`
				InstanceID *string `json:"instance_id"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("cloud-init output %q: %v", out, err)
			}
			ud := ""
			if got.UserData != nil {
				ud = *got.UserData
			}
			if got.OK != tc.wantOK || ud != tc.wantUD {
				t.Errorf("cloud-init %s: ok %v user-data %q, want ok %v user-data %q (output %s)", got.Version, got.OK, ud, tc.wantOK, tc.wantUD, out)
			}
			if tc.wantOK && (got.InstanceID == nil || *got.InstanceID != "hw-a") {
				t.Errorf("cloud-init %s: instance-id %v, want hw-a", got.Version, got.InstanceID)
			}
			t.Logf("cloud-init %s %s: %s", got.Version, tc.mode, out)
		})
	}
}

// TestRealCloudInitPhoneHome runs Debian's cloud-init phone_home module
// (22.4) with the configuration the README gives, URL with $INSTANCE_ID
// included, against the service: its POST from the machine's address is
// recorded once with the host name it sent; with an instance id that is
// not the machine's, cloud-init's POST is refused and nothing recorded.
func TestRealCloudInitPhoneHome(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := exec.LookPath(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Skip("python3 not installed")
		}
	}
	if err := exec.Command(py, "-c", "import cloudinit.config.cc_phone_home").Run(); err != nil {
		t.Skip("cloud-init not installed (apt-get install --no-install-recommends cloud-init)")
	}
	for name, tc := range map[string]struct {
		instanceID string
		wantOK     bool
	}{
		"own instance id":   {"hw-a", true},
		"other instance id": {"i-0123456789", false},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Options{TokenOptional: true})
			err := f.st.Update(context.Background(), func(tx *store.Tx) error {
				h, err := tx.Hardware("hw-a")
				if err != nil {
					return err
				}
				h.Interfaces[0].IP = "127.0.0.1/8" // cloud-init's client cannot choose its source address
				if err := tx.UpdateHardware(h); err != nil {
					return err
				}
				return tx.PutWorkflow(store.Workflow{ID: "wf-1", HardwareID: "hw-a", TemplateID: "tpl", Kind: store.KindProvision, State: store.StateSucceeded})
			})
			if err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: f.mux, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(lis) }() // ends with Close below; its error is ErrServerClosed
			defer func() { _ = srv.Close() }()

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, py, "testdata/cloudinit_phone_home.py", "http://"+lis.Addr().String(), tc.instanceID, "web-1").Output()
			if err != nil {
				stderr := ""
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("cloud-init: %v\n%s", err, stderr)
			}
			var got struct {
				OK bool `json:"ok"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("cloud-init output %q: %v", out, err)
			}
			if got.OK != tc.wantOK {
				t.Errorf("cloud-init's POST succeeded: %t, want %t", got.OK, tc.wantOK)
			}
			var m store.Machine
			var evs []store.Event
			err = f.st.View(context.Background(), func(tx *store.Tx) error {
				if m, err = tx.Machine("hw-a"); err != nil {
					return err
				}
				evs, err = tx.Events("wf-1", 0)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if recorded := !m.OSReadyAt.IsZero(); recorded != tc.wantOK || len(evs) != map[bool]int{true: 1, false: 0}[tc.wantOK] {
				t.Fatalf("OSReadyAt %v, %d events; want recorded %t", m.OSReadyAt, len(evs), tc.wantOK)
			}
			if tc.wantOK && (evs[0].Type != store.EventOSReady || !strings.Contains(evs[0].Message, "hostname web-1, fqdn web-1.example")) {
				t.Errorf("event %+v: want os_ready with the host names cloud-init posted", evs[0])
			}
		})
	}
}
