package e2e

import (
	"context"
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
)

// The Debian servers' hardware: a BIOS one with a virtio disk and NIC, a
// UEFI one with an NVMe disk and an e1000e NIC (the agent OS loads nvme and
// e1000e by modalias). The NVMe server's hardware names its disk by id,
// /dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_node-2, as operators do on real
// hardware: the agent OS makes udev's links itself, and the hub template's
// formatPartition turns it into ...-part3 after image2disk wrote the
// partition table. Disks are
// bigger than the 784 MiB image so growpart has room; Debian and
// cloud-init's Python under TCG want 1 GiB.
var debianShapes = []lab.Shape{
	{Firmware: lab.BIOS, DiskMiB: 2048, DiskDevice: lab.VirtioBlk, MemoryMiB: 1024},
	{Firmware: lab.UEFI, DiskMiB: 2048, DiskDevice: lab.NVMe, DiskByID: true, NIC: "e1000e", MemoryMiB: 1024},
}

// Console lines of a Debian install (besides reScript and reAgent).
var (
	reKernel    = regexp.MustCompile(`Linux version \d`)
	reCloudInit = regexp.MustCompile(`provisiond: cloud-init finished at`)
)

// TestE2EDebian: real terraform applies examples/debian, whose template is
// examples/templates/debian-hub.yaml unmodified, to a BIOS and a UEFI
// server; both boot Debian 12 (make debian-image), are checked over SSH with
// the key Terraform gave them, and are wiped and powered off by destroy.
func TestE2EDebian(t *testing.T) {
	root := requireLab(t)
	lab.RequireBinaries(t, "ssh", "ssh-keygen")
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		t.Fatalf("OVMF missing (apt-get install ovmf): the UEFI server needs it (%v)", err)
	}
	image := filepath.Join(root, "build/images/debian-12.raw.zst")
	sum, err := os.ReadFile(image + ".sha256")
	if err != nil {
		t.Fatalf("the Debian image is not built: `make debian-image` (%v)", err)
	}
	sha256 := strings.Fields(string(sum) + " ")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	rack := startRack(t, ctx, root, dir, bin, "e2edeb", len(debianShapes), false, debianShapes...)
	t.Logf("%6.1fs rack up: namespace %s, %d servers", since(start), rack.NS.Name, len(rack.Servers))
	admin := rack.admin(t, ctx)
	tf := newTerraform(t, ctx, rack.Rack, root, terraform, filepath.Join(bin, "terraform-provider-baremetal"), dir, "debian")
	tf.vars["image_sha256"] = sha256
	tf.vars["ssh_keys"] = []string{strings.TrimSpace(string(pub))}
	tf.writeVars()
	tf.run("init", "-input=false", "-no-color")
	tf.run("validate", "-no-color")

	// 1. Install: apply returns when both servers have phoned home.
	marks := map[string]int{}
	for name, c := range rack.consoles {
		marks[name] = c.Len()
	}
	applyStart := time.Now()
	tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs apply: both servers installed and phoned home in %.1fs", since(start), since(applyStart))
	outputs := tf.machines()
	for _, s := range rack.Servers {
		ip := strings.Split(s.Address, "/")[0]
		if m := outputs[s.Name]; m.State != "succeeded" || m.IP != ip {
			t.Errorf("%s: output %+v, want state succeeded and ip %s", s.Name, m, ip)
		}
		debianPhases(t, ctx, admin, rack.consoles[s.Name], marks[s.Name], s, applyStart)
		checkDebian(t, ctx, rack.NS, key, s)
	}

	// 2. Destroy: each server boots the agent again, which wipes the disk,
	// and is powered off.
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
	t.Logf("%6.1fs done", since(start))
}

// debianPhases logs the phases of a server's install, from the PXE power-on
// its BMC carried out: iPXE script, agent running, image written (the
// image2disk action finished), kexec (the installed kernel's first line),
// cloud-init done (the image's final message) and phone home (os_ready_at).
func debianPhases(t *testing.T, ctx context.Context, admin *client.Client, c *lab.Console, from int, s *lab.Server, t0 time.Time) {
	t.Helper()
	m := machineOf(t, ctx, admin, s.Name)
	if m == nil {
		return
	}
	i := from
	if on, ok := pxePowerOn(s, t0); ok {
		t0 = on
		i = max(from, c.IndexAt(on))
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // all of it is on the console already
	defer cancel()
	var report []string
	at := func(name string, when time.Time) {
		report = append(report, fmt.Sprintf("%s %.1fs", name, when.Sub(t0).Seconds()))
	}
	for _, p := range []struct {
		name string
		re   *regexp.Regexp
	}{{"iPXE script", reScript}, {"agent running", reAgent}} {
		j, l, err := c.Wait(wctx, i, p.re)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			return
		}
		i = j
		at(p.name, l.At)
	}
	w := m.GetWorkflow()
	if w.GetState() != pb.State_STATE_SUCCEEDED {
		t.Errorf("%s: workflow %s is %s", s.Name, w.GetId(), w.GetState())
	}
	for _, a := range w.GetActions() {
		if a.GetName() == "stream-image" {
			at("image written", a.GetFinishedAt().AsTime())
		}
	}
	for _, p := range []struct {
		name string
		re   *regexp.Regexp
	}{{"kexec", reKernel}, {"cloud-init done", reCloudInit}} {
		j, l, err := c.Wait(wctx, i, p.re)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			return
		}
		i = j
		at(p.name, l.At)
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

// machineOf returns the machine on the hardware with the given host name.
func machineOf(t *testing.T, ctx context.Context, admin *client.Client, hostname string) *pb.Machine {
	t.Helper()
	hw, err := admin.ListHardware(ctx, &pb.ListHardwareRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hw.GetHardware() {
		if h.GetHostname() == hostname {
			m, err := admin.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: h.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Errorf("%s: no hardware with that host name", hostname)
	return nil
}

// The checks run on the installed Debian over SSH, each line's output
// after a "== NAME" header.
const debianChecks = `echo "== hostname"; hostname
echo "== marker"; cat /var/lib/baremetal/installed-by
echo "== datasource"; sudo cat /etc/cloud/cloud.cfg.d/10_tinkerbell.cfg
echo "== cloud-init"; cloud-init status
echo "== root"; df -B1 --output=size,source / | tail -1
echo "== lsblk"; lsblk -lnb -o NAME,SIZE
echo "== ipv4"; ip -4 -o addr show scope global
`

// checkDebian logs in as debian with the key Terraform gave the machine
// and checks what cloud-init and the template did.
func checkDebian(t *testing.T, ctx context.Context, ns *lab.NetNS, key string, s *lab.Server) {
	t.Helper()
	ip := strings.Split(s.Address, "/")[0]
	sh := &vmShell{ns: ns, key: key, user: "debian", addr: ip}
	var out []byte
	var err error
	for try := 0; try < 6; try++ { // sshd may still be starting when phone_home has run
		if out, err = sh.command(ctx, debianChecks).CombinedOutput(); err == nil {
			break
		}
		time.Sleep(5 * time.Second)
	}
	if err != nil {
		t.Errorf("%s: ssh debian@%s: %v\n%s", s.Name, ip, err, out)
		return
	}
	got := map[string]string{}
	var name string
	for _, line := range strings.Split(string(out), "\n") {
		if h, ok := strings.CutPrefix(line, "== "); ok {
			name = h
			continue
		}
		got[name] += line + "\n"
	}
	if h := strings.TrimSpace(got["hostname"]); h != s.Name {
		t.Errorf("%s: hostname %q", s.Name, h)
	}
	if m := strings.TrimSpace(got["marker"]); m != "terraform, revision 1" {
		t.Errorf("%s: user-data marker %q, want %q", s.Name, m, "terraform, revision 1")
	}
	if ds := got["datasource"]; !regexp.MustCompile(`metadata_urls: \["http://`+regexp.QuoteMeta(lab.RackAddress)+`(:80)?"\]`).MatchString(ds) ||
		!strings.Contains(ds, "strict_id: false") {
		t.Errorf("%s: the writefile'd 10_tinkerbell.cfg holds:\n%s", s.Name, ds)
	}
	if st := strings.TrimSpace(got["cloud-init"]); st != "status: done" {
		t.Errorf("%s: cloud-init %q", s.Name, st)
	}
	part := "vda3"
	if s.BMC.VM.DiskDevice == lab.NVMe {
		part = "nvme0n1p3"
	}
	f := strings.Fields(got["root"])
	size, _ := strconv.ParseInt(first(f), 10, 64)
	const gib = 1 << 30
	// The 2 GiB disk less the 66 MiB of boot partitions and ext4's own
	// overhead; ungrown, the root is 718 MiB.
	// The template gives the installed kernel root= by the hardware's disk
	// name: by id, the installed OS (its initramfs's udev) mounts the link.
	root := "/dev/" + part
	if s.BMC.VM.DiskByID {
		root = s.BMC.VM.GuestDisk() + "-part3"
	}
	if len(f) != 2 || f[1] != root || size < 18*gib/10 {
		t.Errorf("%s: root file system %q, want %s grown to about 2 GiB", s.Name, strings.TrimSpace(got["root"]), root)
	}
	if !regexp.MustCompile(`(?m)^` + part + ` `).MatchString(got["lsblk"]) {
		t.Errorf("%s: lsblk has no %s:\n%s", s.Name, part, got["lsblk"])
	}
	how := "static"
	if strings.Contains(got["ipv4"], "dynamic") {
		how = "DHCP"
	}
	if !strings.Contains(got["ipv4"], " "+s.Address+" ") {
		t.Errorf("%s: no %s on the installed OS:\n%s", s.Name, s.Address, got["ipv4"])
	}
	t.Logf("  %s: ssh ok: hostname %s, marker, 10_tinkerbell.cfg, cloud-init done, / on %s %.2f GiB, %s (%s)",
		s.Name, s.Name, part, float64(size)/gib, s.Address, how)
}

func first(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
