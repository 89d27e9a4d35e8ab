// Package e2e holds the end-to-end test: real terraform applies
// examples/demo against a real provisiond, whose BMCs (ipmi_sim) power QEMU
// VMs that PXE-boot the agent OS, get the demo OS written to their disks and
// boot it; TestE2EDebian does the same with examples/debian and a real
// Debian 12, TestE2EGuide with the first-rack guide's commands as written.
// Run them with `make e2e` (root, Debian's qemu-system-x86, ipxe,
// openipmi, ipmitool, ovmf, openssh-client; the agent OS, demo image and
// Debian image built).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Console lines that mark the phases of an install.
var (
	reScript    = regexp.MustCompile(`provisiond: booting the agent OS`)
	reAgent     = regexp.MustCompile(`agent starting`)
	reAction    = regexp.MustCompile(`action started.*task=install`)
	reDemoBoot  = regexp.MustCompile(`DEMO-OS booting`)
	reWipeStart = regexp.MustCompile(`action started.*task=deprovision`)
)

func TestE2E(t *testing.T) {
	root := requireLab(t)
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	uefi := true
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		uefi = false
		t.Logf("OVMF not installed (apt-get install ovmf): both servers boot legacy BIOS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	rack := startRack(t, ctx, root, dir, bin, "e2e", 2, uefi)
	consoles := rack.consoles
	t.Logf("%6.1fs rack up: namespace %s, %d servers, provisiond serving", since(start), rack.NS.Name, len(rack.Servers))
	admin := rack.admin(t, ctx)

	tf := newTerraform(t, ctx, rack.Rack, root, terraform, filepath.Join(bin, "terraform-provider-baremetal"), dir, "demo")
	tf.run("init", "-input=false", "-no-color")

	// 1. Install both servers.
	marks := map[string]int{}
	for name, c := range consoles {
		marks[name] = c.Len()
	}
	applyStart := time.Now()
	tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs apply: both servers installed in %.1fs", since(start), since(applyStart))
	outputs := tf.machines()
	for _, s := range rack.Servers {
		m := outputs[s.Name]
		if m.State != "succeeded" || m.IP != strings.Split(s.Address, "/")[0] {
			t.Errorf("%s: output %+v, want state succeeded and ip %s", s.Name, m, s.Address)
		}
		checkInstalled(t, ctx, admin, consoles[s.Name], marks[s.Name], s, "revision 1", applyStart)
		checkDisk(t, ctx, filepath.Join(root, "build/images/demo-os.raw"), s, true)
	}

	// 2. A parameter change reinstalls node-1; provisiond is killed with
	// SIGKILL while its agent runs an action, and restarted.
	s1 := rack.Servers[0]
	before, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: outputs[s1.Name].HardwareID})
	if err != nil {
		t.Fatal(err)
	}
	tf.vars["server_revisions"] = map[string]string{s1.Name: "2"}
	tf.writeVars()
	mark := consoles[s1.Name].Len()
	reinstall := time.Now()
	apply := tf.start("apply", "-auto-approve", "-input=false", "-no-color")
	if _, _, err := consoles[s1.Name].Wait(ctx, mark, reAction); err != nil {
		t.Fatal(err)
	}
	if err := rack.Daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	time.Sleep(2 * time.Second)
	if err := rack.Daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%6.1fs provisiond killed (SIGKILL) during %s's install and restarted in %.1fs", since(start), s1.Name, since(killed))
	apply.wait()
	t.Logf("%6.1fs reinstall of %s took %.1fs", since(start), s1.Name, since(reinstall))
	after := checkInstalled(t, ctx, admin, consoles[s1.Name], mark, s1, "revision 1", reinstall)
	if after.GetWorkflow().GetId() == before.GetWorkflow().GetId() {
		t.Errorf("%s: the parameter change did not reinstall (workflow %s before and after)", s1.Name, after.GetWorkflow().GetId())
	}
	if o := tf.machines()[rack.Servers[1].Name]; o.WorkflowID != outputs[rack.Servers[1].Name].WorkflowID {
		t.Errorf("%s was reinstalled too (workflow %s, was %s)", rack.Servers[1].Name, o.WorkflowID, outputs[rack.Servers[1].Name].WorkflowID)
	}

	// 3. Destroy: every server boots the agent again, its disk is wiped
	// and it is powered off.
	destroyAndCheck(t, ctx, tf, rack, admin, start)
}

// checkInstalled waits for the installed OS to print its host name and
// user-data on the console, logs the install's phases, and returns the
// machine.
func checkInstalled(t *testing.T, ctx context.Context, admin *client.Client, c *lab.Console, from int, s *lab.Server, userData string, t0 time.Time) *pb.Machine {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	phases := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"iPXE script", reScript},
		{"agent running", reAgent},
		{"first action", reAction},
		{"installed OS booting", reDemoBoot},
		{"hostname from metadata", regexp.MustCompile(`DEMO-OS hostname=` + regexp.QuoteMeta(s.Name) + `$`)},
		{"user-data from metadata", regexp.MustCompile(regexp.QuoteMeta(userData))},
	}
	// Phases count from the PXE power-on the BMC carried out (its power
	// log), so they read as what the server took, not what terraform did.
	i := from
	if on, ok := pxePowerOn(s, t0); ok {
		t0 = on
		i = max(from, c.IndexAt(on))
	}
	var report []string
	for _, p := range phases {
		j, l, err := c.Wait(wctx, i, p.re)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			return nil
		}
		i = j
		report = append(report, fmt.Sprintf("%s %.1fs", p.name, l.At.Sub(t0).Seconds()))
	}
	t.Logf("  %s (%s): %s", s.Name, s.BMC.VM.FirmwareName(), strings.Join(report, ", "))
	hw, err := admin.ListHardware(ctx, &pb.ListHardwareRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hw.GetHardware() {
		if h.GetHostname() != s.Name {
			continue
		}
		m, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: h.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		w := m.GetWorkflow()
		if w.GetState() != pb.State_STATE_SUCCEEDED {
			t.Errorf("%s: workflow %s is %s", s.Name, w.GetId(), w.GetState())
		}
		for _, a := range w.GetActions() {
			t.Logf("    action %s/%s: %s, attempt %d, took %.1fs, done %.1fs after power-on", a.GetTask(), a.GetName(), a.GetState(), a.GetAttempt(),
				a.GetFinishedAt().AsTime().Sub(a.GetStartedAt().AsTime()).Seconds(), a.GetFinishedAt().AsTime().Sub(t0).Seconds())
		}
		return m
	}
	t.Errorf("%s: no hardware with that host name", s.Name)
	return nil
}

// pxePowerOn returns the time of the last PXE power-on (or reset into PXE)
// after t0 in the server's BMC power log.
func pxePowerOn(s *lab.Server, t0 time.Time) (time.Time, bool) {
	var last time.Time
	for _, line := range strings.Split(lab.ReadLog(filepath.Join(s.BMC.VM.Dir, "bmc", "power.log")), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] != "power" || f[3] != "order=n" {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		at := time.Unix(0, int64(sec*1e9))
		if at.After(t0) {
			last = at
		}
	}
	return last, !last.IsZero()
}

// checkDisk compares the server's disk with the image (installed) or
// checks that its first and last MiB read back as zeros (wiped).
func checkDisk(t *testing.T, ctx context.Context, image string, s *lab.Server, installed bool) {
	t.Helper()
	disk := s.BMC.VM.Disk
	if installed {
		// -U: the VM runs and holds the image's lock; the demo OS never
		// writes to its disk.
		out, err := exec.CommandContext(ctx, "qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", image, disk).CombinedOutput()
		if err != nil {
			t.Errorf("%s: disk differs from the demo image: %v: %s", s.Name, err, out)
		}
		return
	}
	raw := disk + ".raw"
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-U", "-O", "raw", disk, raw).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", s.Name, err, out)
	}
	defer func() {
		if err := os.Remove(raw); err != nil {
			t.Errorf("remove the raw copy of the disk: %v", err)
		}
	}()
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	const mib = 1 << 20
	zero := make([]byte, mib)
	if !bytes.Equal(b[:mib], zero) || !bytes.Equal(b[len(b)-mib:], zero) {
		t.Errorf("%s: first or last MiB of the disk not zero after destroy", s.Name)
	}
}

// tfRunner runs the real terraform inside the rack's namespace on a copy of
// examples/ (the configuration, modules, templates).
type tfRunner struct {
	t    *testing.T
	ctx  context.Context
	ns   *lab.NetNS
	bin  string
	dir  string // the configuration (examples/demo, examples/debian)
	env  []string
	vars map[string]any
}

func newTerraform(t *testing.T, ctx context.Context, rack *lab.Rack, root, terraform, provider, dir, config string) *tfRunner {
	t.Helper()
	work := filepath.Join(dir, "examples")
	// Only the sources: a `make demo` lab may have left its state and
	// lab.auto.tfvars.json in examples/demo.
	for _, sub := range []string{config, "modules", "templates"} {
		err := filepath.WalkDir(filepath.Join(root, "examples", sub), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if ext := filepath.Ext(path); ext != ".tf" && ext != ".yaml" {
				return nil
			}
			rel, err := filepath.Rel(filepath.Join(root, "examples"), path)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(work, rel)), 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(work, rel), b, 0o644)
		})
		if err != nil {
			t.Fatalf("copy examples: %v", err)
		}
	}
	rc, err := lab.InstallProvider(provider, filepath.Join(dir, "terraform"), "0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tf := &tfRunner{t: t, ctx: ctx, ns: rack.NS, bin: terraform, dir: filepath.Join(work, config),
		env: []string{"TF_CLI_CONFIG_FILE=" + rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_LOG=info", "TF_LOG_PATH=" + filepath.Join(dir, "terraform.log")},
		vars: map[string]any{
			"servers":     rack.TerraformServers(),
			"secrets_dir": filepath.Join(rack.Config.Dir, "secrets"),
			"endpoint":    lab.RackGRPC,
		}}
	tf.writeVars()
	return tf
}

func (tf *tfRunner) writeVars() {
	b, err := json.MarshalIndent(tf.vars, "", "  ")
	if err != nil {
		tf.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tf.dir, "terraform.tfvars.json"), b, 0o600); err != nil {
		tf.t.Fatal(err)
	}
}

type tfRun struct {
	tf   *tfRunner
	cmd  *exec.Cmd
	out  bytes.Buffer
	args []string
}

func (tf *tfRunner) start(args ...string) *tfRun {
	r := &tfRun{tf: tf, args: args}
	r.cmd = tf.ns.Command(tf.ctx, tf.bin, append([]string{"-chdir=" + tf.dir}, args...)...)
	r.cmd.Env = append(os.Environ(), tf.env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		tf.t.Fatal(err)
	}
	return r
}

func (r *tfRun) wait() string {
	r.tf.t.Helper()
	if err := r.cmd.Wait(); err != nil {
		r.tf.t.Fatalf("terraform %s: %v\n%s", strings.Join(r.args, " "), err, r.out.String())
	}
	return r.out.String()
}

func (tf *tfRunner) run(args ...string) string {
	tf.t.Helper()
	return tf.start(args...).wait()
}

type machineOutput struct {
	HardwareID    string `json:"hardware_id"`
	IP            string `json:"ip"`
	State         string `json:"state"`
	ProvisionedAt string `json:"provisioned_at"`
	WorkflowID    string `json:"workflow_id"`
}

func (tf *tfRunner) machines() map[string]machineOutput {
	tf.t.Helper()
	out := tf.run("output", "-json", "machines")
	var m map[string]machineOutput
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		tf.t.Fatalf("terraform output machines: %v: %s", err, out)
	}
	return m
}

// destroyAndCheck runs terraform destroy and checks what it must leave:
// every server booted the agent again and started its wipe, ended powered
// off with its disk wiped, provisiond holds no machine, and its store,
// once provisiond is stopped, passes its check.
func destroyAndCheck(t *testing.T, ctx context.Context, tf *tfRunner, rack *rackUnderTest, admin *client.Client, start time.Time) {
	t.Helper()
	marks := map[string]int{}
	for name, c := range rack.consoles {
		marks[name] = c.Len()
	}
	destroy := time.Now()
	tf.run("destroy", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs destroy took %.1fs", since(start), since(destroy))
	for _, s := range rack.Servers {
		if _, l, err := rack.consoles[s.Name].Wait(ctx, marks[s.Name], reWipeStart); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		} else {
			t.Logf("  %s: wipe started %.1fs into destroy", s.Name, l.At.Sub(destroy).Seconds())
		}
		if out, err := s.BMC.Ipmitool(ctx, "chassis", "power", "status"); err != nil || out != "Chassis Power is off" {
			t.Errorf("%s: power after destroy: %q %v", s.Name, out, err)
		}
		checkDisk(t, ctx, "", s, false)
	}
	machines, err := admin.ListMachines(ctx, &pb.ListMachinesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(machines.GetMachines()); n != 0 {
		t.Errorf("after destroy provisiond holds %d machines", n)
	}
	if err := rack.Daemon.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(rack.Config.Dir, "provisiond", "provisiond.db"), store.Options{})
	if err != nil {
		t.Fatalf("store after the run: %v", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}()
	if err := st.Check(ctx); err != nil {
		t.Errorf("store check: %v", err)
	}
	t.Logf("%6.1fs done", since(start))
}
