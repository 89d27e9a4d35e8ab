package workflow

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestLogFloodBounded: 50 MiB of output streamed through one action
// attempt (issue 13: one StreamLogs stream grew the database from 2 MB to
// 33.5 MB in 60 s) stores at most MaxActionLog of it; the rest is counted,
// the agent sees no error, and the next attempt logs afresh.
func TestLogFloodBounded(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "ipmi", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	id := h.provision("n1", "tpl", map[string]string{"image": "x", "retries": "1"})
	h.waitFor(id, "boot", func(w store.Workflow) bool { return w.Step == stepPowered })
	tok := h.mint("n1")
	ctx := context.Background()
	as, err := h.eng.NextAction(ctx, tok, "n1")
	if err != nil || as.Action == nil {
		t.Fatalf("next action: %v, %v", as, err)
	}

	before := fileSize(t, h.path)
	const (
		streams = 32
		chunk   = MaxLogChunk
		total   = 50 << 20
	)
	line := bytes.Repeat([]byte("x"), chunk-1)
	line = append(line, '\n')
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range total / chunk / streams {
				if err := h.eng.AppendLog(ctx, tok, as.Index, line); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append log: %v", err)
	}
	after := fileSize(t, h.path)
	t.Logf("streamed %d MiB through one action: database %d KiB → %d KiB (+%d KiB)", total>>20, before>>10, after>>10, (after-before)>>10)
	if grown := after - before; grown > 8<<20 {
		t.Errorf("database grew by %d KiB for one action's output, want at most 8 MiB", grown>>10)
	}

	w, err := h.st.GetWorkflow(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	a := w.Actions[as.Index]
	if a.LogBytes < MaxActionLog || a.LogBytes > MaxActionLog+chunk {
		t.Errorf("LogBytes = %d, want MaxActionLog (%d) up to one chunk more", a.LogBytes, MaxActionLog)
	}
	if a.LogBytes+a.LogDropped != total {
		t.Errorf("LogBytes %d + LogDropped %d = %d, want every byte streamed (%d) counted", a.LogBytes, a.LogDropped, a.LogBytes+a.LogDropped, total)
	}
	var stored, truncated int
	evs, err := store.Read(ctx, h.st, func(tx *store.Tx) ([]store.Event, error) { return tx.Events(id, 0) })
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type != store.EventLog {
			continue
		}
		if strings.HasPrefix(e.Message, "output truncated: ") {
			truncated++
			continue
		}
		stored += len(e.Message)
	}
	if int64(stored) != a.LogBytes {
		t.Errorf("log events hold %d bytes, LogBytes says %d", stored, a.LogBytes)
	}
	// One at the first drop, then one per doubling: 1, 2, 4 ... 32 MiB.
	if truncated < 1 || truncated > 8 {
		t.Errorf("%d truncation events, want 1 to 8", truncated)
	}

	// The next attempt has a cap of its own.
	if err := h.eng.ReportAction(ctx, tok, Report{Index: as.Index, State: store.StateFailed, Attempt: as.Action.Attempt, Message: "exit 1"}); err != nil {
		t.Fatal(err)
	}
	as2, err := h.eng.NextAction(ctx, tok, "n1")
	if err != nil || as2.Action == nil || as2.Action.Attempt != 2 {
		t.Fatalf("retry: %+v, %v", as2, err)
	}
	if err := h.eng.AppendLog(ctx, tok, as2.Index, []byte("second attempt\n")); err != nil {
		t.Fatal(err)
	}
	w, err = h.st.GetWorkflow(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if a := w.Actions[as2.Index]; a.LogAttempt != 2 || a.LogBytes != int64(len("second attempt\n")) || a.LogDropped != 0 {
		t.Errorf("second attempt: LogAttempt %d LogBytes %d LogDropped %d, want 2, %d, 0", a.LogAttempt, a.LogBytes, a.LogDropped, len("second attempt\n"))
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
