package workflow

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/template"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// slowRender is template.RenderContext that first waits d (or until ctx
// ends), standing in for a template that renders slowly within its limits.
// started is closed when the first render begins.
func slowRender(d time.Duration, started chan struct{}, calls *atomic.Int32) func(context.Context, string, template.Data) (*template.Template, error) {
	return func(ctx context.Context, content string, data template.Data) (*template.Template, error) {
		if calls.Add(1) == 1 {
			close(started)
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return template.RenderContext(ctx, content, data)
	}
}

// TestSlowRenderDoesNotBlockWrites: while a provision renders its
// template, other writes go ahead. Issue 13: the render ran inside the
// write transaction, and a concurrent CreateHardware waited 7.8 s.
func TestSlowRenderDoesNotBlockWrites(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "manual", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	const renderTime = time.Second
	started := make(chan struct{})
	var calls atomic.Int32
	h.eng.render = slowRender(renderTime, started, &calls)

	done := make(chan error, 1)
	go func() {
		_, err := h.eng.Provision(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "x"}})
		done <- err
	}()
	<-started
	begin := time.Now()
	h.addHardware("n2", "manual", "/dev/sda") // a write transaction of its own
	took := time.Since(begin)
	t.Logf("a CreateHardware during a %s render took %s", renderTime, took)
	if took > renderTime/2 {
		t.Errorf("CreateHardware took %s during a %s render: the render holds the write transaction", took, renderTime)
	}
	if err := <-done; err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if _, err := h.st.GetMachine(context.Background(), "n1"); err != nil {
		t.Errorf("machine not stored: %v", err)
	}
}

// TestRenderInputsChanged: a template updated while it renders is
// rendered again, and the workflow holds the new content; inputs that
// keep changing end in ErrConflict.
func TestRenderInputsChanged(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "manual", "/dev/sda")
	h.addTemplate("tpl", twoActions)
	var calls atomic.Int32
	h.eng.render = func(ctx context.Context, content string, data template.Data) (*template.Template, error) {
		if calls.Add(1) == 1 {
			changed := strings.Replace(twoActions, "name: hostname", "name: hostname-2", 1)
			if err := h.st.Update(ctx, func(tx *store.Tx) error {
				return tx.UpdateTemplate(store.Template{ID: "tpl", Name: "tpl", Content: changed})
			}); err != nil {
				t.Errorf("update template: %v", err)
			}
		}
		return template.RenderContext(ctx, content, data)
	}
	id := h.provision("n1", "tpl", map[string]string{"image": "x"})
	w, err := h.st.GetWorkflow(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || len(w.Actions) != 2 || w.Actions[1].Name != "hostname-2" {
		t.Errorf("renders = %d, actions = %+v; want 2 renders and the updated template's actions", calls.Load(), w.Actions)
	}

	h.addHardware("n2", "manual", "/dev/sda")
	calls.Store(0)
	h.eng.render = func(ctx context.Context, content string, data template.Data) (*template.Template, error) {
		n := calls.Add(1)
		if err := h.st.Update(ctx, func(tx *store.Tx) error {
			hw, err := tx.Hardware("n2")
			if err != nil {
				return err
			}
			hw.Hostname = strings.Repeat("x", int(n))
			return tx.UpdateHardware(hw)
		}); err != nil {
			t.Errorf("update hardware: %v", err)
		}
		return template.RenderContext(ctx, content, data)
	}
	_, err = h.eng.Provision(context.Background(), store.Machine{HardwareID: "n2", TemplateID: "tpl", Parameters: map[string]string{"image": "x"}})
	if !errors.Is(err, store.ErrConflict) || calls.Load() != renderAttempts {
		t.Errorf("Provision = %v after %d renders; want ErrConflict after %d", err, calls.Load(), renderAttempts)
	}
}

// TestProvisionRefusesUnboundedTemplate: a stored template that would
// spin (issue 13's attack, stored before CreateTemplate refused it) fails
// Provision at once with ErrInvalid, and blocks no one.
func TestProvisionRefusesUnboundedTemplate(t *testing.T) {
	h := newHarness(t, testOptions())
	h.addHardware("n1", "manual", "/dev/sda")
	h.addTemplate("tpl", strings.Replace(twoActions, "tasks:", "{{ $n := 200000000 }}{{ range $n }}{{ end }}\ntasks:", 1))
	begin := time.Now()
	_, err := h.eng.Provision(context.Background(), store.Machine{HardwareID: "n1", TemplateID: "tpl", Parameters: map[string]string{"image": "x"}})
	t.Logf("refused in %s: %v", time.Since(begin), err)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than the limit of 100000 iterations") {
		t.Errorf("Provision = %v, want ErrInvalid naming the iteration limit", err)
	}
}
