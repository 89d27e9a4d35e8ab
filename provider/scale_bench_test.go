package provider

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"
)

// The scale benchmarks (make bench-scale) print figures rather than pass
// or fail on them: a no-change plan of many resources against its floor,
// and an apply of many machines against an apply of one. They run only
// with BENCH_SCALE=1, with the terraform of TF_ACC_TERRAFORM_PATH, the
// provider served in the test process (TF_REATTACH_PROVIDERS) next to an
// in-process provisiond with simulated BMCs and agents.

const baremetalAddress = "registry.terraform.io/rackform/baremetal"

func requireScaleBench(t *testing.T) {
	t.Helper()
	if os.Getenv("BENCH_SCALE") == "" {
		t.Skip("scale benchmark: set BENCH_SCALE=1 (make bench-scale)")
	}
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		t.Fatal("no terraform binary: run `make tools` or set TF_ACC_TERRAFORM_PATH")
	}
}

// envInt is the integer environment variable name, else def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// reattach is one entry of TF_REATTACH_PROVIDERS.
type reattach struct {
	Protocol        string
	ProtocolVersion int
	Pid             int
	Test            bool
	Addr            struct{ Network, String string }
}

// serveProvider serves a provider from the test process, as
// terraform-plugin-testing does, until the test ends; it returns the
// provider's entry of TF_REATTACH_PROVIDERS.
func serveProvider(t *testing.T, address string, factory func() tfprotov6.ProviderServer) reattach {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfgCh := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- tf6server.Serve(address, factory,
			tf6server.WithDebug(ctx, cfgCh, closed),
			tf6server.WithGoPluginLogger(hclog.NewNullLogger()),
			tf6server.WithoutLogStderrOverride())
	}()
	var cfg *plugin.ReattachConfig
	select {
	case cfg = <-cfgCh:
	case err := <-served:
		cancel()
		t.Fatalf("serve %s: %v", address, err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("serve %s: no reattach configuration within 30s", address)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Errorf("provider %s did not stop within 10s", address)
		}
	})
	r := reattach{Protocol: string(cfg.Protocol), ProtocolVersion: cfg.ProtocolVersion, Pid: cfg.Pid, Test: cfg.Test}
	r.Addr.Network, r.Addr.String = cfg.Addr.Network(), cfg.Addr.String()
	return r
}

// tfDir is a Terraform working directory driven by the CLI.
type tfDir struct {
	bin, dir string
	env      []string
}

// newTFDir makes a working directory whose CLI runs the providers of
// plugins (registry source → directory of its terraform-provider-NAME
// binary, through dev_overrides, as Terraform runs any plugin) or reaches
// those of reattach (served by this process).
func newTFDir(t *testing.T, plugins map[string]string, providers map[string]reattach) *tfDir {
	t.Helper()
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "TF_LOG") || strings.HasPrefix(kv, "TF_CLI_ARGS") || strings.HasPrefix(kv, "TF_REATTACH")
	})
	d := &tfDir{bin: os.Getenv("TF_ACC_TERRAFORM_PATH"), dir: t.TempDir()}
	var rc strings.Builder
	rc.WriteString("provider_installation {\n  dev_overrides {\n")
	for src, dir := range plugins {
		fmt.Fprintf(&rc, "    %q = %q\n", src, dir)
	}
	rc.WriteString("  }\n  direct {}\n}\n")
	cli := filepath.Join(d.dir, "cli.tfrc")
	if err := os.WriteFile(cli, []byte(rc.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(env, "TF_CLI_CONFIG_FILE="+cli, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	if len(providers) > 0 {
		raw, err := json.Marshal(providers)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "TF_REATTACH_PROVIDERS="+string(raw))
	}
	d.env = env
	return d
}

// buildPlugin builds a provider binary named terraform-provider-NAME into
// a directory of its own and returns the directory.
func buildPlugin(t *testing.T, name, pkg string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "terraform-provider-"+name), pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return dir
}

// write replaces the directory's configuration.
func (d *tfDir) write(t *testing.T, config string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.dir, "main.tf"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
}

// run runs the CLI and returns how long it took and its exit code; a
// code other than those in ok fails the test with the output.
func (d *tfDir) run(t *testing.T, ok []int, args ...string) (time.Duration, int) {
	t.Helper()
	r := d.exec(t, ok, args...)
	return r.wall, r.code
}

// ran is what a run of the CLI took.
type ran struct {
	wall, cpu time.Duration // cpu: the CLI's and the plugins' it waited for
	code      int
	out       string // stdout and stderr
}

// exec is run with the CPU time used.
func (d *tfDir) exec(t *testing.T, ok []int, args ...string) ran {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Dir, cmd.Env = d.dir, d.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := ran{wall: time.Since(start)}
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("terraform %s: %v", strings.Join(args, " "), err)
	}
	r.cpu, r.out = cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime(), out.String()
	if !slices.Contains(ok, r.code) {
		s := out.String()
		if len(s) > 8000 {
			s = s[:4000] + "\n...\n" + s[len(s)-4000:]
		}
		t.Fatalf("terraform %s: exit %d after %s:\n%s", strings.Join(args, " "), r.code, r.wall.Round(time.Millisecond), s)
	}
	return r
}

// noChangePlan times a plan that must find nothing to change, and
// returns the CPU time of terraform and the plugins it ran.
func (d *tfDir) noChangePlan(t *testing.T, extra ...string) (wall, cpu time.Duration) {
	t.Helper()
	r := d.exec(t, []int{0}, append([]string{"plan", "-input=false", "-lock=false", "-detailed-exitcode"}, extra...)...)
	return r.wall, r.cpu
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// scaleConfig is n servers with one machine each on the simulated lab,
// machines of them installed.
func scaleConfig(d *testDaemon, n, machines int) string {
	return scaleHCL(d.ProviderConfig(), n, machines)
}

// likeConfig is scaleConfig for the floor's resources of our shape
// (benchfloor's floor_like_*): the same HCL, values and references.
func likeConfig(n, machines int) string {
	return strings.NewReplacer(
		`baremetal = { source = "rackform/baremetal" }`, `floor = { source = "bench/floor" }`,
		"baremetal_", "floor_like_",
	).Replace(scaleHCL("", n, machines))
}

func scaleHCL(providerConfig string, n, machines int) string {
	tpl := "version: \"0.1\"\nname: scale\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n" +
		"      - name: install\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n"
	return hcl(`
terraform {
  required_providers {
    baremetal = { source = "rackform/baremetal" }
  }
}
`, providerConfig, fmt.Sprintf(`
resource "baremetal_template" "scale" {
  name    = "scale"
  content = %q
}

resource "baremetal_hardware" "node" {
  count    = %d
  id       = "node${count.index}"
  hostname = "node${count.index}"
  interfaces = [{
    mac = format("52:54:00:01:%%02x:%%02x", floor(count.index / 256), count.index %% 256)
    ip  = "10.20.${floor(count.index / 250)}.${count.index %% 250 + 1}/16"
  }]
  disks = ["/dev/vda"]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    username = "admin"
    password = "bmc-pw"
  }
}

resource "baremetal_machine" "node" {
  count       = %d
  hardware_id = baremetal_hardware.node[count.index].id
  template_id = baremetal_template.scale.id
  parameters  = { image = "v1" }
  timeouts {
    create = "10m"
  }
}
`, tpl, n, machines))
}

// rackConfig is n servers installed through examples/modules/rack, one
// module instance per server, on addresses of their own (beside
// scaleConfig's on the same provisiond).
func rackConfig(t *testing.T, d *testDaemon, n int) string {
	abs, err := filepath.Abs("../examples/modules/rack")
	if err != nil {
		t.Fatal(err)
	}
	return hcl(`
terraform {
  required_providers {
    baremetal = { source = "rackform/baremetal" }
  }
}
`, d.ProviderConfig(), fmt.Sprintf(`
module "rack" {
  source = %q
  servers = { for i in range(%d) : "rack-node${i}" => {
    mac     = format("52:54:00:02:%%02x:%%02x", floor(i / 256), i %% 256)
    address = "10.21.${floor(i / 250)}.${i %% 250 + 1}/16"
    disks   = ["/dev/vda"]
    bmc     = { address = "127.0.0.1", username = "admin", verify = false }
  } }
  bmc_passwords = { for i in range(%d) : "rack-node${i}" => "bmc-pw" }
  template = {
    name    = "rack"
    content = "version: \"0.1\"\nname: rack\nglobal_timeout: 600\ntasks:\n  - name: install\n    actions:\n      - name: install\n        image: exec\n        timeout: 60\n        command: [\"true\"]\n"
  }
  parameters = { image = "v1" }
  timeouts   = { create = "10m" }
}
`, abs, n, n))
}

// floorConfig is the same count of the floor provider's three-attribute
// resources, the machines depending on the hardware as above.
func floorConfig(n int) string {
	return fmt.Sprintf(`
terraform {
  required_providers {
    floor = { source = "bench/floor" }
  }
}

resource "floor_hardware" "node" {
  count = %d
  name  = "node${count.index}"
  value = format("52:54:00:01:%%02x:%%02x", floor(count.index / 256), count.index %% 256)
}

resource "floor_machine" "node" {
  count = %d
  name  = floor_hardware.node[count.index].id
  value = "v1"
}
`, n, n)
}

// TestScalePlan: a no-change plan of BENCH_SCALE_N (1,000)
// baremetal_hardware and as many baremetal_machine against provisiond,
// of the same configuration on the floor's resources of our schemas
// (floor_like_*), of as many three-attribute floor resources, and with
// BENCH_SCALE_RACK=1 of as many servers through examples/modules/rack, in
// turns, BENCH_SCALE_RUNS (3) times each; prints the medians, the CPU time
// of terraform and its plugin, and the ratios, with and without refresh.
// BENCH_SCALE_PROFILE=FILE writes a CPU profile of the test process
// (provider and provisiond) during one of our plans.
func TestScalePlan(t *testing.T) {
	requireScaleBench(t)
	n, runs := envInt(t, "BENCH_SCALE_N", 1000), envInt(t, "BENCH_SCALE_RUNS", 3)
	d, _ := startSimLab(t)
	ourPlugin := buildPlugin(t, "baremetal", "github.com/rackform/terraform-provider-baremetal")
	floorPlugin := buildPlugin(t, "floor", "github.com/rackform/terraform-provider-baremetal/provider/internal/benchfloor/cmd/terraform-provider-floor")
	dirs := []struct {
		name, config string
		dir          *tfDir
	}{
		{"baremetal", scaleConfig(d, n, n), newTFDir(t, map[string]string{"rackform/baremetal": ourPlugin}, nil)},
		{"floor of our schemas", likeConfig(n, n), newTFDir(t, map[string]string{"bench/floor": floorPlugin}, nil)},
		{"floor of 3 attributes", floorConfig(n), newTFDir(t, map[string]string{"bench/floor": floorPlugin}, nil)},
	}
	if os.Getenv("BENCH_SCALE_RACK") != "" {
		dirs = append(dirs, struct {
			name, config string
			dir          *tfDir
		}{"baremetal through examples/modules/rack", rackConfig(t, d, n), newTFDir(t, map[string]string{"rackform/baremetal": ourPlugin}, nil)})
	}
	for _, x := range dirs {
		x.dir.write(t, x.config)
		x.dir.run(t, []int{0}, "get") // modules (init would query the registry for the dev-overridden providers)
		took, _ := x.dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve", "-parallelism=50")
		t.Logf("setup: apply of %d + %d resources of the %s (-parallelism=50): %s", n, n, x.name, secs(took))
	}

	if p := os.Getenv("BENCH_SCALE_PROFILE"); p != "" {
		profilePlan(t, d, dirs[0].dir, p)
	}

	for _, mode := range []struct {
		name string
		args []string
	}{{"plan", nil}, {"plan -refresh=false", []string{"-refresh=false"}}} {
		wall := make([][]time.Duration, len(dirs))
		cpu := make([][]time.Duration, len(dirs))
		for range runs {
			for i, x := range dirs {
				w, c := x.dir.noChangePlan(t, mode.args...)
				wall[i], cpu[i] = append(wall[i], w), append(cpu[i], c)
			}
		}
		ours := median(wall[0])
		for i, x := range dirs {
			m := median(wall[i])
			ratio := ""
			if i > 0 {
				ratio = fmt.Sprintf(", baremetal/this %.2fx", ours.Seconds()/m.Seconds())
			}
			t.Logf("no-change %s, %d+%d resources, %s: median of %d %s (CPU, terraform and plugin, %s)%s (runs: %v)",
				mode.name, n, n, x.name, runs, secs(m), secs(median(cpu[i])), ratio, wall[i])
		}
	}
}

// profilePlan runs one no-change plan of ours' state with the provider
// served by this process instead, and writes a CPU profile of the process
// (provider and provisiond) to file. The provider's log goes where a
// plugin's goes, as JSON lines to its stderr: here a file.
func profilePlan(t *testing.T, d *testDaemon, ours *tfDir, file string) {
	t.Helper()
	logFile, err := os.Create(filepath.Join(t.TempDir(), "provider.log"))
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = logFile
	defer func() { os.Stderr = stderr; _ = logFile.Close() }()
	in := newTFDir(t, nil, map[string]reattach{
		baremetalAddress: serveProvider(t, baremetalAddress, providerserver.NewProtocol6(New("bench")())),
	})
	state, err := os.ReadFile(filepath.Join(ours.dir, "terraform.tfstate"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(ours.dir, "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	in.write(t, string(cfg))
	if err := os.WriteFile(filepath.Join(in.dir, "terraform.tfstate"), state, 0o600); err != nil {
		t.Fatal(err)
	}
	in.run(t, []int{0}, "init", "-input=false")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	took, _ := in.noChangePlan(t)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := logFile.Stat()
	t.Logf("profiled plan (provider in the test process): %s, its log %d bytes, CPU profile in %s", secs(took), st.Size(), file)
}

// TestScaleApply: an apply that installs BENCH_SCALE_MACHINES (20)
// machines against one that installs one, each on a fresh provisiond with
// simulated BMCs and agents whose hardware and template a first apply
// created; the many with Terraform's default -parallelism=10 and with
// -parallelism equal to their count. Once with agents that report each
// action at once, which leaves Terraform's and the provider's own cost per
// machine, next to the same applies of the floor's resources of our
// schemas; once with agents whose action takes BENCH_SCALE_ACTION (5s), as
// an install takes its time, which shows whether installs run side by
// side. Prints the medians and ratios.
func TestScaleApply(t *testing.T) {
	requireScaleBench(t)
	many := envInt(t, "BENCH_SCALE_MACHINES", 20)
	actionTime, err := time.ParseDuration(cmp.Or(os.Getenv("BENCH_SCALE_ACTION"), "5s"))
	if err != nil {
		t.Fatalf("BENCH_SCALE_ACTION: %v", err)
	}
	plugin := buildPlugin(t, "baremetal", "github.com/rackform/terraform-provider-baremetal")
	floorPlugin := buildPlugin(t, "floor", "github.com/rackform/terraform-provider-baremetal/provider/internal/benchfloor/cmd/terraform-provider-floor")
	apply := func(n, parallelism int, action time.Duration) time.Duration {
		d, bmc := startSimLab(t)
		bmc.ActionTime = action
		dir := newTFDir(t, map[string]string{"rackform/baremetal": plugin}, nil)
		dir.write(t, scaleConfig(d, n, 0))
		dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve")
		dir.write(t, scaleConfig(d, n, n))
		took, _ := dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve", fmt.Sprintf("-parallelism=%d", parallelism))
		dir.noChangePlan(t)
		return took
	}
	applyFloor := func(n, parallelism int) time.Duration {
		dir := newTFDir(t, map[string]string{"bench/floor": floorPlugin}, nil)
		dir.write(t, likeConfig(n, 0))
		dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve")
		dir.write(t, likeConfig(n, n))
		took, _ := dir.run(t, []int{0}, "apply", "-input=false", "-auto-approve", fmt.Sprintf("-parallelism=%d", parallelism))
		return took
	}
	// Each figure is the median of BENCH_SCALE_RUNS (3) applies, each on a
	// fresh provisiond and working directory.
	runs := envInt(t, "BENCH_SCALE_RUNS", 3)
	med := func(f func() time.Duration) time.Duration {
		var ds []time.Duration
		for range runs {
			ds = append(ds, f())
		}
		return median(ds)
	}
	for _, action := range []time.Duration{0, actionTime} {
		one := med(func() time.Duration { return apply(1, 10, action) })
		def := med(func() time.Duration { return apply(many, 10, action) })
		wide := med(func() time.Duration { return apply(many, many, action) })
		t.Logf("agents' actions taking %s: apply of 1 machine: %s; of %d machines: %s with -parallelism=10 (%.2fx), %s with -parallelism=%d (%.2fx)",
			action, secs(one), many, secs(def), def.Seconds()/one.Seconds(), secs(wide), many, wide.Seconds()/one.Seconds())
		if action == 0 {
			fOne := med(func() time.Duration { return applyFloor(1, 10) })
			fWide := med(func() time.Duration { return applyFloor(many, many) })
			t.Logf("the floor of our schemas: apply of 1 machine: %s; of %d: %s with -parallelism=%d (%.2fx); baremetal/floor: 1: %.2fx, %d: %.2fx",
				secs(fOne), many, secs(fWide), many, fWide.Seconds()/fOne.Seconds(), one.Seconds()/fOne.Seconds(), many, wide.Seconds()/fWide.Seconds())
		}
	}
}
