// Package gobuild is the test kit's build-once helper: the binaries tests
// run as processes (provisiond, the agent, the provider, plainboot) are
// built with the go command once per test process and options, into one
// temporary directory that Main removes when the tests end.
package gobuild

import (
	"context"
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

type binary struct {
	once sync.Once
	n    int // its directory under dir
	path string
	err  error
}

var (
	mu    sync.Mutex
	dir   string // made by the first build
	built = map[string]*binary{}
)

// Build returns the path of the binary of pkg, a package of this module
// named from the module's root ("./provisiond", "." for the provider),
// built with o the first time it is asked for in this process (which is
// logged with how long it took); a failed build fails t. The file is named
// like the package (the module's last path element for "."), alone in its
// directory.
func Build(t TB, pkg string, o Options) string {
	t.Helper()
	key := fmt.Sprintf("%q %q %q", pkg, o.Flags, o.Env)
	mu.Lock()
	b, ok := built[key]
	if !ok {
		b = &binary{n: len(built)}
		built[key] = b
	}
	mu.Unlock()
	var took time.Duration // set only for the caller that builds
	b.once.Do(func() {
		start := time.Now()
		b.path, b.err = build(pkg, o, b.n)
		took = time.Since(start)
	})
	if took > 0 && b.err == nil {
		t.Logf("built %s in %s", pkg, took.Round(time.Millisecond))
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func build(pkg string, o Options, n int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The module's directory and path, from the test's working directory.
	mod, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}\n{{.Path}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	root, modPath, _ := strings.Cut(strings.TrimSpace(string(mod)), "\n")
	name := path.Base(pkg)
	if pkg == "." {
		name = path.Base(modPath)
	}
	mu.Lock()
	if dir == "" {
		dir, err = os.MkdirTemp("", "baremetal-testbin-")
	}
	out := filepath.Join(dir, fmt.Sprint(n), name)
	mu.Unlock()
	if err != nil {
		return "", fmt.Errorf("make the test binaries' directory: %w", err)
	}
	args := append(append([]string{"build"}, o.Flags...), "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = root, append(os.Environ(), o.Env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// Main runs the tests (m is TestMain's *testing.M), then removes the
// binaries built: TestMain calls os.Exit(gobuild.Main(m)).
func Main(m interface{ Run() int }) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			// Left in the temp dir: worth a line, not a failed run.
			fmt.Fprintln(os.Stderr, "gobuild: remove the test binaries:", err)
		}
	}
	return code
}
