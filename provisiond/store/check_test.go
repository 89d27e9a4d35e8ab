package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// seeded writes a store with hardware, a template, a machine and a
// workflow to path and closes it; it returns the workflow id.
func seeded(t *testing.T, path string, opts Options) string {
	t.Helper()
	ctx := context.Background()
	s, err := Open(path, opts)
	must(t, err)
	wf := "wf-" + NewID()
	must(t, s.Update(ctx, func(tx *Tx) error {
		h := hw("h1", "aa:bb:cc:00:00:01", "10.0.0.1/24")
		h.BMC = BMC{Driver: "ipmi", Address: "10.1.0.1", Username: "admin", Password: "bmc-secret-p4ssw0rd"}
		if err := tx.CreateHardware(h); err != nil {
			return err
		}
		if err := tx.CreateTemplate(Template{ID: "t1", Name: "tpl", Content: "version: x"}); err != nil {
			return err
		}
		if err := tx.PutMachine(Machine{HardwareID: "h1", TemplateID: "t1", UserData: "#cloud-config\nsecret-user-data-xyzzy"}); err != nil {
			return err
		}
		if err := tx.PutWorkflow(Workflow{ID: wf, HardwareID: "h1", Kind: KindProvision, State: StateRunning,
			Actions: []Action{{Name: "a", Image: "img", State: StatePending}}}); err != nil {
			return err
		}
		_, err := tx.AppendEvent(Event{WorkflowID: wf, Type: EventState, State: string(StateRunning)})
		return err
	}))
	must(t, s.Close())
	return wf
}

// TestOpenRefusesCorruptPage is issue 13: garbage in the page that holds a
// workflow made provisiond start and then panic in the workflow resume.
// Open must refuse the file, name it, and say ErrCorrupt.
func TestOpenRefusesCorruptPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.db")
	wf := seeded(t, path, Options{NoSync: true})

	raw, err := os.ReadFile(path)
	must(t, err)
	at := bytes.Index(raw, []byte(wf))
	if at < 0 {
		t.Fatal("workflow id not found in the file")
	}
	const pageSize = 4096 // bbolt's page size here: os.Getpagesize on linux/amd64
	if os.Getpagesize() != pageSize {
		t.Skipf("page size %d, the test assumes %d", os.Getpagesize(), pageSize)
	}
	page := at / pageSize
	for i := page * pageSize; i < (page+1)*pageSize; i++ {
		raw[i] = byte(i*31 + 7)
	}
	must(t, os.WriteFile(path, raw, 0o600))

	s, err := Open(path, Options{})
	if err == nil {
		// Today's failure: the store opened; reading the workflows panics.
		defer func() { _ = s.Close() }() // test cleanup
		t.Fatalf("Open of a store with a garbage page %d succeeded", page)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want ErrCorrupt naming %s", err, path)
	}
}

// TestOpenRefusesUndecodableRecord: a record that bbolt holds intact but
// that does not decode is reported at open with its bucket and key, not
// by a failure of whoever reads it first.
func TestOpenRefusesUndecodableRecord(t *testing.T) {
	for _, bucket := range []string{"hardware", "templates", "machines", "workflows", "leases", "events"} {
		t.Run(bucket, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "provisiond.db")
			seeded(t, path, Options{NoSync: true})
			db, err := bolt.Open(path, 0o600, nil)
			must(t, err)
			must(t, db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte(bucket)).Put([]byte("bad-key"), []byte(`{"id": 5, "trunc`))
			}))
			must(t, db.Close())

			s, err := Open(path, Options{})
			if err == nil {
				_ = s.Close() // test cleanup
				t.Fatal("Open succeeded with an undecodable record")
			}
			for _, want := range []string{path, bucket, "bad-key"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to name %q", err, want)
				}
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestOpenRefusesEmptyFile is issue 13: a 0-byte provisiond.db started as
// a brand-new empty store without a word.
func TestOpenRefusesEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.db")
	must(t, os.WriteFile(path, nil, 0o600))
	s, err := Open(path, Options{})
	if err == nil {
		_ = s.Close() // test cleanup
		t.Fatal("Open of a 0-byte file succeeded")
	}
	for _, want := range []string{path, "0-byte", "backup", "remove"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("the refused file was changed: %v %v", fi, err)
	}

	// A path that does not exist is a brand-new store.
	fresh := filepath.Join(t.TempDir(), "sub", "provisiond.db")
	s, err = Open(fresh, Options{NoSync: true})
	must(t, err)
	if rep := s.OpenReport(); rep.Records != 0 {
		t.Errorf("new store: %+v", rep)
	}
	must(t, s.Close())
}

// TestViewDoesNotPanicOnBadPage: a page that goes bad after the open
// check gives readers an ErrCorrupt error, not a panic that takes the
// daemon down.
func TestViewDoesNotPanicOnBadPage(t *testing.T) {
	s, _ := openTemp(t)
	err := s.View(context.Background(), func(*Tx) error { panic("invalid page type: 0") })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "invalid page type") {
		t.Fatalf("err = %v, want ErrCorrupt with the panic", err)
	}
}

// BenchmarkOpenCheck measures the open check on a store of 10k hardware
// and 100k events (~60 MB; `go test -bench OpenCheck -benchtime 3x`).
func BenchmarkOpenCheck(b *testing.B) {
	t := b
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "big.db")
	s, err := Open(path, Options{NoSync: true})
	must(t, err)
	for i := 0; i < 10_000; i += 1000 {
		must(t, s.Update(ctx, func(tx *Tx) error {
			for j := i; j < i+1000; j++ {
				h := hw(fmt.Sprintf("hw-%05d", j), fmt.Sprintf("aa:bb:%02x:%02x:%02x:01", j>>16&0xff, j>>8&0xff, j&0xff),
					fmt.Sprintf("10.%d.%d.%d/16", j>>16&0xff, j>>8&0xff, j&0xff))
				h.BMC = BMC{Driver: "ipmi", Address: "10.200.0.1", Username: "admin", Password: "pw"}
				h.Labels = map[string]string{"rack": fmt.Sprint(j / 40), "row": fmt.Sprint(j / 400)}
				if err := tx.CreateHardware(h); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	for i := 0; i < 100_000; i += 5000 {
		must(t, s.Update(ctx, func(tx *Tx) error {
			for j := i; j < i+5000; j++ {
				if _, err := tx.AppendEvent(Event{WorkflowID: fmt.Sprintf("wf-%04d", j/50), HardwareID: fmt.Sprintf("hw-%05d", j/10),
					Type: EventAction, State: string(StateRunning), Task: "os", Action: "stream-image", Message: "streamed 1234 MiB of 4096"}); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	must(t, s.Close())
	fi, err := os.Stat(path)
	must(t, err)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		s, err = Open(path, Options{NoSync: true})
		must(t, err)
		total := time.Since(start)
		rep := s.OpenReport()
		must(t, s.Close())
		b.Logf("file %d MiB: open %s; bbolt check %s, decode %d records %s", fi.Size()>>20, total.Round(time.Millisecond),
			rep.PageCheck.Round(time.Millisecond), rep.Records, rep.Decode.Round(time.Millisecond))
	}
}
