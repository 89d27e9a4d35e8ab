package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() }) // test cleanup
	return s, path
}

func hw(id, mac, ip string) Hardware {
	return Hardware{ID: id, Hostname: id, Interfaces: []Interface{{MAC: mac, IP: ip}}, Arch: "x86_64", Disks: []string{"/dev/sda"}}
}

func TestHardwareIndexes(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.CreateHardware(hw("a", "AA:BB:CC:00:00:01", "10.0.0.1/24")) }))
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.CreateHardware(hw("b", "aa:bb:cc:00:00:02", "10.0.0.2/24")) }))

	tests := map[string]struct {
		get     func() (Hardware, error)
		wantID  string
		wantErr error
	}{
		"by id":              {func() (Hardware, error) { return s.GetHardware(ctx, "a") }, "a", nil},
		"by mac upper":       {func() (Hardware, error) { return s.GetHardwareByMAC(ctx, "AA:BB:CC:00:00:02") }, "b", nil},
		"by mac dashes":      {func() (Hardware, error) { return s.GetHardwareByMAC(ctx, "aa-bb-cc-00-00-01") }, "a", nil},
		"by ip":              {func() (Hardware, error) { return s.GetHardwareByIP(ctx, "10.0.0.2") }, "b", nil},
		"unknown id":         {func() (Hardware, error) { return s.GetHardware(ctx, "zz") }, "", ErrNotFound},
		"unknown mac":        {func() (Hardware, error) { return s.GetHardwareByMAC(ctx, "aa:bb:cc:00:00:09") }, "", ErrNotFound},
		"malformed mac":      {func() (Hardware, error) { return s.GetHardwareByMAC(ctx, "nope") }, "", ErrNotFound},
		"unknown ip":         {func() (Hardware, error) { return s.GetHardwareByIP(ctx, "10.0.0.9") }, "", ErrNotFound},
		"ip with prefix len": {func() (Hardware, error) { return s.GetHardwareByIP(ctx, "10.0.0.1/24") }, "a", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h, err := tc.get()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if h.ID != tc.wantID {
				t.Fatalf("id = %q, want %q", h.ID, tc.wantID)
			}
		})
	}
}

func TestHardwareConflictsAndUpdate(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.CreateHardware(hw("a", "aa:bb:cc:00:00:01", "10.0.0.1/24")) }))

	// Ordered: the last case changes the record the others collide with.
	tests := []struct {
		name string
		op   func(tx *Tx) error
		want error
	}{
		{"same id", func(tx *Tx) error { return tx.CreateHardware(hw("a", "aa:bb:cc:00:00:05", "")) }, ErrConflict},
		{"same mac", func(tx *Tx) error { return tx.CreateHardware(hw("b", "AA:BB:CC:00:00:01", "")) }, ErrConflict},
		{"same ip", func(tx *Tx) error { return tx.CreateHardware(hw("b", "aa:bb:cc:00:00:02", "10.0.0.1/16")) }, ErrConflict},
		{"update unknown", func(tx *Tx) error { return tx.UpdateHardware(hw("zz", "aa:bb:cc:00:00:03", "")) }, ErrNotFound},
		{"delete unknown", func(tx *Tx) error { return tx.DeleteHardware("zz") }, ErrNotFound},
		{"update keeps own mac", func(tx *Tx) error { return tx.UpdateHardware(hw("a", "aa:bb:cc:00:00:01", "10.0.0.7/24")) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(ctx, tc.op)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// After the update the old IP is free and the new one indexed.
	if _, err := s.GetHardwareByIP(ctx, "10.0.0.1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old IP still indexed: %v", err)
	}
	if h, err := s.GetHardwareByIP(ctx, "10.0.0.7"); err != nil || h.ID != "a" {
		t.Fatalf("new IP: %v %v", h.ID, err)
	}
	// A failed transaction leaves nothing behind.
	if _, err := s.GetHardware(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conflicting create left a record: %v", err)
	}
}

func TestMachineHoldsHardwareAndTemplate(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	must(t, s.Update(ctx, func(tx *Tx) error {
		if err := tx.CreateHardware(hw("a", "aa:bb:cc:00:00:01", "")); err != nil {
			return err
		}
		if err := tx.CreateTemplate(Template{ID: "t1", Name: "ubuntu", Content: "x"}); err != nil {
			return err
		}
		return tx.PutMachine(Machine{HardwareID: "a", TemplateID: "t1"})
	}))
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteHardware("a") }); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete held hardware: %v, want ErrInUse", err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteTemplate("t1") }); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete used template: %v, want ErrInUse", err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.CreateTemplate(Template{ID: "t2", Name: "ubuntu"}) }); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate template name: %v, want ErrConflict", err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutMachine(Machine{HardwareID: "nope", TemplateID: "t1"}) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("machine on unknown hardware: %v", err)
	}
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.DeleteMachine("a") }))
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.DeleteTemplate("t1") }))
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.DeleteHardware("a") }))
	if _, err := s.GetHardwareByMAC(ctx, "aa:bb:cc:00:00:01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MAC index outlived its hardware: %v", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	must(t, err)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := hw("a", "aa:bb:cc:00:00:01", "10.0.0.1/24")
	h.BMC = BMC{Driver: "ipmi", Address: "127.0.0.1", Port: 623, Username: "admin", Password: "pw"}
	h.Labels = map[string]string{"rack": "r1"}
	h.Metadata = json.RawMessage(`{"k":"v"}`)
	tpl := Template{ID: "t1", Name: "ubuntu", Content: "version: \"0.1\"", CreatedAt: now}
	m := Machine{HardwareID: "a", TemplateID: "t1", Parameters: map[string]string{"image": "x"}, UserData: "#cloud-config", WorkflowID: "w1"}
	w := Workflow{ID: "w1", HardwareID: "a", TemplateID: "t1", Kind: KindProvision, State: StateRunning, TokenHash: []byte{1, 2, 3},
		Actions: []Action{{Task: "os", Name: "stream", Image: "image2disk", Timeout: time.Minute, State: StateSucceeded, Attempt: 1}}, CreatedAt: now}
	l := Lease{MAC: "aa:bb:cc:00:00:01", IP: "10.0.0.1", HardwareID: "a", Expires: now}
	must(t, s.Update(ctx, func(tx *Tx) error {
		for _, f := range []func() error{
			func() error { return tx.CreateHardware(h) },
			func() error { return tx.CreateTemplate(tpl) },
			func() error { return tx.PutMachine(m) },
			func() error { return tx.PutWorkflow(w) },
			func() error { return tx.PutLease(l) },
			func() error {
				_, err := tx.AppendEvent(Event{WorkflowID: "w1", Type: EventState, State: string(StateRunning), Time: now})
				return err
			},
		} {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	}))
	must(t, s.Close())

	s, err = Open(path, Options{})
	must(t, err)
	defer func() { _ = s.Close() }() // test cleanup
	err = s.View(ctx, func(tx *Tx) error {
		gh, err := tx.HardwareByMAC("aa:bb:cc:00:00:01")
		if err != nil {
			return err
		}
		if d := cmp.Diff(h, gh); d != "" {
			return fmt.Errorf("hardware (-want +got):\n%s", d)
		}
		gt, _ := tx.TemplateByName("ubuntu")
		if d := cmp.Diff(tpl, gt); d != "" {
			return fmt.Errorf("template (-want +got):\n%s", d)
		}
		gm, _ := tx.Machine("a")
		if d := cmp.Diff(m, gm); d != "" {
			return fmt.Errorf("machine (-want +got):\n%s", d)
		}
		gw, _ := tx.Workflow("w1")
		if d := cmp.Diff(w, gw); d != "" {
			return fmt.Errorf("workflow (-want +got):\n%s", d)
		}
		ws, _ := tx.WorkflowsOf("a")
		if len(ws) != 1 {
			return fmt.Errorf("workflows of a: %d", len(ws))
		}
		gl, err := tx.LeaseByIP("10.0.0.1")
		if err != nil {
			return err
		}
		if d := cmp.Diff(l, gl); d != "" {
			return fmt.Errorf("lease (-want +got):\n%s", d)
		}
		ev, _ := tx.Events("w1", 0)
		if len(ev) != 1 || ev[0].State != string(StateRunning) || ev[0].Seq != 1 {
			return fmt.Errorf("events: %+v", ev)
		}
		return nil
	})
	must(t, err)
}

func TestEventsByWorkflowAndChanged(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	changed := s.Changed()
	for i := range 6 {
		wf := []string{"w1", "w2"}[i%2]
		must(t, s.Update(ctx, func(tx *Tx) error {
			_, err := tx.AppendEvent(Event{WorkflowID: wf, Type: EventLog, Message: fmt.Sprint(i)})
			return err
		}))
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed channel not closed after an append")
	}
	evs, err := Read(ctx, s, func(tx *Tx) ([]Event, error) { return tx.Events("w2", 2) })
	must(t, err)
	var got []string
	for _, e := range evs {
		got = append(got, e.Message)
	}
	if d := cmp.Diff([]string{"3", "5"}, got); d != "" {
		t.Fatalf("events of w2 after seq 2 (-want +got):\n%s", d)
	}
	all, _ := Read(ctx, s, func(tx *Tx) ([]Event, error) { return tx.Events("", 4) })
	if len(all) != 2 || all[0].Seq != 5 {
		t.Fatalf("all events after 4: %+v", all)
	}
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.PutLease(Lease{MAC: "aa:bb:cc:00:00:01", IP: "10.0.0.5"}) }))
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutLease(Lease{MAC: "aa:bb:cc:00:00:02", IP: "10.0.0.5"}) }); !errors.Is(err, ErrConflict) {
		t.Fatalf("lease of a taken IP: %v", err)
	}
	// Moving a MAC to another address frees the old one.
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.PutLease(Lease{MAC: "aa:bb:cc:00:00:01", IP: "10.0.0.6"}) }))
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.PutLease(Lease{MAC: "aa:bb:cc:00:00:02", IP: "10.0.0.5"}) }))
	must(t, s.Update(ctx, func(tx *Tx) error { return tx.DeleteLease("aa:bb:cc:00:00:02") }))
	if _, err := Read(ctx, s, func(tx *Tx) (Lease, error) { return tx.LeaseByIP("10.0.0.5") }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted lease still found: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)
			errs <- s.Batch(ctx, func(tx *Tx) error {
				if err := tx.PutLease(Lease{MAC: mac, IP: fmt.Sprintf("10.1.%d.%d", i/256, i%256)}); err != nil {
					return err
				}
				_, err := tx.AppendEvent(Event{Type: EventLog, Message: mac})
				return err
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	leases, err := Read(ctx, s, func(tx *Tx) ([]Lease, error) { return tx.ListLeases() })
	must(t, err)
	evs, _ := Read(ctx, s, func(tx *Tx) ([]Event, error) { return tx.Events("", 0) })
	if len(leases) != n || len(evs) != n {
		t.Fatalf("got %d leases and %d events, want %d each", len(leases), len(evs), n)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()

	corrupt := filepath.Join(dir, "corrupt.db")
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	must(t, os.WriteFile(corrupt, junk, 0o600))
	start := time.Now()
	if _, err := Open(corrupt, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt file: err = %v, want ErrCorrupt", err)
	}

	locked := filepath.Join(dir, "locked.db")
	s, err := Open(locked, Options{})
	must(t, err)
	defer func() { _ = s.Close() }() // test cleanup
	_, err = Open(locked, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("locked file: err = %v, want ErrLocked", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("open errors took %s: must not hang", time.Since(start))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeRecords feeds arbitrary bytes where stored records live: a
// damaged record must give an error naming it, never a panic, and a record
// that decodes must survive a write and read back unchanged.
func FuzzDecodeRecords(f *testing.F) {
	f.Add([]byte(`{"id":"a","interfaces":[{"mac":"aa:bb:cc:00:00:01","ip":"10.0.0.1/24"}],"bmc":{},"netboot":{"allow_pxe":true,"allow_workflow":false}}`))
	f.Add([]byte(`{"id":"w","hardware_id":"a","kind":"provision","state":"running","actions":[{"task":"t","name":"n","image":"i","state":"pending","timeout":1000}]}`))
	f.Add([]byte(`{"id":"a","metadata":{"x":[1,2]}}`))
	f.Add([]byte(`not json`))
	f.Add([]byte(`{"id":"a","created_at":"2026-13-99"}`))
	s, _ := openTemp(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, b := range [][]byte{bHardware, bWorkflows, bMachines, bTemplates} {
			err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(b).Put([]byte("fuzz"), raw) })
			if err != nil {
				t.Fatal(err)
			}
		}
		_ = s.View(ctx, func(tx *Tx) error {
			if h, err := tx.Hardware("fuzz"); err == nil {
				if err := roundTrip(h); err != nil {
					t.Errorf("hardware round trip: %v", err)
				}
			}
			if w, err := tx.Workflow("fuzz"); err == nil {
				if err := roundTrip(w); err != nil {
					t.Errorf("workflow round trip: %v", err)
				}
			}
			_, _ = tx.Machine("fuzz")
			_, _ = tx.Template("fuzz")
			_, _ = tx.ListHardware()
			_, _ = tx.ListWorkflows()
			return nil
		})
	})
}

// roundTrip checks that encoding a decoded record is stable: what the
// store writes back reads back the same.
func roundTrip[T any](v T) error {
	first, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	var again T
	if err := json.Unmarshal(first, &again); err != nil {
		return fmt.Errorf("decode own encoding %s: %w", first, err)
	}
	second, err := json.Marshal(again)
	if err != nil {
		return err
	}
	if string(first) != string(second) {
		return fmt.Errorf("unstable encoding:\n%s\n%s", first, second)
	}
	return nil
}
