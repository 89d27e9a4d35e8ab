package testgate

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cpioPkg = "github.com/rackform/terraform-provider-baremetal/internal/cpio"

func allowlist(t *testing.T, text string) *Allowlist {
	t.Helper()
	a, err := ParseAllowlist(strings.NewReader(text), "allow")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func stream(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run gates a stream and returns the result, the output and the report.
func run(t *testing.T, in []byte, opts Options) (*Result, string) {
	t.Helper()
	var out bytes.Buffer
	res, err := Run(bytes.NewReader(in), &out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Report(&out, opts.Allow, "allow"); err != nil {
		t.Fatal(err)
	}
	return res, out.String()
}

// Streams recorded from go test -json: internal/cpio with and without GNU
// cpio on PATH, and a small module with a failing, a skipping, a subtest
// skipping and an unbuildable package, a timeout and a failing TestMain.
func TestGate(t *testing.T) {
	for name, tc := range map[string]struct {
		stream  string
		allow   string
		verbose bool
		ok      bool
		summary string
		want    []string // in the output, in this order
		notWant []string
	}{
		"all pass": {
			stream: "cpio-pass.json", ok: true,
			summary: "tests: 19 passed, 0 failed, 0 skipped (0 allowed)",
			want:    []string{"ok  \t" + cpioPkg},
			notWant: []string{"=== RUN", "--- PASS", "FAIL"},
		},
		"skip not allowed": {
			stream:  "cpio-skip.json",
			summary: "tests: 18 passed, 0 failed, 1 skipped (0 allowed)",
			want: []string{"FAIL: 1 test(s) skipped and are not on the allowlist (allow)",
				cpioPkg + " TestAgainstGNUcpio\n        cpio_test.go:154: cpio binary not installed (apt-get install cpio)"},
		},
		"skip allowed": {
			stream: "cpio-skip.json", ok: true,
			allow:   cpioPkg + " TestAgainstGNUcpio  # why it skips\n",
			summary: "tests: 18 passed, 0 failed, 1 skipped (1 allowed)",
			want:    []string{"skipped by design (allow):\n    " + cpioPkg + " TestAgainstGNUcpio  # why it skips"},
			notWant: []string{"FAIL", "note:"},
		},
		"allowlisted test that ran": {
			stream: "cpio-pass.json", ok: true,
			allow: cpioPkg + " TestAgainstGNUcpio  # why it skips\n" +
				"example.com/other TestX  # another package: not noted\n",
			want:    []string{"note: allowlisted but did not skip in this run", "    " + cpioPkg + " TestAgainstGNUcpio\n"},
			notWant: []string{"example.com/other TestX\n"},
		},
		"failure, build failure and skips": {
			stream:  "mixed.json",
			summary: "tests: 3 passed, 1 failed, 2 skipped (0 allowed)",
			want: []string{
				"b/b_test.go:3:28: undefined: undefined",
				"=== RUN   TestFail\n    a_test.go:11: before\n    a_test.go:11: want 1, got 2\n--- FAIL: TestFail",
				"FAIL: 1 package(s) did not build:\n    example.com/gs/b\n",
				"FAIL: 1 test(s) failed (output above):\n    example.com/gs/a TestFail\n",
				"example.com/gs/a TestSkip\n        SKIP printed | a_test.go:6: cpio binary not installed",
				"example.com/gs/a TestSub/UEFI\n        a_test.go:9: no OVMF",
			},
			notWant: []string{"phase 1 took 2s", "=== RUN   TestPass"},
		},
		"a parent's entry does not allow its subtest": {
			stream: "mixed.json",
			allow:  "example.com/gs/a TestSub  # parent\nexample.com/gs/a TestSkip  # why\n",
			want:   []string{"FAIL: 1 test(s) skipped and are not on the allowlist", "example.com/gs/a TestSub/UEFI\n"},
		},
		"verbose passes everything through": {
			stream: "mixed.json", verbose: true,
			want: []string{"=== RUN   TestPass\n    a_test.go:5: phase 1 took 2s\n--- PASS: TestPass", "--- FAIL: TestFail (0.00s)\nFAIL\n"},
		},
		"timeout": {
			stream:  "timeout.json",
			summary: "tests: 1 passed, 1 failed, 0 skipped (0 allowed)",
			want: []string{"d_test.go:4: waiting for the VM\npanic: test timed out after 2s",
				"--- UNFINISHED: TestHang", "FAIL\texample.com/gs/d\t2.005s",
				"example.com/gs/d TestHang (did not finish: timeout or crash)"},
		},
		"TestMain exits non-zero": {
			stream:  "testmain-exit.json",
			summary: "tests: 1 passed, 0 failed, 0 skipped (0 allowed)",
			want:    []string{"FAIL: 1 package(s) failed:\n    example.com/gs/e (failed outside any test"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			opts := Options{Verbose: tc.verbose}
			if tc.allow != "" {
				opts.Allow = allowlist(t, tc.allow)
			}
			res, out := run(t, stream(t, tc.stream), opts)
			if res.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v\n%s", res.OK(), tc.ok, out)
			}
			if tc.summary != "" && !strings.HasSuffix(out, "\n"+tc.summary+"\n") {
				t.Errorf("output does not end with the summary %q:\n%s", tc.summary, out)
			}
			rest := out
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("output lacks %q (after the earlier wants):\n%s", w, out)
					continue
				}
				rest = rest[i+len(w):]
			}
			for _, nw := range tc.notWant {
				if strings.Contains(out, nw) {
					t.Errorf("output has %q:\n%s", nw, out)
				}
			}
		})
	}
}

// A stream cut short (go test killed) fails: its running tests and its
// package have no result.
func TestGateTruncatedStream(t *testing.T) {
	lines := strings.SplitAfter(string(stream(t, "cpio-pass.json")), "\n")
	var in string
	for _, l := range lines {
		in += l
		if strings.Contains(l, `"Action":"run"`) && strings.Contains(l, `"Test":"TestAgainstGNUcpio"`) {
			break
		}
	}
	res, out := run(t, []byte(in), Options{})
	if res.OK() {
		t.Fatalf("a cut stream passed:\n%s", out)
	}
	for _, w := range []string{cpioPkg + " TestAgainstGNUcpio (did not finish", cpioPkg + " (no result: go test stopped early?)"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// No events at all (go test not run with -json, or not run) fails, and
// lines that are not events pass through.
func TestGateNoEvents(t *testing.T) {
	res, out := run(t, []byte("go: no packages to test\n"), Options{})
	if res.OK() {
		t.Fatalf("an empty run passed:\n%s", out)
	}
	for _, w := range []string{"go: no packages to test\n", "FAIL: no go test -json events read"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestParseAllowlist(t *testing.T) {
	a := allowlist(t, "# comment\n\nexample.com/p TestX  # needs BENCH=1\nexample.com/p TestY/case#01 # dedup suffix\n")
	for _, tc := range []struct {
		test Test
		why  string
		ok   bool
	}{
		{Test{"example.com/p", "TestX"}, "needs BENCH=1", true},
		{Test{"example.com/p", "TestY/case#01"}, "dedup suffix", true},
		{Test{"example.com/p", "TestX/sub"}, "", false},
		{Test{"example.com/q", "TestX"}, "", false},
	} {
		why, ok := a.Why(tc.test)
		if why != tc.why || ok != tc.ok {
			t.Errorf("Why(%s) = %q, %v; want %q, %v", tc.test, why, ok, tc.why, tc.ok)
		}
	}
	for name, text := range map[string]string{
		"no reason":    "example.com/p TestX\n",
		"empty reason": "example.com/p TestX  #   \n",
		"no test":      "example.com/p  # why\n",
		"three fields": "example.com/p TestX extra  # why\n",
		"twice":        "example.com/p TestX  # a\nexample.com/p TestX  # b\n",
	} {
		if _, err := ParseAllowlist(strings.NewReader(text), "allow"); err == nil {
			t.Errorf("%s: %q parsed", name, text)
		}
	}
}

// The committed allowlist parses and says why for every entry.
func TestCommittedAllowlist(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", ".ci", "skip-allowlist"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only
	a, err := ParseAllowlist(f, ".ci/skip-allowlist")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.order) == 0 || len(a.order) > 10 {
		t.Errorf("%d entries: the allowlist is meant to be short and not empty", len(a.order))
	}
}
