package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// TestE2EGuide: the real-rack commands of the first-rack guide
// (docs/guides/first-rack.md) and the README, read from the Markdown at
// test time (guide_docs_test.go), run as written in a lab shaped as they
// say: a network namespace whose eno1 holds the provisioning host's
// address, a UEFI QEMU server with the guide's MAC and a SATA disk
// (/dev/sda) on that segment, its ipmi_sim BMC answering at the guide's
// BMC address (on the namespace's loopback), and a private mount
// namespace in which /etc, /var/lib, /srv and /usr/local are overlays on
// the host's, their writes in the test's directory, and /etc/hosts names
// provisiond.example. So the guide's adduser, mkdir, install, chown and
// openssl run unchanged and touch nothing of the host.
//
// What the test supplies that the documents assume, all of it here:
//   - the checkout the guide's commands run in: bin/provisiond built by the
//     test, build/agent-os and build/images linked to what make e2e built;
//   - guideEdits (guide_docs_test.go): the lines replaced or dropped, why;
//   - terraform on PATH is bin/terraform, and TF_CLI_CONFIG_FILE installs
//     rackform/baremetal from the provider the test built (no registry);
//   - Terraform's prompts are answered as an operator would: the BMC
//     password (the lab BMC's) and "yes".
//
// The guide's template installs Debian 12 (make debian-image) with the
// firmware's own disk boot after the BMC reset (no kexec); the installed
// OS phones home, which ends the apply. terraform destroy then wipes the
// disk and powers the server off.
func TestE2EGuide(t *testing.T) {
	root := requireLab(t)
	lab.RequireBinaries(t, "nsenter", "unshare", "openssl", "curl", "adduser")
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		t.Fatalf("OVMF missing (apt-get install ovmf): the guide's server is UEFI (%v)", err)
	}
	for _, f := range []string{"build/images/debian-12.raw.zst", "build/images/debian-12.raw.zst.sha256"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("the Debian image is not built: `make debian-image` (%v)", err)
		}
	}
	plan := readGuidePlan(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()

	// The checkout the guide's commands run in.
	checkout := filepath.Join(dir, "checkout")
	build(t, ctx, root, checkout, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	for _, f := range []string{"build/agent-os/vmlinuz", "build/agent-os/initramfs", "build/images/debian-12.raw.zst", "build/images/debian-12.raw.zst.sha256"} {
		mustLink(t, filepath.Join(root, f), filepath.Join(checkout, f))
	}
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	w := startGuideWorld(t, ctx, plan, dir)
	t.Logf("%6.1fs lab up: namespace %s, %s %s/%s, server %s behind BMC %s:623, %s", since(start), w.ns.Name,
		plan.Interface, plan.PublicIP, prefixOf(plan.Address), plan.MAC, plan.BMCAddress, plan.Endpoint)

	// The shells: tools first on PATH, the provider from the test's mirror.
	tools := filepath.Join(dir, "tools")
	mustLink(t, terraform, filepath.Join(tools, "terraform"))
	rc, err := lab.InstallProvider(filepath.Join(checkout, "bin", "terraform-provider-baremetal"), filepath.Join(dir, "tfmirror"), "0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	w.env = guideEnv(tools, filepath.Join(dir, "home"), rc)
	tfdir := filepath.Join(dir, "server1")
	if err := os.MkdirAll(tfdir, 0o755); err != nil {
		t.Fatal(err)
	}
	setup := plan.role(t, roleSetup)[0].Script

	// 1-3: install, token and TLS, start provisiond, copy the image.
	for _, s := range plan.steps {
		switch s.Role {
		case roleRun:
			w.run(t, ctx, s, checkout, s.Script)
		case roleDaemon:
			w.startDaemon(t, ctx, s)
			h := plan.role(t, roleHealth)[0]
			if out := w.run(t, ctx, h, checkout, h.Script); lastLine(out) != "ok" { // curl: its progress meter, then the body
				t.Fatalf("%s: /healthz answered %q", h, out)
			}
		}
	}
	t.Logf("%6.1fs steps 1-3 done: provisiond up, image in /srv/images", since(start))

	// 4: the shell setup; provisiond ctl hardware lists nothing yet.
	s4 := plan.role(t, roleSetup)[0]
	if out := w.run(t, ctx, s4, checkout, s4.Script); !strings.Contains(out, "HOSTNAME") || strings.Contains(out, plan.MAC) {
		t.Fatalf("%s: want an empty hardware table, got:\n%s", s4, out)
	}
	admin := w.admin(t, ctx, plan)

	// 5-6: main.tf, then apply with the watch commands beside it.
	hcl := plan.role(t, roleHCL)[0]
	if err := os.WriteFile(filepath.Join(tfdir, "main.tf"), []byte(hcl.Body), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := plan.role(t, roleApply)[0]
	watch := plan.role(t, roleWatch)[0]
	mark := w.console.Len()
	applyStart := time.Now()
	watchDone := make(chan shellResult, 1)
	go func() {
		// "Beside it": once the workflow exists, from a shell set up as in step 4.
		if err := waitWorkflow(ctx, admin, plan.HardwareID); err != nil {
			watchDone <- shellResult{err: err}
			return
		}
		out, err := w.output(ctx, watch, tfdir, setup+"\n"+watch.Script)
		watchDone <- shellResult{out, err, time.Now()}
	}()
	out := w.answering(t, ctx, apply, tfdir, setup+"\n"+apply.Script, map[string]string{
		"var.bmc_password":                      w.bmc.Password,
		"Do you want to perform these actions?": "yes",
	})
	applied := time.Now()
	t.Logf("%6.1fs apply returned after %.1fs", since(start), since(applyStart))
	ip := strings.Split(plan.Address, "/")[0]
	if !regexp.MustCompile(`(?m)^server1_ip = "` + regexp.QuoteMeta(ip) + `"`).MatchString(stripANSI(out)) {
		t.Errorf("apply's outputs have no server1_ip = %q:\n%s", ip, lab.Tail([]byte(stripANSI(out)), 1500))
	}
	server := &lab.Server{Name: plan.Hostname, MAC: plan.MAC, Address: plan.Address, BMC: w.bmc}
	key := strings.Fields(match(t, `ssh_keys\s*=\s*\["([^"]+)"\]`, hcl.Body, "the machine's ssh_keys"))
	guidePhases(t, ctx, admin, w.console, mark, server, plan.HardwareID, key[len(key)-1], applyStart)

	select {
	case r := <-watchDone:
		if r.err != nil {
			t.Errorf("%s: %v\n%s", watch, r.err, r.out)
		} else {
			t.Logf("  the watch commands ended %.1fs after the apply started (the apply: %.1fs)", r.at.Sub(applyStart).Seconds(), applied.Sub(applyStart).Seconds())
			checkWatch(t, watch, r.out, plan)
		}
	case <-time.After(2 * time.Minute):
		t.Errorf("%s: still running 2 minutes after apply returned", watch)
	}

	// The README's provider block reaches the same provisiond.
	readmeProvider(t, ctx, w, plan, dir, setup)
	t.Logf("%6.1fs README's provider block read the hardware", since(start))

	// 7: destroy.
	destroy := plan.role(t, roleDestroy)[0]
	mark = w.console.Len()
	destroyStart := time.Now()
	w.answering(t, ctx, destroy, tfdir, setup+"\n"+destroy.Script, map[string]string{
		"var.bmc_password": w.bmc.Password,
		"Do you really want to destroy all resources?": "yes",
	})
	t.Logf("%6.1fs destroy took %.1fs", since(start), since(destroyStart))
	if _, l, err := w.console.Wait(ctx, mark, reWipeStart); err != nil {
		t.Error(err)
	} else {
		t.Logf("  wipe started %.1fs into destroy", l.At.Sub(destroyStart).Seconds())
	}
	if out, err := w.bmc.Ipmitool(ctx, "chassis", "power", "status"); err != nil || out != "Chassis Power is off" {
		t.Errorf("power after destroy: %q %v", out, err)
	}
	checkDisk(t, ctx, "", server, false)
	// The destroy step's prose: the workflows stay, listed by hardware id.
	ctlWorkflows := match(t, "`(provisiond ctl workflows [^`]+)`", destroySection(t, root), "provisiond ctl workflows in step 7")
	prose := planned{mdBlock: mdBlock{Section: "7. Destroy, its prose", Lang: "ctl-workflows", Line: destroy.Line}}
	out, err = w.output(ctx, prose, tfdir, setup+"\n"+ctlWorkflows)
	if err != nil || !regexp.MustCompile(`(?m)^\S+\s+provision\s+succeeded\s`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^\S+\s+deprovision\s+succeeded\s`).MatchString(out) {
		t.Errorf("%s after destroy: want the install's and the wipe's workflows, succeeded: %v\n%s", ctlWorkflows, err, out)
	}
	t.Logf("%6.1fs done", since(start))
}

// guideWorld is the lab the guide's commands run in.
type guideWorld struct {
	ns      *lab.NetNS
	bmc     *lab.BMC
	console *lab.Console
	holder  *bgProc // the process that keeps the mount namespace
	daemon  *bgProc // provisiond, started by the guide's command
	dir     string
	env     []string
}

// The disks the guide may name, and the controller that gives a server
// that name.
var guideDisks = map[string]lab.DiskDevice{"/dev/sda": lab.SATA, "/dev/vda": lab.VirtioBlk, "/dev/nvme0n1": lab.NVMe}

// startGuideWorld builds the network and mount namespaces, the server and
// its BMC, as the plan (the documents) describe them.
func startGuideWorld(t *testing.T, ctx context.Context, p *guidePlan, dir string) *guideWorld {
	t.Helper()
	dev, ok := guideDisks[p.Disk]
	if !ok {
		t.Fatalf("the guide's disk %s: the lab has no controller that names a disk so", p.Disk)
	}
	w := &guideWorld{dir: dir}
	var err error
	if w.ns, err = lab.NewNetNS(ctx, "guide"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.close(t) })
	steps := [][]string{
		// The BMC's address, on the namespace's loopback: ipmi_sim
		// listens on it.
		{"ip", "addr", "add", p.BMCAddress + "/32", "dev", "lo"},
	}
	if err := w.ns.AddBridge(ctx, p.Interface, p.PublicIP+"/"+prefixOf(p.Address)); err != nil {
		t.Fatal(err)
	}
	if err := w.ns.AddBridgePort(ctx, "tap1", p.Interface); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if err := w.ns.Run(ctx, s[0], s[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	vm := lab.VM{Name: "server-1", Dir: filepath.Join(dir, "server-1"), Tap: "tap1", MAC: p.MAC,
		Disk: filepath.Join(dir, "server-1", "disk.qcow2"), DiskDevice: dev, MemoryMiB: 1024}
	if p.UEFI {
		// OVMF's own PXE with a virtio NIC, as a UEFI rack server's.
		vm.Firmware, vm.NoNICROM = lab.UEFI, true
	}
	if err := os.MkdirAll(vm.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Bigger than the 784 MiB image; Debian under TCG wants 1 GiB of memory.
	if err := lab.CreateDisk(ctx, vm.Disk, 2048); err != nil {
		t.Fatal(err)
	}
	w.bmc = &lab.BMC{VM: vm, Addr: p.BMCAddress, Port: 623, User: p.BMCUser, Password: "guide-" + strconv.Itoa(os.Getpid())}
	if err := w.bmc.Start(ctx, w.ns); err != nil {
		t.Fatal(err)
	}
	if w.console, err = lab.FollowConsole(ctx, vm.SerialPath(), filepath.Join(dir, "server-1.console")); err != nil {
		t.Fatal(err)
	}

	// The mount namespace: overlays whose writes land under dir/overlay,
	// and the provisioning host's name in /etc/hosts.
	host, _, err := net.SplitHostPort(p.Endpoint)
	if err != nil {
		t.Fatalf("the guide's endpoint %q: %v", p.Endpoint, err)
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, d := range []string{"/etc", "/var/lib", "/srv", "/usr/local"} {
		o := filepath.Join(dir, "overlay", strings.ReplaceAll(strings.Trim(d, "/"), "/", "-"))
		for _, sub := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(o, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work %s\n", d, o, o, d)
	}
	fmt.Fprintf(&script, "printf '%%s\\t%%s\\n' %s %s >> /etc/hosts\necho ready\nexec sleep infinity\n", p.PublicIP, host)
	log := filepath.Join(dir, "mountns.out")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // the holder writes through its own descriptor
	holder := w.ns.Command(context.Background(), "unshare", "--mount", "--propagation", "private", "sh", "-c", script.String())
	holder.Stdout, holder.Stderr = f, f
	if w.holder, err = startBG(holder); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(lab.ReadLog(log), "ready") {
		select {
		case <-w.holder.done:
			t.Fatalf("mount namespace: %s", lab.ReadLog(log))
		case <-ctx.Done():
			t.Fatalf("mount namespace: %v", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return w
}

// close stops provisiond, the mount namespace's holder, the server and its
// BMC, and deletes the namespace; on a failed test it logs their tails.
func (w *guideWorld) close(t *testing.T) {
	if t.Failed() {
		t.Logf("provisiond log (tail):\n%s", lab.Tail([]byte(lab.ReadLog(filepath.Join(w.dir, "provisiond.log"))), 6000))
		if w.console != nil {
			t.Logf("console of server-1 (tail):\n%s", w.console.Tail(80))
		}
	}
	for _, p := range []*bgProc{w.daemon, w.holder} {
		if p != nil {
			p.stop(10 * time.Second)
		}
	}
	if w.bmc != nil {
		if err := w.bmc.Close(); err != nil {
			t.Error(err)
		}
	}
	if err := w.ns.Close(); err != nil {
		t.Error(err)
	}
}

// bgProc is a process the test started in a process group of its own and
// stops with it.
type bgProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startBG(cmd *exec.Cmd) (*bgProc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM to the group, SIGKILL after timeout, and waits.
func (p *bgProc) stop(timeout time.Duration) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// guideEnv is the shells' environment: the test's, less what would steer
// Terraform or provisiond ctl, with the tools first on PATH.
func guideEnv(tools, home, rc string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "HOME" || strings.HasPrefix(k, "TF_") || strings.HasPrefix(k, "BAREMETAL_") || strings.HasPrefix(k, "PROVISIOND_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+tools+":/usr/local/sbin:/usr/local/bin:"+os.Getenv("PATH"), "HOME="+home,
		"TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1")
}

// command is a shell running script in the namespaces, in wd: bash, as a
// reader's, with -e and pipefail so that a failing line fails the step.
func (w *guideWorld) command(ctx context.Context, wd, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(w.holder.cmd.Process.Pid), "-m", "-n", "--wd="+wd,
		"--", "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Env = w.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// logName is where a block's output goes.
func (w *guideWorld) logName(b planned) string {
	return filepath.Join(w.dir, fmt.Sprintf("line%d-%s.log", b.Line, b.Lang))
}

// output runs script and returns its output (also written to the block's
// log).
func (w *guideWorld) output(ctx context.Context, b planned, wd, script string) (string, error) {
	out, err := w.command(ctx, wd, script).CombinedOutput()
	_ = os.WriteFile(w.logName(b), out, 0o644) // a copy for a person reading a failed run
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", b, err)
	}
	return string(out), nil
}

// run runs a block and fails the test unless it succeeds.
func (w *guideWorld) run(t *testing.T, ctx context.Context, b planned, wd, script string) string {
	t.Helper()
	start := time.Now()
	out, err := w.output(ctx, b, wd, script)
	if err != nil {
		t.Fatalf("%v\nscript:\n%s\noutput:\n%s", err, script, lab.Tail([]byte(out), 4000))
	}
	t.Logf("  ran the %s in %.1fs", b, since(start))
	return out
}

// startDaemon starts the guide's provisiond command and waits until it
// serves.
func (w *guideWorld) startDaemon(t *testing.T, ctx context.Context, b planned) {
	t.Helper()
	log := filepath.Join(w.dir, "provisiond.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // provisiond writes through its own descriptor
	cmd := w.command(context.Background(), "/", b.Script)
	cmd.Stdout, cmd.Stderr = f, f
	if w.daemon, err = startBG(cmd); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(lab.ReadLog(log), "provisiond starting") {
		select {
		case <-w.daemon.done:
			t.Fatalf("%s: provisiond exited: %s", b, lab.ReadLog(log))
		case <-ctx.Done():
			t.Fatalf("%s: waiting for provisiond: %v", b, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("  started the %s", b)
}

// answering runs script with its standard input a person at the terminal:
// each prompt (the output up to "Enter a value:") is answered with the
// reply of the first key it contains; a prompt with none fails the test.
// It returns the standard output.
func (w *guideWorld) answering(t *testing.T, ctx context.Context, b planned, wd, script string, replies map[string]string) string {
	t.Helper()
	cmd := w.command(ctx, wd, script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(w.logName(b))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logf.Close() }()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var all, pending bytes.Buffer
	var asked []string
	var unexpected error
	buf := make([]byte, 4096)
	for {
		n, rerr := stdout.Read(buf)
		all.Write(buf[:n])
		pending.Write(buf[:n])
		_, _ = logf.Write(buf[:n])
		if p := stripANSI(pending.String()); strings.Contains(p, "Enter a value:") {
			reply, key := "", ""
			for k, v := range replies {
				if strings.Contains(p, k) {
					reply, key = v, k
				}
			}
			if key == "" {
				unexpected = fmt.Errorf("an unexpected prompt:\n%s", p)
				_ = cmd.Cancel()
				break
			}
			asked = append(asked, key)
			if _, err := io.WriteString(stdin, reply+"\n"); err != nil {
				t.Fatalf("%s: answer %q: %v", b, key, err)
			}
			pending.Reset()
		}
		if rerr != nil {
			break
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	_ = stdin.Close()
	if unexpected != nil || err != nil {
		t.Fatalf("%s: %v %v\noutput:\n%s\nlog: %s", b, unexpected, err, lab.Tail([]byte(stripANSI(all.String())), 4000),
			lab.Tail([]byte(lab.ReadLog(w.logName(b))), 3000))
	}
	for k := range replies {
		if !contains(asked, k) {
			t.Errorf("%s: Terraform never asked %q (asked %q)", b, k, asked)
		}
	}
	t.Logf("  ran the %s, answering %q", b, asked)
	return all.String()
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

func stripANSI(s string) string { return ansi.ReplaceAllString(s, "") }

// admin is the test's own client of provisiond, with the token and CA the
// guide made.
func (w *guideWorld) admin(t *testing.T, ctx context.Context, p *guidePlan) *client.Client {
	t.Helper()
	cat := func(path string) string {
		out, err := w.command(ctx, "/", "cat "+path).Output()
		if err != nil {
			t.Fatalf("read %s in the mount namespace: %v", path, err)
		}
		return string(out)
	}
	_, port, _ := net.SplitHostPort(p.Endpoint)
	c, err := client.New(ctx, client.Config{
		Endpoint: net.JoinHostPort(p.PublicIP, port), Token: strings.TrimSpace(cat("/etc/provisiond/token")),
		CACert: cat("/etc/provisiond/agent-ca.pem"),
		Dial:   func(ctx context.Context, addr string) (net.Conn, error) { return w.ns.Dial(ctx, "tcp", addr) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	return c
}

// shellResult is how a shell run in the background ended.
type shellResult struct {
	out string
	err error
	at  time.Time
}

// waitWorkflow waits until the hardware's machine has a workflow.
func waitWorkflow(ctx context.Context, admin *client.Client, id string) error {
	for {
		m, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: id})
		if err == nil && m.GetWorkflow().GetId() != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the workflow of %s: %w (last: %v)", id, ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// The installed Debian's getty banner (/etc/issue) on the serial
// console, with the host name: the login prompt after it ends no line.
var reLogin = regexp.MustCompile(`^Debian GNU/Linux 12 (\S+) ttyS0`)

// guidePhases checks and logs the install from the PXE power-on: iPXE
// script, agent, the installed kernel after the BMC reset (GRUB from the
// disk), then, in the order they come, the getty banner with the
// hardware's host name, cloud-init's table of the SSH keys Terraform gave
// (keyComment names the guide's key) and its final message, and the
// phone home.
func guidePhases(t *testing.T, ctx context.Context, admin *client.Client, c *lab.Console, from int, s *lab.Server, id, keyComment string, t0 time.Time) {
	t.Helper()
	m, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: id})
	if err != nil {
		t.Fatal(err)
	}
	i := from
	if on, ok := pxePowerOn(s, t0); ok {
		t0 = on
		i = max(from, c.IndexAt(on))
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute) // what follows the phone home comes within seconds
	defer cancel()
	var report []string
	at := func(name string, when time.Time) {
		report = append(report, fmt.Sprintf("%s %.1fs", name, when.Sub(t0).Seconds()))
	}
	type phase struct {
		name string
		re   *regexp.Regexp
	}
	for _, p := range []phase{{"iPXE script", reScript}, {"agent running", reAgent}, {"installed kernel", reKernel}} {
		j, l, err := c.Wait(wctx, i, p.re)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			return
		}
		i = j
		at(p.name, l.At)
	}
	reKey := regexp.MustCompile(`^ci-info: \|.*\| ` + regexp.QuoteMeta(keyComment) + ` +\|`)
	for _, p := range []phase{{"getty banner", reLogin}, {"SSH key", reKey}, {"cloud-init done", reCloudInit}} {
		_, l, err := c.Wait(wctx, i, p.re)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			continue
		}
		at(p.name, l.At)
		if p.re == reLogin && reLogin.FindStringSubmatch(l.Text)[1] != s.Name {
			t.Errorf("%s: the installed OS's host name: %q", s.Name, l.Text)
		}
	}
	w := m.GetWorkflow()
	if w.GetState() != pb.State_STATE_SUCCEEDED {
		t.Errorf("%s: workflow %s is %s", s.Name, w.GetId(), w.GetState())
	}
	if m.GetOsReadyAt() == nil {
		t.Errorf("%s: no os_ready_at: the installed OS did not phone home", s.Name)
	} else {
		at("phone home", m.GetOsReadyAt().AsTime())
	}
	t.Logf("  %s (%s, %s): %s", s.Name, s.BMC.VM.FirmwareName(), s.BMC.VM.GuestDisk(), strings.Join(report, ", "))
	for _, a := range w.GetActions() {
		t.Logf("    action %s/%s: %s, took %.1fs", a.GetTask(), a.GetName(), a.GetState(),
			a.GetFinishedAt().AsTime().Sub(a.GetStartedAt().AsTime()).Seconds())
	}
}

// checkWatch checks what the guide's watch commands printed: the events
// followed to the workflow's end, the machine's actions, the hardware's
// interface and netboot, the power the BMC reported.
func checkWatch(t *testing.T, b planned, out string, p *guidePlan) {
	t.Helper()
	ip := strings.Split(p.Address, "/")[0]
	for what, re := range map[string]string{
		"events: the last one":          `(?m)^\S+ \S+\s+state\s+succeeded\s+-\s+provisioned$`,
		"machines: stream-image":        `(?m)^install\s+stream-image\s+succeeded\s`,
		"machines: datasource":          `(?m)^install\s+datasource\s+succeeded\s`,
		"hardware: the interface":       `(?m)^Interface 0:\s+` + regexp.QuoteMeta(p.MAC+" "+ip+"/"),
		"hardware: netboot off":         `(?m)^Netboot:\s+off$`,
		"power --refresh: the BMC's on": `(?m)^` + regexp.QuoteMeta(p.HardwareID) + `\s+on\s`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("%s: %s (%s) not in its output:\n%s", b, what, re, lab.Tail([]byte(out), 3000))
		}
	}
}

// readmeProvider applies the README's provider block, with a data source
// of the test's that reads the guide's hardware, from a shell set up as in
// step 4 less BAREMETAL_ENDPOINT: the endpoint is the block's.
func readmeProvider(t *testing.T, ctx context.Context, w *guideWorld, p *guidePlan, dir, setup string) {
	t.Helper()
	tf := filepath.Join(dir, "readme")
	if err := os.MkdirAll(tf, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := p.readme[1] + `
data "baremetal_hardware" "guide" {
  id = "` + p.HardwareID + `"
}

output "mac" {
  value = data.baremetal_hardware.guide.interfaces[0].mac
}
`
	if err := os.WriteFile(filepath.Join(tf, "main.tf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b := planned{mdBlock: mdBlock{Section: readmeFile + ": Running it on a real rack", Lang: "terraform", Line: 0}}
	out, err := w.output(ctx, b, tf, setup+"\nunset BAREMETAL_ENDPOINT\n"+
		"terraform init -input=false -no-color >/dev/null\nterraform apply -auto-approve -input=false -no-color >/dev/null\nterraform output -raw mac")
	if err != nil || strings.TrimSpace(lastLine(out)) != p.MAC {
		t.Errorf("README's provider block: %v, want the mac %s, got:\n%s", err, p.MAC, lab.Tail([]byte(out), 3000))
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// destroySection is the text of the guide's step 7.
func destroySection(t *testing.T, root string) string {
	b, err := os.ReadFile(filepath.Join(root, guideFile))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## 7. Destroy\n")
	if !ok {
		t.Fatalf("%s: no \"## 7. Destroy\"", guideFile)
	}
	return rest
}

// prefixOf is the prefix length of a CIDR address.
func prefixOf(cidr string) string {
	_, p, ok := strings.Cut(cidr, "/")
	if !ok {
		return "32"
	}
	return p
}

// mustLink makes link a symbolic link to target, with its directories.
func mustLink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
}
