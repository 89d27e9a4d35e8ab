package provider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

// How workflows fail with every peer real (lab_acc_test.go): provisiond's
// engine, ipmi_sim BMCs, plainboot and the agent binary in plain mode on a
// file-backed disk. These tests drive provisiond through its Admin API
// (internal/client), as the provider does: what Terraform makes of a
// failed install is TestAccMachineFailedActionTaints, and a whole
// provision, reinstall and deprovision is TestAccMachine.

// requireLabPeers skips unless acceptance tests run and the lab's programs
// are installed. Unlike requireRealLab it needs no terraform binary.
func requireLabPeers(t *testing.T) {
	t.Helper()
	requireAcc(t)
	lab.RequireBinaries(t, "ipmi_sim", "ipmitool", "setsid", "go")
}

// adminClient connects to provisiond's Admin API.
func adminClient(t *testing.T, endpoint, token, caPEM string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoint: endpoint, Token: token, CACert: caPEM})
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

// provisionLab stores m's hardware (its interface, disk and ipmi_sim BMC)
// and a template with content, and provisions m with params.
func provisionLab(ctx context.Context, t *testing.T, c *client.Client, m *realMachine, content string, params map[string]string) *pb.Machine {
	t.Helper()
	tpl, err := c.CreateTemplate(ctx, &pb.CreateTemplateRequest{Template: &pb.Template{Name: "lab-" + m.ID, Content: content}})
	if err != nil {
		t.Fatalf("create template: %v", err)
	}
	_, err = c.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Id: m.ID, Hostname: m.ID,
		Interfaces: []*pb.Interface{{Mac: m.MAC, Ip: m.IP + "/8"}},
		Disks:      []string{m.Disk},
		Bmc:        &pb.BMC{Driver: "ipmi", Address: "127.0.0.1", Port: uint32(m.BMC.Port), Username: "admin", Password: m.BMC.Password},
	}})
	if err != nil {
		t.Fatalf("create hardware: %v", err)
	}
	pm, err := c.ProvisionMachine(ctx, &pb.ProvisionMachineRequest{HardwareId: m.ID, TemplateId: tpl.GetId(), Parameters: params, Wipe: "quick"})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return pm
}

// waitMachine polls the machine of hwID until done holds for what
// GetMachine answers, and returns the machine. A provisiond that does not
// answer (restarting) is waited for.
func waitMachine(ctx context.Context, c pb.AdminClient, hwID, what string, done func(*pb.Machine, error) bool) (*pb.Machine, error) {
	var last *pb.Machine
	var lastErr error
	for {
		pm, err := c.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: hwID})
		if status.Code(err) != codes.Unavailable && ctx.Err() == nil {
			if done(pm, err) {
				return pm, nil
			}
			if err == nil {
				last = pm
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s of %s: %w; last seen: workflow %s, error %v", what, hwID, ctx.Err(), describe(last.GetWorkflow()), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// followToEnd follows the workflow that provisioned pm until it ends, with
// the loop the provider runs (client.Follow: a broken stream, a provisiond
// restart, is followed again), and returns the machine as provisiond then
// tells it.
func followToEnd(ctx context.Context, c pb.AdminClient, pm *pb.Machine) (*pb.Machine, error) {
	w := pm.GetWorkflow()
	f, err := client.Follow(ctx, c, client.Watch{HardwareID: pm.GetHardwareId(), WorkflowID: w.GetId(), RetryWait: 100 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("following workflow %s of %s: %w; last seen: workflow %s", w.GetId(), pm.GetHardwareId(), err, describe(f.Workflow))
	}
	return waitMachine(ctx, c, pm.GetHardwareId(), "the machine's answer", func(got *pb.Machine, err error) bool {
		return err == nil && got.GetWorkflow().GetId() == w.GetId() && terminal(got.GetWorkflow().GetState())
	})
}

// describe sums up a workflow for failure messages.
func describe(w *pb.Workflow) string {
	if w == nil {
		return "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", w.GetId(), stateName(w.GetState()))
	for _, a := range w.GetActions() {
		fmt.Fprintf(&b, " [%s %s attempt %d: %q]", a.GetName(), stateName(a.GetState()), a.GetAttempt(), a.GetMessage())
	}
	if w.GetError() != "" {
		fmt.Fprintf(&b, " error %q", w.GetError())
	}
	return b.String()
}

func actionNamed(t *testing.T, w *pb.Workflow, name string) *pb.ActionStatus {
	t.Helper()
	for _, a := range w.GetActions() {
		if a.GetName() == name {
			return a
		}
	}
	t.Fatalf("workflow %s has no action %q", describe(w), name)
	return nil
}

// ------------------------------------------------------------ processes

// procStat reads a process's command name, state and parent from
// /proc/PID/stat; ok is false when the process is gone.
func procStat(pid int) (comm string, state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, 0, false
	}
	// "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return "", 0, 0, false
	}
	f := strings.Fields(s[rp+1:])
	if len(f) < 2 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return s[lp+1 : rp], f[0][0], ppid, true
}

// procAlive: the process exists and is not a zombie.
func procAlive(pid int) bool {
	_, state, _, ok := procStat(pid)
	return ok && state != 'Z'
}

// procChild returns a living child of parent named comm, or 0.
func procChild(parent int, comm string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if c, state, pp, ok := procStat(pid); ok && pp == parent && c == comm && state != 'Z' {
			return pid
		}
	}
	return 0
}

// waitChild waits for a child of parent named comm.
func waitChild(ctx context.Context, parent int, comm string) (int, error) {
	for {
		if pid := procChild(parent, comm); pid != 0 {
			return pid, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no process %q under PID %d: %w", comm, parent, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitGone waits until pid has exited.
func waitGone(ctx context.Context, pid int) error {
	for procAlive(pid) {
		select {
		case <-ctx.Done():
			comm, _, ppid, _ := procStat(pid)
			return fmt.Errorf("process %d (%s, parent %d) still runs: %w", pid, comm, ppid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// agentPID waits for the agent process of m: plainboot (the process the
// BMC powered on, whose PID is in the BMC's pidfile) runs it as a child.
func (m *realMachine) agentPID(ctx context.Context) (int, error) {
	for {
		b, _ := os.ReadFile(m.BMC.PIDFile())
		if boot, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if pid := procChild(boot, "agent"); pid != 0 {
				return pid, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no agent process on %s: %w", m.ID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// --------------------------------------------------------------- tests

// failTemplate is a one-task template of the given actions (YAML list
// items, indented for the task).
func failTemplate(actions string) string {
	return `version: "0.1"
name: lab-failure
global_timeout: 300
tasks:
  - name: install
    actions:
` + actions
}

// TestAccLabBadImageURL: an image URL that answers 404 fails the workflow
// with an error naming the action and the HTTP status, after exactly the
// attempts the action's retries allow: one request per attempt (a 404 is
// not a broken download to resume). Nothing is written to the disk, and no
// later action runs.
func TestAccLabBadImageURL(t *testing.T) {
	requireLabPeers(t)
	t.Parallel()
	var requests atomic.Int32
	images := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(images.Close)

	l := startRealLab(t)
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	c := adminClient(t, l.Endpoint, l.Token, l.PKI.CACert)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	prov := provisionLab(ctx, t, c, m, failTemplate(`      - name: stream-image
        image: image2disk
        timeout: 30
        retries: 2
        environment:
          IMG_URL: "{{ .Params.url }}"
          DEST_DISK: "{{ .Hardware.Disks 0 }}"
      - name: after
        image: exec
        timeout: 10
        command: ["true"]
`), map[string]string{"url": images.URL + "/os/missing.img"})
	pm, err := followToEnd(ctx, c, prov)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("workflow ended %s in %.1fs", stateName(pm.GetWorkflow().GetState()), time.Since(start).Seconds())
	w := pm.GetWorkflow()
	if w.GetState() != pb.State_STATE_FAILED {
		t.Fatalf("workflow %s, want failed", describe(w))
	}
	for _, want := range []string{"install/stream-image", "failed after 3 attempt(s)", "404 Not Found", "/os/missing.img"} {
		if !strings.Contains(w.GetError(), want) {
			t.Errorf("workflow error %q does not say %q", w.GetError(), want)
		}
	}
	if a := actionNamed(t, w, "stream-image"); a.GetState() != pb.State_STATE_FAILED || a.GetAttempt() != 3 {
		t.Errorf("stream-image: %s after %d attempts, want failed after 3 (retries: 2)", stateName(a.GetState()), a.GetAttempt())
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("the image server got %d requests, want 3: one per attempt", n)
	}
	if a := actionNamed(t, w, "after"); a.GetAttempt() != 0 {
		t.Errorf("action after ran %d times after the failure", a.GetAttempt())
	}
	disk, err := os.ReadFile(m.Disk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk, bytes.Repeat([]byte{labOldData}, labDiskSize)) {
		t.Error("the disk was written although no image was served")
	}
}

// TestAccLabChecksumMismatch: an image whose sha256 is not the one the
// template names fails the action with a message that says so; the bytes
// that did not verify do not stay on the disk looking like an install
// (image2disk zeroes both ends of what it wrote: partition tables and boot
// code), and the server is not switched to boot its disk.
func TestAccLabChecksumMismatch(t *testing.T) {
	requireLabPeers(t)
	t.Parallel()
	l := startRealLab(t)
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	c := adminClient(t, l.Endpoint, l.Token, l.PKI.CACert)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The digest of another version: the mistake of a template that
	// points at a new image with the old checksum.
	other := sha256.Sum256(labImage("v2"))
	prov := provisionLab(ctx, t, c, m, failTemplate(`      - name: stream-image
        image: image2disk
        timeout: 30
        environment:
          IMG_URL: "{{ .ImagesURL }}/os-v1.img"
          DEST_DISK: "{{ .Hardware.Disks 0 }}"
          SHA256: "{{ .Params.sha256 }}"
      - name: after
        image: exec
        timeout: 10
        command: ["true"]
`), map[string]string{"sha256": hex.EncodeToString(other[:])})
	pm, err := followToEnd(ctx, c, prov)
	if err != nil {
		t.Fatal(err)
	}
	w := pm.GetWorkflow()
	if w.GetState() != pb.State_STATE_FAILED {
		t.Fatalf("workflow %s, want failed", describe(w))
	}
	a := actionNamed(t, w, "stream-image")
	if a.GetState() != pb.State_STATE_FAILED || !strings.Contains(a.GetMessage(), "sha256 mismatch") || !strings.Contains(a.GetMessage(), hex.EncodeToString(other[:])) {
		t.Errorf("stream-image %s: %q; want failed with a sha256 mismatch naming the expected digest", stateName(a.GetState()), a.GetMessage())
	}
	if !strings.Contains(w.GetError(), "install/stream-image") || !strings.Contains(w.GetError(), "sha256 mismatch") {
		t.Errorf("workflow error %q does not name the action and the mismatch", w.GetError())
	}
	if pm.GetProvisionedAt() != nil {
		t.Error("the machine has a provisioned_at")
	}
	disk, err := os.ReadFile(m.Disk)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(disk, []byte("baremetal-os-image-v1")) {
		t.Error("the image that failed verification is still on the disk")
	}
	if !bytes.Equal(disk[:labImageSize], make([]byte, labImageSize)) {
		t.Errorf("the %d bytes written are not zeroed: %q...", labImageSize, disk[:32])
	}
	if !bytes.Equal(disk[labImageSize:], bytes.Repeat([]byte{labOldData}, labDiskSize-labImageSize)) {
		t.Error("the disk beyond what image2disk wrote was changed")
	}
	if b := m.LastBoot(); b != "pxe" {
		t.Errorf("the server last powered on to boot %q, want pxe: a failed install must not boot the disk", b)
	}
}

// TestAccLabActionTimeout: an action that outlives its timeout is killed
// by the agent at the timeout, process and all, and the workflow ends
// timed_out seconds later, not at the engine's grace period.
func TestAccLabActionTimeout(t *testing.T) {
	requireLabPeers(t)
	t.Parallel()
	l := startRealLab(t)
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	c := adminClient(t, l.Endpoint, l.Token, l.PKI.CACert)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prov := provisionLab(ctx, t, c, m, failTemplate(`      - name: hang
        image: exec
        timeout: 2
        command: ["sleep", "30"]
      - name: after
        image: exec
        timeout: 10
        command: ["true"]
`), nil)
	agent, err := m.agentPID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := waitChild(ctx, agent, "sleep")
	if err != nil {
		t.Fatal(err)
	}
	pm, err := followToEnd(ctx, c, prov)
	if err != nil {
		t.Fatal(err)
	}
	w := pm.GetWorkflow()
	a := actionNamed(t, w, "hang")
	took := a.GetFinishedAt().AsTime().Sub(a.GetStartedAt().AsTime())
	over := w.GetFinishedAt().AsTime().Sub(a.GetStartedAt().AsTime())
	t.Logf("the action ran %.2fs; the workflow ended %.2fs after it started", took.Seconds(), over.Seconds())
	if w.GetState() != pb.State_STATE_TIMED_OUT || a.GetState() != pb.State_STATE_TIMED_OUT {
		t.Fatalf("workflow %s; want it and action hang timed_out", describe(w))
	}
	if !strings.Contains(w.GetError(), "install/hang timed out") || !strings.Contains(a.GetMessage(), "timed out after 2s") {
		t.Errorf("workflow error %q, action message %q; want them to name the action and its 2s timeout", w.GetError(), a.GetMessage())
	}
	if took < 2*time.Second || took > 4*time.Second {
		t.Errorf("the action ran %s; its timeout is 2s", took)
	}
	if over > 6*time.Second {
		t.Errorf("the workflow ended %s after the action started; its timeout is 2s", over)
	}
	if procAlive(sleep) {
		t.Errorf("the action's process %d still runs after the timeout", sleep)
	}
	if a := actionNamed(t, w, "after"); a.GetAttempt() != 0 {
		t.Errorf("action after ran %d times after the timeout", a.GetAttempt())
	}
}

// TestAccLabAgentKilled: the agent dies (kill -9) in the middle of an
// action. Nothing restarts it, so a demanding user expects three things:
// the workflow fails within the heartbeat timeout instead of hanging, its
// error names the action that was running; the action's process does not
// live on as an orphan; and the machine is not wedged: a deprovision boots
// a fresh agent that wipes the disk and powers the server off.
func TestAccLabAgentKilled(t *testing.T) {
	requireLabPeers(t)
	t.Parallel()
	const heartbeat = 5 * time.Second // the agents beat every 2s (addMachine)
	l := startRealLabWith(t, func(o *workflow.Options) { o.HeartbeatTimeout = heartbeat })
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	c := adminClient(t, l.Endpoint, l.Token, l.PKI.CACert)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prov := provisionLab(ctx, t, c, m, failTemplate(`      - name: hold
        image: exec
        timeout: 60
        command: ["sleep", "30"]
      - name: after
        image: exec
        timeout: 10
        command: ["true"]
`), nil)
	agent, err := m.agentPID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := waitChild(ctx, agent, "sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
	defer gcancel()
	if err := waitGone(gctx, sleep); err != nil {
		t.Errorf("the action's process outlived the agent: %v", err)
	}
	pm, err := followToEnd(ctx, c, prov)
	if err != nil {
		t.Fatal(err)
	}
	silent := time.Since(killed)
	w := pm.GetWorkflow()
	t.Logf("the workflow ended %s %.1fs after the agent was killed: %s", stateName(w.GetState()), silent.Seconds(), w.GetError())
	if w.GetState() != pb.State_STATE_FAILED || !strings.Contains(w.GetError(), "the agent went silent") || !strings.Contains(w.GetError(), "install/hold") {
		t.Errorf("workflow %s; want failed because the agent went silent during install/hold", describe(w))
	}
	// The last heartbeat came up to 2s before the kill.
	if silent < heartbeat-2*time.Second || silent > heartbeat+3*time.Second {
		t.Errorf("the workflow failed %s after the agent died; the heartbeat timeout is %s", silent, heartbeat)
	}
	if a := actionNamed(t, w, "after"); a.GetAttempt() != 0 {
		t.Errorf("action after ran %d times", a.GetAttempt())
	}

	// The machine recovers: a deprovision boots a new agent.
	start := time.Now()
	if _, err := c.DeprovisionMachine(ctx, &pb.DeprovisionMachineRequest{HardwareId: m.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := waitMachine(ctx, c, m.ID, "the deprovision", func(_ *pb.Machine, err error) bool { return status.Code(err) == codes.NotFound }); err != nil {
		t.Fatal(err)
	}
	t.Logf("deprovisioned in %.1fs", time.Since(start).Seconds())
	first, _, last, err := m.diskRegions()
	if err != nil || !first || !last {
		t.Errorf("after the deprovision's quick wipe: first MiB zero %t, last MiB zero %t (%v)", first, last, err)
	}
	if p, err := m.Power(ctx); err != nil || p != "off" {
		t.Errorf("BMC says power %q (%v) after the deprovision, want off", p, err)
	}
}

// TestAccLabProvisiondKilled: provisiond, a process of its own, is killed
// with SIGKILL while the agent runs an action, and stays down until that
// action has finished, so the agent's report meets a dead daemon. Started
// again on the same data directory, provisiond takes the report the agent
// keeps retrying and the workflow finishes: every action ran exactly once,
// the disk holds what all of them wrote, the server boots its disk, and
// the store checks clean.
func TestAccLabProvisiondKilled(t *testing.T) {
	requireLabPeers(t)
	t.Parallel()
	bin := buildProvisiond(t)
	agent, plainboot := buildLabBinaries(t)
	dir := t.TempDir()
	pki, err := testpki.Generate(net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Write(dir); err != nil {
		t.Fatal(err)
	}
	token := "admin-token-" + store.NewID()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpAddr := testkit.FreeTCP(t), testkit.FreeTCP(t)
	d := &lab.Daemon{Bin: bin, Log: filepath.Join(dir, "provisiond.log"), Args: []string{
		"--data-dir", data,
		"--grpc-listen", grpcAddr, "--http-listen", httpAddr,
		"--public-ip", "127.0.0.1", "--dhcp-mode", "off", "--tftp-listen", "",
		"--images-dir", labImages(t),
		"--token-file", tokenFile,
		"--tls-cert", pki.ServerCertFile, "--tls-key", pki.ServerKeyFile, "--tls-agent-ca", pki.CACertFile,
		"--log-level", "debug",
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(10 * time.Second); err != nil {
			t.Errorf("stop provisiond: %v", err)
		}
		if t.Failed() {
			t.Logf("provisiond log:\n%s", lab.ReadLog(d.Log))
		}
	})

	l := &realLab{HTTP: "http://" + httpAddr, agent: agent, plainboot: plainboot, disks: labDisks(t)}
	m := l.addMachine(t, "node0", 0, "bmc-pw")
	c := adminClient(t, grpcAddr, token, pki.CACert)
	const marker = "written-after-the-restart"
	start := time.Now()
	mark := func(what string) { t.Logf("%-40s %6.2fs", what, time.Since(start).Seconds()) }
	prov := provisionLab(ctx, t, c, m, `version: "0.1"
name: lab-restart
global_timeout: 300
tasks:
  - name: install
    environment:
      DISK: "{{ .Hardware.Disks 0 }}"
    actions:
      - name: stream-image
        image: image2disk
        timeout: 60
        environment:
          IMG_URL: "{{ .ImagesURL }}/os-v1.img"
          DEST_DISK: "{{ .Hardware.Disks 0 }}"
      - name: settle
        image: exec
        timeout: 30
        command: ["sleep", "3"]
      - name: mark
        image: exec
        timeout: 30
        command: ["/bin/sh", "-c", "printf `+marker+` | dd of=\"$DISK\" bs=1 seek=1048576 conv=notrunc status=none"]
`, nil)

	agentPID, err := m.agentPID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := waitChild(ctx, agentPID, "sleep")
	if err != nil {
		t.Fatal(err)
	}
	mark("settle runs; SIGKILL provisiond")
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	// What the crash left: a sound store that knows settle was running.
	checkStore(ctx, t, data, func(w store.Workflow) error {
		if w.State != store.StateRunning || w.Actions[0].State != store.StateSucceeded || w.Actions[1].State != store.StateRunning {
			return fmt.Errorf("workflow %s with actions %s, %s, %s; want running, with stream-image succeeded and settle running",
				w.State, w.Actions[0].State, w.Actions[1].State, w.Actions[2].State)
		}
		return nil
	})
	if err := waitGone(ctx, sleep); err != nil {
		t.Fatal(err)
	}
	mark("settle done with provisiond down")
	// Down until the agent has tried to report settle and found nobody.
	if err := waitConsole(ctx, m, regexp.MustCompile(`unreachable; retrying".* call="report action"`)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mark("provisiond started again")

	pm, err := followToEnd(ctx, c, prov)
	if err != nil {
		t.Fatal(err)
	}
	mark("workflow " + stateName(pm.GetWorkflow().GetState()))
	w := pm.GetWorkflow()
	if w.GetState() != pb.State_STATE_SUCCEEDED {
		t.Fatalf("workflow %s, want succeeded", describe(w))
	}
	for _, a := range w.GetActions() {
		if a.GetAttempt() != 1 {
			t.Errorf("action %s ran %d times, want once: the workflow resumes where it was", a.GetName(), a.GetAttempt())
		}
	}
	disk, err := os.ReadFile(m.Disk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(disk, labImage("v1")) {
		t.Errorf("the disk does not start with image v1: %q", disk[:40])
	}
	if got := disk[1<<20 : 1<<20+len(marker)]; string(got) != marker {
		t.Errorf("the disk holds %q at 1 MiB, want %q (the action after the restart)", got, marker)
	}
	if p, err := m.Power(ctx); err != nil || p != "on" {
		t.Errorf("BMC says power %q (%v), want on", p, err)
	}
	if b := m.LastBoot(); b != "disk" {
		t.Errorf("the server last powered on to boot %q, want disk", b)
	}

	// The store, once provisiond has stopped: sound, the workflow done.
	if err := d.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkStore(ctx, t, data, func(sw store.Workflow) error {
		if sw.ID != w.GetId() || sw.State != store.StateSucceeded {
			return fmt.Errorf("stored workflow %s is %s; want %s succeeded", sw.ID, sw.State, w.GetId())
		}
		return nil
	})
}

// checkStore opens provisiond's store in data (provisiond must not run),
// checks its consistency, and its only workflow with check.
func checkStore(ctx context.Context, t *testing.T, data string, check func(store.Workflow) error) {
	t.Helper()
	st, err := store.Open(filepath.Join(data, "provisiond.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}()
	if err := st.Check(ctx); err != nil {
		t.Error(err)
	}
	all, err := store.Read(ctx, st, func(tx *store.Tx) ([]store.Workflow, error) { return tx.ListWorkflows() })
	if err != nil || len(all) != 1 {
		t.Fatalf("stored workflows: %d, %v; want 1", len(all), err)
	}
	if err := check(all[0]); err != nil {
		t.Error(err)
	}
}

// waitConsole waits until what m's plainboot and agent printed matches re.
func waitConsole(ctx context.Context, m *realMachine, re *regexp.Regexp) error {
	for !re.MatchString(m.Console()) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the console of %s never matched %s: %w\n%s", m.ID, re, ctx.Err(), m.Console())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
