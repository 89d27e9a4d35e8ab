package testgate

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Allowlist names the tests that may skip, each with the reason it skips
// by design. Its text form is one entry a line:
//
//	<import path> <TestName>  # why
//
// TestName is the name go test prints, subtests included
// (TestDemoImageBoots/uefi): an entry allows that test alone to skip, not
// its subtests nor its parent. Blank lines and lines starting with # are
// comments. Every entry must say why.
type Allowlist struct {
	entries map[Test]string // test → why
	order   []Test
}

// Test is one test or subtest of a package.
type Test struct {
	Package string // import path
	Name    string // TestX or TestX/sub
}

func (t Test) String() string { return t.Package + " " + t.Name }

// ParseAllowlist reads an allowlist; name is used in error messages.
func ParseAllowlist(r io.Reader, name string) (*Allowlist, error) {
	a := &Allowlist{entries: map[Test]string{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// Test names hold no spaces (go test turns them into _) but may
		// hold # (TestX/case#01): the reason starts at the first " #".
		head, why, ok := strings.Cut(line, " #")
		why = strings.TrimSpace(why)
		if !ok || why == "" {
			return nil, fmt.Errorf("%s:%d: %q: every entry says why it may skip (`package TestName  # why`)", name, n, line)
		}
		f := strings.Fields(head)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: %q: want `package TestName  # why`", name, n, line)
		}
		t := Test{Package: f[0], Name: f[1]}
		if _, dup := a.entries[t]; dup {
			return nil, fmt.Errorf("%s:%d: %s is listed twice", name, n, t)
		}
		a.entries[t] = why
		a.order = append(a.order, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return a, nil
}

// Why returns the reason t may skip, and whether it may.
func (a *Allowlist) Why(t Test) (string, bool) {
	if a == nil {
		return "", false
	}
	why, ok := a.entries[t]
	return why, ok
}
