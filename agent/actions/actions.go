// Package actions holds the agent's built-in actions. Each accepts the
// environment interface of the matching Tinkerbell hub action, so existing
// templates run without a container runtime.
//
// An action writes its human-readable output (progress, command output) to
// the writer it is given and honours its context: the runner puts the
// action's timeout and the workflow's cancellation on it.
package actions

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
)

// Spec is one action as the server hands it out.
type Spec struct {
	Name    string
	Image   string
	Command []string
	Env     map[string]string
}

// Func runs an action. It blocks until the action is done or ctx ends.
type Func func(ctx context.Context, s Spec, out io.Writer) error

// Action is a built-in action.
type Action struct {
	Run Func
	// Then, when set, is what the agent does after provisiond has
	// acknowledged the action's success: "kexec". Reporting first removes
	// Tinkerbell's race between a reboot and its status report
	// (roadmap#29).
	Then string
}

// Deps are what the built-in actions need from outside.
type Deps struct {
	// HTTPClient fetches images; nil means http.DefaultClient.
	HTTPClient *http.Client
	// ProgressEvery is how often long actions print a progress line;
	// zero means every 5 seconds.
	ProgressEvery time.Duration
	// Shell runs CMD_LINE-style commands; empty means "/bin/sh -c".
	Shell string
}

// Builtins are the built-in actions bound to their dependencies.
type Builtins struct {
	http     *http.Client
	progress time.Duration
	shell    string
}

// New returns the built-in actions. It does no I/O.
func New(d Deps) *Builtins {
	b := &Builtins{http: d.HTTPClient, progress: d.ProgressEvery, shell: d.Shell}
	if b.http == nil {
		b.http = http.DefaultClient
	}
	if b.progress <= 0 {
		b.progress = 5 * time.Second
	}
	if b.shell == "" {
		b.shell = "/bin/sh -c"
	}
	return b
}

// Registry maps a built-in action's name (actionspec.Normalize of its
// image) to the action.
type Registry map[string]Action

// Registry returns every built-in action of internal/actionspec, bound to
// its function here.
//
// reboot and poweroff do nothing themselves: once the agent has reported
// them, it asks provisiond for its next step, and provisiond answers what
// to do (reboot or power off the agent's own way without a BMC, nothing
// with one: provisiond then does it through the BMC). kexec loads the
// installed kernel while it runs, so that a kernel that cannot be loaded
// fails the action, and boots it once provisiond has acknowledged the
// report.
func (b *Builtins) Registry() Registry {
	funcs := map[string]Action{
		actionspec.Image2Disk: {Run: b.Image2Disk},
		actionspec.WriteFile:  {Run: b.WriteFile},
		actionspec.Exec:       {Run: b.Exec},
		actionspec.CExec:      {Run: b.Exec},
		actionspec.Wipe:       {Run: b.Wipe},
		actionspec.Reboot:     {Run: endsWorkflow("reboot")},
		actionspec.Poweroff:   {Run: endsWorkflow("power off")},
		actionspec.Kexec:      {Run: b.KexecLoad, Then: "kexec"},
	}
	r := make(Registry, len(funcs))
	for _, spec := range actionspec.All() {
		a, ok := funcs[spec.Name]
		if !ok {
			// A contract entry with no function here: the agent would
			// refuse templates the parser accepted. TestRegistry keeps
			// this from shipping.
			panic("agent: no function for built-in action " + spec.Name)
		}
		r[spec.Name] = a
	}
	return r
}

// Names lists the image names the registry knows, sorted.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup finds the action for an image reference such as "image2disk" or
// "quay.io/tinkerbell/actions/image2disk:v1.0.0", by the rules of
// actionspec.Normalize (the template parser's).
func (r Registry) Lookup(image string) (Action, error) {
	a, ok := r[actionspec.Normalize(image)]
	if !ok {
		return Action{}, fmt.Errorf("image %q is not a built-in action (known: %s); container images are not supported", image, strings.Join(r.Names(), ", "))
	}
	return a, nil
}

func endsWorkflow(what string) Func {
	return func(ctx context.Context, s Spec, out io.Writer) error {
		say(out, "%s: the workflow ends here; provisiond will %s the machine through its BMC, or have the agent do it when it has none\n", s.Name, what)
		return ctx.Err()
	}
}

// say writes to an action's output. That output is a record for the
// operator, not the action's result: the runner's writers buffer it and drop
// what provisiond cannot take, so a failed write must neither fail nor stop
// the action, and its error is dropped here rather than at every call.
func say(out io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(out, format, args...)
}

// env returns the value of key, or def when unset or empty.
func env(s Spec, key, def string) string {
	if v, ok := s.Env[key]; ok && v != "" {
		return v
	}
	return def
}

// progressTicker prints a progress line every interval until stop is called.
func progressTicker(every time.Duration, line func()) (stop func()) {
	t := time.NewTicker(every)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-t.C:
				line()
			case <-done:
				return
			}
		}
	}()
	return func() {
		t.Stop()
		close(done)
		<-finished
	}
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
