package metadata

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// phoneFixture is the metadata fixture with hw-a on 127.0.0.2 and hw-b on
// 127.0.0.3 and hw-c (no machine) on 127.0.0.5 (real loopback source
// addresses), hw-a's machine on workflow
// wf-1 (a provision in state, with one action in actionState) and hw-b's
// machine on a deprovision, wf-b.
func phoneFixture(t *testing.T, state, actionState store.State) (*fixture, *httptest.Server) {
	t.Helper()
	f := newFixture(t, Options{TokenOptional: true})
	err := f.st.Update(context.Background(), func(tx *store.Tx) error {
		for id, ip := range map[string]string{"hw-a": "127.0.0.2/8", "hw-b": "127.0.0.3/8", "hw-c": "127.0.0.5/8"} {
			h, err := tx.Hardware(id)
			if err != nil {
				return err
			}
			h.Interfaces[0].IP = ip
			if err := tx.UpdateHardware(h); err != nil {
				return err
			}
		}
		if err := tx.PutWorkflow(store.Workflow{
			ID: "wf-1", HardwareID: "hw-a", TemplateID: "tpl", Kind: store.KindProvision, State: state,
			Actions: []store.Action{{Task: "t", Name: "install", Image: "exec", State: actionState}},
		}); err != nil {
			return err
		}
		if err := tx.PutWorkflow(store.Workflow{ID: "wf-b", HardwareID: "hw-b", Kind: store.KindDeprovision, State: store.StateSucceeded}); err != nil {
			return err
		}
		m, err := tx.Machine("hw-b")
		if err != nil {
			return err
		}
		m.WorkflowID = "wf-b"
		return tx.PutMachine(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values, h map[string]string) (int, string) {
	t.Helper()
	r, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range h {
		r.Header.Set(k, v)
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// osReady returns hw's OSReadyAt and the os_ready events of its workflow.
func osReady(t *testing.T, f *fixture, hw string) (time.Time, []store.Event) {
	t.Helper()
	var at time.Time
	var evs []store.Event
	err := f.st.View(context.Background(), func(tx *store.Tx) error {
		m, err := tx.Machine(hw)
		if err != nil {
			return err
		}
		at = m.OSReadyAt
		all, err := tx.Events("", 0)
		for _, e := range all {
			if e.Type == store.EventOSReady {
				evs = append(evs, e)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return at, evs
}

const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@web-1"

// TestPhoneHome: the installed OS's POST, as cloud-init's phone_home
// sends it, is recorded once (machine field and one event on the
// workflow, with the host name and key fingerprints, never the keys),
// and answered 200 on repeats without a second record.
func TestPhoneHome(t *testing.T) {
	f, srv := phoneFixture(t, store.StateSucceeded, store.StateSucceeded)
	c := clientFrom(t, "127.0.0.2")
	form := url.Values{"instance_id": {"hw-a"}, "hostname": {"web-1"}, "fqdn": {"web-1.example"}, "pub_key_ed25519": {hostKey}, "pub_key_dsa": {"N/A"}}
	if code, body := postForm(t, c, srv.URL+"/phone-home", form, nil); code != 200 {
		t.Fatalf("phone-home: %d %q, want 200", code, body)
	}
	at, evs := osReady(t, f, "hw-a")
	if !at.Equal(f.now) {
		t.Errorf("OSReadyAt %v, want %v", at, f.now)
	}
	if len(evs) != 1 {
		t.Fatalf("%d os_ready events, want 1: %+v", len(evs), evs)
	}
	e := evs[0]
	if e.WorkflowID != "wf-1" || e.HardwareID != "hw-a" || !e.Time.Equal(f.now) {
		t.Errorf("event %+v: want workflow wf-1, hardware hw-a, time %v", e, f.now)
	}
	for _, want := range []string{"127.0.0.2", "hostname web-1", "fqdn web-1.example", "ed25519 SHA256:"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("event message %q lacks %q", e.Message, want)
		}
	}
	if strings.Contains(e.Message, "AAAAC3Nza") || strings.Contains(e.Message, "dsa") {
		t.Errorf("event message %q holds a key or a key that was not posted", e.Message)
	}

	// Repeats (cloud-init on every boot with phone_home in per-boot
	// modules, or a retry) are 200 and change nothing.
	f.now = f.now.Add(time.Hour)
	for _, p := range []string{"/phone-home", "/phone-home/hw-a"} {
		if code, body := postForm(t, c, srv.URL+p, form, nil); code != 200 {
			t.Errorf("repeat %s: %d %q, want 200", p, code, body)
		}
	}
	at2, evs2 := osReady(t, f, "hw-a")
	if !at2.Equal(at) || len(evs2) != 1 {
		t.Errorf("after repeats: OSReadyAt %v (was %v), %d events; want unchanged, 1", at2, at, len(evs2))
	}
	if got := counter(t, f, "provisiond_metadata_phone_home_total", "result", phoneReady); got != 1 {
		t.Errorf("phone_home_total{result=ready} = %v, want 1", got)
	}
	if got := counter(t, f, "provisiond_metadata_phone_home_total", "result", phoneRepeat); got != 2 {
		t.Errorf("phone_home_total{result=repeat} = %v, want 2", got)
	}
	if got := counter(t, f, "provisiond_metadata_requests_total", "class", "phone-home", "code", "200"); got != 3 {
		t.Errorf("requests_total{class=phone-home,code=200} = %v, want 3", got)
	}
}

// TestPhoneHomeRefused: nothing is recorded for a caller that is no
// machine, another machine's instance id, a machine without a finished
// install, a forged X-Forwarded-For, or an oversized body.
func TestPhoneHomeRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		state, action store.State // of hw-a's workflow
		src, path     string
		form          url.Values
		header        map[string]string
		want          int
	}{
		"unknown address":            {store.StateSucceeded, store.StateSucceeded, "127.0.0.4", "/phone-home", url.Values{"instance_id": {"hw-a"}}, nil, 404},
		"forged xff naming hw-a":     {store.StateSucceeded, store.StateSucceeded, "127.0.0.4", "/phone-home", nil, map[string]string{"X-Forwarded-For": "127.0.0.2"}, 404},
		"other instance id":          {store.StateSucceeded, store.StateSucceeded, "127.0.0.2", "/phone-home", url.Values{"instance_id": {"hw-b"}}, nil, 403},
		"other instance id in path":  {store.StateSucceeded, store.StateSucceeded, "127.0.0.2", "/phone-home/hw-b", nil, nil, 403},
		"still running":              {store.StateRunning, store.StateRunning, "127.0.0.2", "/phone-home", nil, nil, 409},
		"install failed":             {store.StateFailed, store.StateFailed, "127.0.0.2", "/phone-home", nil, nil, 409},
		"machine on a deprovision":   {store.StateSucceeded, store.StateSucceeded, "127.0.0.3", "/phone-home", nil, nil, 409},
		"hardware without a machine": {store.StateSucceeded, store.StateSucceeded, "127.0.0.5", "/phone-home", nil, nil, 409},
		"body too big":               {store.StateSucceeded, store.StateSucceeded, "127.0.0.2", "/phone-home", url.Values{"hostname": {strings.Repeat("x", MaxPhoneHomeBody)}}, nil, 413},
		"forged token":               {store.StateSucceeded, store.StateSucceeded, "127.0.0.2", "/phone-home", nil, map[string]string{TokenHeader: "forged.token"}, 401},
	} {
		t.Run(name, func(t *testing.T) {
			f, srv := phoneFixture(t, tc.state, tc.action)
			code, body := postForm(t, clientFrom(t, tc.src), srv.URL+tc.path, tc.form, tc.header)
			if code != tc.want {
				t.Errorf("%d %q, want %d", code, body, tc.want)
			}
			for _, hw := range []string{"hw-a", "hw-b"} {
				if at, evs := osReady(t, f, hw); !at.IsZero() || len(evs) != 0 {
					t.Errorf("%s: OSReadyAt %v, %d os_ready events; want nothing recorded", hw, at, len(evs))
				}
			}
		})
	}
}

// TestPhoneHomeWhileFinishing: an OS started by kexec can phone home
// before the engine has marked the workflow succeeded; once every action
// succeeded, that counts.
func TestPhoneHomeWhileFinishing(t *testing.T) {
	f, srv := phoneFixture(t, store.StateRunning, store.StateSucceeded)
	if code, body := postForm(t, clientFrom(t, "127.0.0.2"), srv.URL+"/phone-home/hw-a", url.Values{"hostname": {"web-1"}}, nil); code != 200 {
		t.Fatalf("%d %q, want 200", code, body)
	}
	if at, evs := osReady(t, f, "hw-a"); at.IsZero() || len(evs) != 1 {
		t.Errorf("OSReadyAt %v, %d events; want recorded once", at, len(evs))
	}
}

// TestPhoneHomeThroughTrustedProxy: behind a trusted relay the caller is
// the client it names, exactly as for the other metadata paths.
func TestPhoneHomeThroughTrustedProxy(t *testing.T) {
	f, _ := phoneFixture(t, store.StateSucceeded, store.StateSucceeded)
	r := httptest.NewRequest(http.MethodPost, "http://metadata/phone-home", strings.NewReader("hostname=web-1"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Forwarded-For", "127.0.0.2")
	r.RemoteAddr = "192.0.2.7:40000"
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("%d %q, want 200", w.Code, w.Body.String())
	}
	if at, _ := osReady(t, f, "hw-a"); at.IsZero() {
		t.Error("not recorded for hw-a")
	}
}

func TestFingerprint(t *testing.T) {
	// ssh-keygen -lf of hostKey.
	if got, want := fingerprint(hostKey), "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"; got != want {
		t.Errorf("fingerprint = %q, want %q", got, want)
	}
	for _, bad := range []string{"", "N/A", "ssh-rsa", "ssh-rsa !!!"} {
		if got := fingerprint(bad); got != "" {
			t.Errorf("fingerprint(%q) = %q, want empty", bad, got)
		}
	}
}

// counter is the value of the counter series name{labels...} in f's registry.
func counter(t *testing.T, f *fixture, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
