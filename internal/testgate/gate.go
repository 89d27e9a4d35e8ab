// Package testgate reads the event stream of `go test -json` and decides
// whether a run is good enough for CI: no test failed, every package
// built, and no test skipped unless an allowlist says it skips by design.
//
// A test that skips because a binary, a package or root is missing is
// green in plain `go test`; in CI, where everything is meant to be
// provided, it means a real-peer test silently stopped running.
package testgate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Options tune what the gate passes through.
type Options struct {
	// Verbose passes every output line through as it arrives (go test -v).
	// Otherwise only package lines, build errors and the full output of
	// failed tests are shown.
	Verbose bool
	// Allow is the allowlist of skips; nil allows none.
	Allow *Allowlist
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output and build-fail
	FailedBuild string // on a package's fail
}

type status int

const (
	running status = iota
	passed
	failed
	skipped
)

type testState struct {
	Test
	status status
	output []string
	// unfinished: the package ended (or the stream did) before the test
	// reported a result: a timeout, a crash or a killed go test.
	unfinished bool
}

type pkgState struct {
	final       []string // go test's "ok pkg" or "FAIL pkg" line, shown after unfinished tests
	ended       bool
	failed      bool
	buildFailed bool
}

// Skip is a test that skipped, with its reason.
type Skip struct {
	Test
	Reason string // what the test printed: its t.Skip message
	Why    string // the allowlist's reason; empty when not allowed
}

// Result is what a run came to.
type Result struct {
	Passed, Failed int
	FailedTests    []Test
	Unfinished     []Test   // also in FailedTests
	Skips          []Skip   // allowed or not
	BuildFailed    []string // packages that did not build
	PackageFailed  []string // packages that failed outside any test
	Events         int      // JSON events read

	pkgSeen map[string]bool // packages with at least one test event
}

// Disallowed returns the skips not on the allowlist.
func (r *Result) Disallowed() []Skip {
	var out []Skip
	for _, s := range r.Skips {
		if s.Why == "" {
			out = append(out, s)
		}
	}
	return out
}

// OK reports whether the run passes the gate.
func (r *Result) OK() bool {
	return r.Events > 0 && r.Failed == 0 && len(r.BuildFailed) == 0 &&
		len(r.PackageFailed) == 0 && len(r.Disallowed()) == 0
}

// Summary is the one-line count.
func (r *Result) Summary() string {
	allowed := len(r.Skips) - len(r.Disallowed())
	return fmt.Sprintf("tests: %d passed, %d failed, %d skipped (%d allowed)", r.Passed, r.Failed, len(r.Skips), allowed)
}

// Run reads a `go test -json` stream from in until EOF, writes the
// human-readable output to out as it goes and returns the result. Lines
// that are not JSON events (go command messages) are passed through.
func Run(in io.Reader, out io.Writer, opts Options) (*Result, error) {
	g := &gate{opts: opts, out: out, tests: map[Test]*testState{}, pkgs: map[string]*pkgState{}, res: &Result{pkgSeen: map[string]bool{}}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // a test may print long lines
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil || ev.Action == "" {
			g.printf("%s\n", line)
			continue
		}
		g.res.Events++
		g.handle(ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read go test -json: %w", err)
	}
	for _, p := range g.pkgOrder {
		if !g.pkgs[p].ended {
			g.finishPackage(p)
			g.res.PackageFailed = append(g.res.PackageFailed, p+" (no result: go test stopped early?)")
		}
	}
	return g.res, g.err
}

type gate struct {
	opts     Options
	out      io.Writer
	tests    map[Test]*testState
	order    []Test
	pkgs     map[string]*pkgState
	pkgOrder []string
	res      *Result
	err      error // first write error
}

func (g *gate) printf(format string, args ...any) {
	if _, err := fmt.Fprintf(g.out, format, args...); err != nil && g.err == nil {
		g.err = fmt.Errorf("write output: %w", err)
	}
}

func (g *gate) pkg(name string) *pkgState {
	p, ok := g.pkgs[name]
	if !ok {
		p = &pkgState{}
		g.pkgs[name] = p
		g.pkgOrder = append(g.pkgOrder, name)
	}
	return p
}

func (g *gate) test(t Test) *testState {
	s, ok := g.tests[t]
	if !ok {
		s = &testState{Test: t}
		g.tests[t] = s
		g.res.pkgSeen[t.Package] = true
		g.order = append(g.order, t)
	}
	return s
}

func (g *gate) handle(ev event) {
	switch ev.Action {
	case "build-output":
		g.printf("%s", ev.Output)
		return
	case "build-fail":
		return // the package's fail event names it
	}
	if ev.Package == "" {
		return
	}
	p := g.pkg(ev.Package)
	if ev.Test == "" {
		g.handlePackage(ev, p)
		return
	}
	t := g.test(Test{Package: ev.Package, Name: ev.Test})
	switch ev.Action {
	case "output":
		t.output = append(t.output, ev.Output)
		if g.opts.Verbose {
			g.printf("%s", ev.Output)
		}
	case "pass":
		t.status = passed
		t.output = nil
		g.res.Passed++
	case "fail":
		g.fail(t)
	case "skip":
		t.status = skipped
		s := Skip{Test: t.Test, Reason: skipReason(t.output)}
		s.Why, _ = g.opts.Allow.Why(t.Test)
		g.res.Skips = append(g.res.Skips, s)
		t.output = nil
	}
}

func (g *gate) fail(t *testState) {
	t.status = failed
	g.res.Failed++
	g.res.FailedTests = append(g.res.FailedTests, t.Test)
	if t.unfinished {
		g.res.Unfinished = append(g.res.Unfinished, t.Test)
	}
	if !g.opts.Verbose {
		for _, l := range t.output {
			g.printf("%s", l)
		}
	}
	t.output = nil
}

func (g *gate) handlePackage(ev event, p *pkgState) {
	switch ev.Action {
	case "output":
		// The test binary's bare PASS or FAIL line adds nothing to the
		// "ok pkg" or "FAIL pkg" line go test prints next.
		switch {
		case strings.HasPrefix(ev.Output, "ok  \t"+ev.Package) || strings.HasPrefix(ev.Output, "FAIL\t"+ev.Package):
			p.final = append(p.final, ev.Output)
		case g.opts.Verbose || (ev.Output != "PASS\n" && ev.Output != "FAIL\n"):
			g.printf("%s", ev.Output)
		}
	case "pass", "skip": // skip: no test files
		g.finishPackage(ev.Package)
	case "fail":
		before := g.res.Failed
		g.finishPackage(ev.Package)
		p.failed = true
		switch {
		case ev.FailedBuild != "":
			p.buildFailed = true
			g.res.BuildFailed = append(g.res.BuildFailed, ev.Package)
		case before == g.res.Failed && !g.anyFailed(ev.Package):
			g.res.PackageFailed = append(g.res.PackageFailed, ev.Package+" (failed outside any test: TestMain, init or the test binary's exit)")
		}
	}
}

// finishPackage ends a package: tests still running never finished.
func (g *gate) finishPackage(name string) {
	g.pkg(name).ended = true
	for _, t := range g.order {
		s := g.tests[t]
		if t.Package == name && s.status == running {
			s.unfinished = true
			g.fail(s)
			g.printf("--- UNFINISHED: %s (no result before its package ended: timeout or crash)\n", t.Name)
		}
	}
	p := g.pkgs[name]
	for _, l := range p.final {
		g.printf("%s", l)
	}
	p.final = nil
}

func (g *gate) anyFailed(pkg string) bool {
	return slices.ContainsFunc(g.res.FailedTests, func(t Test) bool { return t.Package == pkg })
}

// skipReason is what a skipped test printed, without go test's own
// framing lines (=== RUN, --- SKIP).
func skipReason(output []string) string {
	var parts []string
	for _, l := range output {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		parts = append(parts, l)
	}
	if len(parts) == 0 {
		return "(no reason printed)"
	}
	return strings.Join(parts, " | ")
}

// Report writes the verdict: failed tests, builds and packages, skips
// outside the allowlist with their reasons, allowed skips, notes on
// allowlist entries that did not skip, and the summary line last.
// allowName names the allowlist in the advice.
func (r *Result) Report(w io.Writer, allow *Allowlist, allowName string) error {
	var b strings.Builder
	if len(r.BuildFailed) > 0 {
		fmt.Fprintf(&b, "\nFAIL: %d package(s) did not build:\n", len(r.BuildFailed))
		for _, p := range r.BuildFailed {
			fmt.Fprintf(&b, "    %s\n", p)
		}
	}
	if len(r.PackageFailed) > 0 {
		fmt.Fprintf(&b, "\nFAIL: %d package(s) failed:\n", len(r.PackageFailed))
		for _, p := range r.PackageFailed {
			fmt.Fprintf(&b, "    %s\n", p)
		}
	}
	if len(r.FailedTests) > 0 {
		fmt.Fprintf(&b, "\nFAIL: %d test(s) failed (output above):\n", len(r.FailedTests))
		for _, t := range r.FailedTests {
			note := ""
			if slices.Contains(r.Unfinished, t) {
				note = " (did not finish: timeout or crash)"
			}
			fmt.Fprintf(&b, "    %s%s\n", t, note)
		}
	}
	if bad := r.Disallowed(); len(bad) > 0 {
		fmt.Fprintf(&b, "\nFAIL: %d test(s) skipped and are not on the allowlist (%s).\n", len(bad), allowName)
		fmt.Fprintf(&b, "CI provides every peer, so a skip here means a test stopped running: install what it needs (make deps),\n")
		fmt.Fprintf(&b, "or, if it skips by design, add `package TestName  # why` to the allowlist.\n")
		for _, s := range bad {
			fmt.Fprintf(&b, "    %s\n        %s\n", s.Test, s.Reason)
		}
	}
	var allowed []Skip
	for _, s := range r.Skips {
		if s.Why != "" {
			allowed = append(allowed, s)
		}
	}
	if len(allowed) > 0 {
		fmt.Fprintf(&b, "\nskipped by design (%s):\n", allowName)
		for _, s := range allowed {
			fmt.Fprintf(&b, "    %s  # %s\n", s.Test, s.Why)
		}
	}
	if allow != nil {
		var stale []string
		for _, t := range allow.order {
			if !slices.ContainsFunc(r.Skips, func(s Skip) bool { return s.Test == t }) && r.ran(t.Package) {
				stale = append(stale, t.String())
			}
		}
		if len(stale) > 0 {
			fmt.Fprintf(&b, "\nnote: allowlisted but did not skip in this run (ran, or no longer exists):\n")
			for _, s := range stale {
				fmt.Fprintf(&b, "    %s\n", s)
			}
		}
	}
	if r.Events == 0 {
		fmt.Fprintf(&b, "\nFAIL: no go test -json events read: did go test run with -json?\n")
	}
	fmt.Fprintf(&b, "\n%s\n", r.Summary())
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// ran reports whether any test of pkg reported a result.
func (r *Result) ran(pkg string) bool { return r.pkgSeen[pkg] }
