// Package gobuild is the test kit's build-once helper: the binaries tests
// run as processes (provisiond, the agent, the provider, plainboot) are
// built with the go command once per test process and flags, into one
// temporary directory that Main removes when the tests end.
package gobuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB that Build uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Logf(format string, args ...any)
}

// Options are how a binary is built.
type Options struct {
	Flags []string // go build flags, e.g. -trimpath, -ldflags "-s -w"
	Env   []string // added to the environment, e.g. CGO_ENABLED=0
}

type entry struct {
	once   sync.Once
	path   string
	err    error
	took   time.Duration
	logged bool // Build has logged took
}

var (
	mu      sync.Mutex
	dir     string
	built   = map[string]*entry{}
	modRoot struct {
		once sync.Once
		dir  string
		name string // the last element of the module's path
		err  error
	}
)

// ErrNoGo is returned when the go command is not on PATH.
var ErrNoGo = errors.New("the go command is not on PATH: it is needed to build the binaries the test runs")

// root is the directory of this module's go.mod, asked of the go command
// from the test's working directory.
func root() (string, error) {
	modRoot.once.Do(func() {
		if _, err := exec.LookPath("go"); err != nil {
			modRoot.err = ErrNoGo
			return
		}
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			modRoot.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		mod := strings.TrimSpace(string(out))
		if mod == "" || mod == os.DevNull {
			modRoot.err = errors.New("go env GOMOD: not inside a module")
			return
		}
		modRoot.dir = filepath.Dir(mod)
		b, err := os.ReadFile(mod)
		if err != nil {
			modRoot.err = fmt.Errorf("read the module's name: %w", err)
			return
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "module" {
				modRoot.name = path.Base(strings.Trim(f[1], `"`))
			}
		}
		if modRoot.name == "" {
			modRoot.err = fmt.Errorf("%s names no module", mod)
		}
	})
	return modRoot.dir, modRoot.err
}

// Binary returns the path of the binary of pkg, a package of this module
// named from the module's root ("./provisiond", "." for the provider),
// built with o the first time it is asked for in this process. The file is
// named like the package's directory (the module's name for "."), alone in
// its directory.
func Binary(ctx context.Context, pkg string, o Options) (string, error) {
	e := lookup(ctx, pkg, o)
	return e.path, e.err
}

// lookup returns pkg's entry once it is built.
func lookup(ctx context.Context, pkg string, o Options) *entry {
	key := strings.Join(append(append([]string{pkg, "\x00"}, o.Flags...), append([]string{"\x00"}, o.Env...)...), "\x01")
	mu.Lock()
	e, ok := built[key]
	if !ok {
		e = &entry{}
		built[key] = e
	}
	mu.Unlock()
	e.once.Do(func() { e.path, e.took, e.err = build(ctx, key, pkg, o) })
	return e
}

func build(ctx context.Context, key, pkg string, o Options) (string, time.Duration, error) {
	start := time.Now()
	mod, err := root()
	if err != nil {
		return "", 0, err
	}
	mu.Lock()
	if dir == "" {
		if dir, err = os.MkdirTemp("", "baremetal-testbin-"); err != nil {
			mu.Unlock()
			return "", 0, fmt.Errorf("make the test binaries' directory: %w", err)
		}
	}
	sum := sha256.Sum256([]byte(key))
	out := filepath.Join(dir, hex.EncodeToString(sum[:6]))
	mu.Unlock()
	name := path.Base(filepath.ToSlash(pkg))
	if pkg == "." {
		name = modRoot.name
	}
	args := append(append([]string{"build"}, o.Flags...), "-o", filepath.Join(out, name), pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), o.Env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return filepath.Join(out, name), time.Since(start), nil
}

// Build is Binary for a test: it fails t when the build fails, and logs
// how long the build took the first time.
func Build(t TB, pkg string, o Options) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := lookup(ctx, pkg, o)
	if e.err != nil {
		t.Fatal(e.err)
	}
	mu.Lock()
	first := !e.logged
	e.logged = true
	mu.Unlock()
	if first {
		t.Logf("built %s in %s", pkg, e.took.Round(time.Millisecond))
	}
	return e.path
}

// Main runs the tests (m is the *testing.M of TestMain), then removes the
// binaries built: TestMain calls os.Exit(gobuild.Main(m)).
func Main(m interface{ Run() int }) int {
	code := m.Run()
	if err := RemoveAll(); err != nil {
		// Left in the temp dir: worth a line, not a failed run.
		fmt.Fprintln(os.Stderr, "gobuild:", err)
	}
	return code
}

// RemoveAll removes every binary built so far.
func RemoveAll() error {
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the test binaries: %w", err)
	}
	dir, built = "", map[string]*entry{}
	return nil
}
