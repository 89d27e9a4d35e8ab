package provider

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/gobuild"
	"github.com/rackform/terraform-provider-baremetal/provisiond/bmc"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
)

// The real lab: provisiond's services wired as its main wires them, in the
// test process, and machines whose every peer is real. A machine's BMC is
// an OpenIPMI ipmi_sim that provisiond drives through bmclib and ipmitool;
// its chassis script (internal/lab, BMC.Machine) powers on plainboot, which
// fetches the iPXE script provisiond serves for the machine's MAC, from the
// machine's own address, reads the agent's parameters from its kernel
// command line and runs the real agent binary in plain mode; the agent
// talks gRPC over TLS to provisiond and writes to a disk that is a regular
// file. Nothing but loopback is used, so no root is needed.

// Sizes of a lab machine's disk and its OS image, and what fills the disk
// before the first install (an earlier owner's data).
const (
	labDiskSize  = 4 << 20
	labImageSize = 512 << 10
	labOldData   = 0xA5
)

// labImage is the content of the OS image version v: a recognisable text
// repeated to labImageSize.
func labImage(v string) []byte {
	line := "baremetal-os-image-" + v + "\n"
	return bytes.Repeat([]byte(line), labImageSize/len(line)+1)[:labImageSize]
}

// buildLabBinaries builds ./agent and ./internal/plainboot (once per test
// run, with the test kit's build helper; TestMain removes them).
func buildLabBinaries(t *testing.T) (agent, plainboot string) {
	t.Helper()
	return gobuild.Build(t, "./agent", gobuild.Options{}), gobuild.Build(t, "./internal/plainboot", gobuild.Options{})
}

// buildProvisiond builds ./provisiond (once), for tests that must kill the
// daemon for real.
func buildProvisiond(t *testing.T) string {
	t.Helper()
	return gobuild.Build(t, "./provisiond", gobuild.Options{})
}

// realLab is provisiond with real peers (see above).
type realLab struct {
	*testDaemon
	HTTP      string // provisiond's HTTP base URL (iPXE scripts, images)
	agent     string
	plainboot string
	disks     string // directory of the machines' disks, under /dev/shm
}

// requireRealLab skips unless acceptance tests run and the lab's programs
// are installed.
func requireRealLab(t *testing.T) {
	t.Helper()
	requireAcc(t)
	lab.RequireBinaries(t, "ipmi_sim", "ipmitool", "setsid", "go")
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		t.Skip("no terraform binary: run `make tools` or set TF_ACC_TERRAFORM_PATH")
	}
}

// startRealLab starts provisiond for one test: the Admin and Agent gRPC
// services over TLS, the HTTP server of iPXE scripts and images, the
// workflow engine and the BMC manager with its power poller.
func startRealLab(t *testing.T) *realLab { return startRealLabWith(t, nil) }

// startRealLabWith is startRealLab with the engine's options changed by
// tune (nil: as they are).
func startRealLabWith(t *testing.T, tune func(*workflow.Options)) *realLab {
	t.Helper()
	agent, plainboot := buildLabBinaries(t)
	images := labImages(t)
	d := startDaemon(t, func(c *daemon.Config) {
		c.ImagesDir = images
		// The poller reads every server's power each second, as provisiond's
		// does each minute: drift in `power` shows within a test step.
		c.BMC = bmc.Options{Timeout: 10 * time.Second, PollInterval: time.Second, IPMICipherSuite: "3"}
		c.Workflow = workflow.Options{
			BootTimeout: 30 * time.Second, HeartbeatTimeout: 30 * time.Second, ActionGrace: 5 * time.Second,
			PowerAttempts: 3, PowerRetryDelay: 500 * time.Millisecond,
		}
		if tune != nil {
			tune(&c.Workflow)
		}
	})
	return &realLab{testDaemon: d, HTTP: d.HTTP, agent: agent, plainboot: plainboot, disks: labDisks(t)}
}

// machineDir is a machine's directory (its BMC's state and logs). Not
// t.TempDir: a chassis script that ipmi_sim started just before it was
// killed may still append to the power log while the test cleans up, and
// t.TempDir fails the test when its RemoveAll meets a new file; this one
// tries again for a few seconds.
func machineDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "baremetal-machine-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var err error
		for range 50 {
			if err = os.RemoveAll(dir); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("remove the machine's directory: %v", err)
	})
	return dir
}

// labImages writes images v1 and v2 (labImage) into a fresh directory.
func labImages(t *testing.T) string {
	t.Helper()
	images := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		if err := os.WriteFile(filepath.Join(images, "os-"+v+".img"), labImage(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return images
}

// labDisks makes the directory of one test's machine disks. Disk paths
// must be under /dev/ (provisiond and the provider check): /dev/shm holds
// regular files on every Linux, without root.
func labDisks(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "baremetal-acc-")
	if err != nil {
		t.Skipf("no writable /dev/shm for the machines' disks: %v", err)
	}
	// The disks live in memory: a leftover is worth failing the test for.
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the machines' disks: %v", err)
		}
	})
	return dir
}

// realMachine is one lab server.
type realMachine struct {
	ID   string
	MAC  string
	IP   string // its address, without prefix: plainboot's source address
	Disk string // a regular file under /dev/shm
	BMC  *lab.BMC
	dir  string
}

// addMachine sets up machine n (0-based) with an ipmi_sim BMC that has the
// given password, powered off, and a disk full of an earlier owner's data.
func (l *realLab) addMachine(t *testing.T, id string, n int, bmcPassword string) *realMachine {
	t.Helper()
	m := &realMachine{ID: id, MAC: lab.MACFor(id), IP: fmt.Sprintf("127.0.0.%d", 10+n), Disk: filepath.Join(l.disks, id+".img"), dir: machineDir(t)}
	if err := os.WriteFile(m.Disk, bytes.Repeat([]byte{labOldData}, labDiskSize), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := []string{l.plainboot, "-url", l.HTTP + "/ipxe/" + m.MAC, "-src", m.IP, "-agent", l.agent, "-dir", m.dir,
		"--", "--heartbeat", "2s", "--progress", "1s"}
	var last error
	for try := 0; try < 3; try++ {
		port, err := testkit.FreeUDPPort()
		if err != nil {
			t.Fatal(err)
		}
		b := &lab.BMC{VM: lab.VM{Name: id, Dir: m.dir}, Machine: argv, Port: port, User: "admin", Password: bmcPassword}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		last = b.Start(ctx, nil) // nil: on loopback, where the in-process provisiond reaches it
		cancel()
		if last == nil {
			m.BMC = b
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("close BMC of %s: %v", id, err)
				}
				if t.Failed() {
					t.Logf("machine %s: power log:\n%s\nconsole:\n%s", id,
						lab.ReadLog(filepath.Join(m.dir, "bmc", "power.log")), lab.ReadLog(filepath.Join(m.dir, "bmc", "machine.out")))
				}
			})
			return m
		}
	}
	t.Fatalf("start the BMC of %s: %v", id, last)
	return nil
}

// Power asks the BMC for the chassis power: "on" or "off".
func (m *realMachine) Power(ctx context.Context) (string, error) {
	out, err := m.BMC.Ipmitool(ctx, "chassis", "power", "status")
	switch {
	case err != nil:
		return "", err
	case out == "Chassis Power is on":
		return "on", nil
	case out == "Chassis Power is off":
		return "off", nil
	}
	return "", fmt.Errorf("chassis power status: %q", out)
}

// LastBoot is the boot device of the machine's last power-on ("pxe" or
// "disk"), from the chassis script's power log.
func (m *realMachine) LastBoot() string {
	lines := strings.Split(strings.TrimSpace(lab.ReadLog(filepath.Join(m.dir, "bmc", "power.log"))), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if _, boot, ok := strings.Cut(lines[i], "power on boot="); ok {
			return boot
		}
	}
	return ""
}

// Console is what plainboot and the agent printed.
func (m *realMachine) Console() string {
	return lab.ReadLog(filepath.Join(m.dir, "bmc", "machine.out"))
}

// diskRegions reports whether the first MiB, the middle and the last MiB
// of the disk are all zero.
func (m *realMachine) diskRegions() (first, middle, last bool, err error) {
	b, err := os.ReadFile(m.Disk)
	if err != nil {
		return false, false, false, err
	}
	if len(b) != labDiskSize {
		return false, false, false, fmt.Errorf("disk %s is %d bytes, want %d", m.Disk, len(b), labDiskSize)
	}
	zero := func(p []byte) bool { return bytes.Count(p, []byte{0}) == len(p) }
	const mib = 1 << 20
	return zero(b[:mib]), zero(b[mib : len(b)-mib]), zero(b[len(b)-mib:]), nil
}

// waitPolled waits until provisiond's power poller has recorded the
// hardware's power after since, and returns what it saw.
func (l *realLab) waitPolled(ctx context.Context, hwID string, since time.Time) (string, error) {
	for {
		hw, err := l.Store.GetHardware(ctx, hwID)
		if err != nil {
			return "", err
		}
		if hw.PowerSeenAt.After(since) {
			return hw.Power, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no power poll of %s since %s: %w", hwID, since.Format(time.RFC3339Nano), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// labTemplate installs image version v: the real agent streams it from
// provisiond's /images/ to the disk (image2disk), then checks on the
// machine that it landed (exec). broken appends an action that fails the
// way a full disk does.
func labTemplate(broken bool) string {
	tpl := `version: "0.1"
name: lab-install
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
          IMG_URL: "{{ .ImagesURL }}/os-{{ .Params.version }}.img"
          DEST_DISK: "{{ .Hardware.Disks 0 }}"
      - name: check-image
        image: exec
        timeout: 30
        environment:
          WANT: "baremetal-os-image-{{ .Params.version }}"
        command: ["/bin/sh", "-c", "head -n 1 \"$DISK\" | grep -qx \"$WANT\" && echo \"$WANT is on $DISK\""]
`
	if broken {
		tpl += `      - name: broken-write
        image: exec
        timeout: 30
        command: ["/bin/sh", "-c", "echo writing partition table; echo 'error: no space left on device' >&2; exit 3"]
`
	}
	return tpl
}

// labConfig is the configuration of one machine m: hardware with m's
// interface, disk and BMC, the template, and the machine. provider is the
// provider block; password the HCL expression of the BMC password.
func labConfig(provider string, m *realMachine, broken bool, password, version, power, wipe string) string {
	return hcl(provider, fmt.Sprintf(`
resource "baremetal_template" "lab" {
  name    = "lab-install"
  content = %q
}

resource "baremetal_hardware" "node" {
  id       = %q
  hostname = %q
  interfaces = [{
    mac = %q
    ip  = "%s/8"
  }]
  disks = [%q]
  bmc = {
    driver   = "ipmi"
    address  = "127.0.0.1"
    port     = %d
    username = "admin"
    password = %s
  }
}

resource "baremetal_machine" "node" {
  hardware_id = baremetal_hardware.node.id
  template_id = baremetal_template.lab.id
  parameters  = { version = %q }
  user_data   = "#cloud-config\n"
  power       = %q
  wipe        = %q
  timeouts {
    create = "2m"
    delete = "2m"
  }
}
`, labTemplate(broken), m.ID, m.ID, m.MAC, m.IP, m.Disk, m.BMC.Port, password, version, power, wipe))
}
