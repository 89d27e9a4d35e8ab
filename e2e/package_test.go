package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
)

// The package host's world: a segment with the host's side (the BMC, the
// peers) at .1 and the VM that runs the package at the guide's public IP.
const (
	pkgSegmentHost = "10.0.0.1"
	pkgClientMAC   = "02:00:00:00:5e:01"
	pkgClientIP    = "10.0.0.50"
	pkgVersion     = "v0.0.0-e2epkg"
)

// TestE2EPackage installs provisiond's .deb on a booted Debian 12 (the
// image make debian-image builds; the packages it lacks come from make
// debian-image-debs) and runs it as the first-rack guide's package path
// does: apt installs it with its dependencies, the guide's agent OS and
// TLS steps put their files in place, the guide's settings go into the
// installed provisiond.yaml, and `systemctl enable --now provisiond` starts
// it under real systemd, with the unit's user, capabilities, state
// directory and hardening. packaging/deb_test.go checks the package's
// files and scripts on this host, where no systemd runs; this test is the
// unit's only proof that provisiond serves under it.
//
// From outside the VM, real peers then use what it serves: a DHCP client
// (DORA of a registered MAC, the boot file in the ACK), TFTP (the iPXE
// binary of the ipxe package, byte for byte), HTTP (health, the agent OS
// files, an image, the iPXE script of the MAC, metrics), the gRPC API with
// TLS and the package's token (hardware created with its BMC checked by the
// ipmitool that provisiond runs, against ipmi_sim; a wrong password
// refused). Inside the VM: provisiond ctl lists the hardware; the journal
// has provisiond's log and neither the token nor the BMC password; the
// process runs as provisiond with only CAP_NET_BIND_SERVICE and
// CAP_NET_RAW; killed, systemd restarts it and the store kept the hardware.
func TestE2EPackage(t *testing.T) {
	root := requireLab(t)
	lab.RequireBinaries(t, "ssh", "ssh-keygen", "debugfs", "sgdisk", "zstd", "curl")
	image := filepath.Join(root, "build/images/debian-12.raw.zst")
	debs := filepath.Join(root, "build/images/debian-12-debs")
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the Debian image is not built: `make debian-image` (%v)", err)
	}
	depDebs, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	if len(depDebs) == 0 {
		t.Fatalf("no .debs in %s: `make debian-image-debs` downloads what the image lacks for the package", debs)
	}
	plan := readGuidePlan(t, root)
	settings := plan.role(t, roleConfig)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()

	deb := buildDeb(t, ctx, root, dir)
	t.Logf("%6.1fs built %s", since(start), filepath.Base(deb))

	// The segment: a bridge in a namespace, the VM's tap on it.
	ns, err := lab.NewNetNS(ctx, "e2epkg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	prefix := prefixOf(plan.Address)
	if err := ns.AddBridge(ctx, "rack0", pkgSegmentHost+"/"+prefix); err != nil {
		t.Fatal(err)
	}
	if err := ns.AddBridgePort(ctx, "tap-pkg", "rack0"); err != nil {
		t.Fatal(err)
	}
	vm := lab.VM{Name: "pkghost", Dir: filepath.Join(dir, "pkghost"), Tap: "tap-pkg",
		Disk: filepath.Join(dir, "pkghost", "disk.raw"), DiskFormat: "raw", MemoryMiB: 1024}
	if err := os.MkdirAll(vm.Dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// The disk: the image, with what the test needs to reach it (a host
	// key, root's authorized key, a static address on an interface named
	// as the guide names it; cloud-init off: no metadata here) and what
	// the guide's steps take from the checkout, under /root/pkgtest.
	key := filepath.Join(dir, "id_ed25519")
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	for _, k := range []string{key, hostKey} {
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2epkg", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pki, err := testpki.Generate(net.ParseIP(plan.PublicIP))
	if err != nil {
		t.Fatal(err)
	}
	files := []imageFile{
		{Path: "/etc/cloud/cloud-init.disabled", Mode: 0o644},
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Src: hostKey},
		{Path: "/etc/ssh/ssh_host_ed25519_key.pub", Mode: 0o644, Src: hostKey + ".pub"},
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Src: key + ".pub"},
		{Path: "/etc/systemd/network/10-lab.link", Mode: 0o644, Data: fmt.Sprintf(
			"[Match]\nMACAddress=%s\n\n[Link]\nName=%s\n", lab.MACFor(vm.Name), plan.Interface)},
		{Path: "/etc/systemd/network/10-lab.network", Mode: 0o644, Data: fmt.Sprintf(
			"[Match]\nName=%s\n\n[Network]\nAddress=%s/%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n", plan.Interface, plan.PublicIP, prefix)},
		{Path: "/root/pkgtest/build/" + filepath.Base(deb), Mode: 0o644, Src: deb},
		{Path: "/root/pkgtest/build/agent-os/vmlinuz", Mode: 0o644, Src: filepath.Join(root, "build/agent-os/vmlinuz")},
		{Path: "/root/pkgtest/build/agent-os/initramfs", Mode: 0o644, Src: filepath.Join(root, "build/agent-os/initramfs")},
		{Path: "/root/pkgtest/tls/agent-ca.pem", Mode: 0o644, Data: pki.CACert},
		{Path: "/root/pkgtest/tls/tls.pem", Mode: 0o644, Data: pki.ServerCert},
		{Path: "/root/pkgtest/tls/tls-key.pem", Mode: 0o600, Data: pki.ServerKey},
		{Path: "/root/pkgtest/probe.img", Mode: 0o644, Data: "an image served from /srv/images\n"},
	}
	for _, d := range depDebs {
		files = append(files, imageFile{Path: "/root/pkgtest/debs/" + filepath.Base(d), Mode: 0o644, Src: d})
	}
	if err := prepareDisk(ctx, image, vm.Disk, filepath.Join(dir, "debugfs"), files); err != nil {
		t.Fatal(err)
	}
	t.Logf("%6.1fs disk ready: the image and %d files", since(start), len(files))

	bmc := &lab.BMC{VM: lab.VM{Name: "server-1", Dir: filepath.Join(dir, "server-1")}, Addr: pkgSegmentHost, Port: 623,
		User: "admin", Password: "pkg-" + strconv.Itoa(os.Getpid())}
	if err := bmc.Start(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bmc.Close(); err != nil {
			t.Error(err)
		}
	})
	console, err := lab.FollowConsole(ctx, vm.SerialPath(), filepath.Join(dir, "pkghost.console"))
	if err != nil {
		t.Fatal(err)
	}
	proc, err := vm.Start(ctx, ns, "c")
	if err != nil {
		t.Fatal(err)
	}
	sh := &vmShell{ns: ns, key: key, addr: plan.PublicIP}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := sh.run(context.Background(), "journalctl -u provisiond --no-pager | tail -60"); err == nil {
				t.Logf("journal of provisiond (tail):\n%s", out)
			}
			t.Logf("console of pkghost (tail):\n%s", console.Tail(60))
		}
		proc.Stop()
	})
	if err := sh.wait(ctx, 5*time.Minute, proc); err != nil {
		t.Fatalf("ssh to the booted Debian at %s: %v\nconsole:\n%s", plan.PublicIP, err, console.Tail(40))
	}
	t.Logf("%6.1fs Debian booted, ssh answers at %s on %s", since(start), plan.PublicIP, plan.Interface)

	// The guide, step 1 (the package), the agent OS, the TLS files'
	// owner and mode as step 2 leaves them, and an image for step 3.
	sh.must(t, ctx, "install the package", `set -e
cd /root/pkgtest
# The guide: apt install ./build/provisiond_*.deb (the VM has no network:
# the dependencies it would fetch are files here).
apt-get install -y -q ./build/provisiond_*.deb ./debs/*.deb
dpkg-query -W -f='${Status} ${Version}\n' provisiond
install -d -o provisiond -g provisiond /var/lib/provisiond/agent-os
install -m 644 build/agent-os/vmlinuz build/agent-os/initramfs /var/lib/provisiond/agent-os/
install -m 644 tls/agent-ca.pem tls/tls.pem /etc/provisiond/
install -m 600 tls/tls-key.pem /etc/provisiond/
cd /etc/provisiond && chown provisiond:provisiond tls-key.pem && chmod 600 tls-key.pem
install -d /srv/images
install -m 644 /root/pkgtest/probe.img /srv/images/
`)
	conf, err := sh.run(ctx, "cat /etc/provisiond/provisiond.yaml")
	if err != nil {
		t.Fatalf("read the installed config: %v\n%s", err, conf)
	}
	edited, err := applySettings(conf, settings.Body)
	if err != nil {
		t.Fatalf("%s on the installed config: %v", settings, err)
	}
	if out, err := sh.runInput(ctx, "cat > /etc/provisiond/provisiond.yaml", edited); err != nil {
		t.Fatalf("write the config: %v\n%s", err, out)
	}
	started := time.Now()
	sh.must(t, ctx, "start provisiond", "systemctl enable --now provisiond")
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: ns.Dial}}
	base := "http://" + net.JoinHostPort(plan.PublicIP, "8080")
	if err := waitHealthy(ctx, httpc, base+"/healthz"); err != nil {
		t.Fatal(err)
	}
	t.Logf("%6.1fs systemctl enable --now provisiond: /healthz ok after %.1fs", since(start), since(started))

	// The unit as systemd runs it.
	out := sh.must(t, ctx, "the service's process", `set -e
pid=$(systemctl show -p MainPID --value provisiond)
echo "user=$(ps -o user= -p "$pid")"
grep '^Cap\(Eff\|Bnd\|Amb\):' /proc/$pid/status
systemctl show -p NRestarts provisiond`)
	for _, want := range []string{"user=provisiond", "CapEff:\t0000000000002400", "CapBnd:\t0000000000002400", "CapAmb:\t0000000000002400"} {
		if !strings.Contains(out, want) {
			t.Errorf("provisiond's process: want %q (user provisiond, CAP_NET_BIND_SERVICE and CAP_NET_RAW only):\n%s", want, out)
		}
	}
	if sec, err := sh.run(ctx, "systemd-analyze security --no-pager provisiond | tail -1"); err == nil {
		t.Logf("  systemd-analyze security (live): %s", strings.TrimSpace(sec))
	}

	// The API, with TLS and the token the package made.
	token := strings.TrimSpace(sh.must(t, ctx, "read the token", "cat /etc/provisiond/token"))
	_, port, _ := net.SplitHostPort(plan.Endpoint)
	admin, err := client.New(ctx, client.Config{
		Endpoint: net.JoinHostPort(plan.PublicIP, port), Token: token, CACert: pki.CACert,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) { return ns.Dial(ctx, "tcp", addr) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close() }() // the test's own connection
	hwReq := func(password string) *pb.CreateHardwareRequest {
		return &pb.CreateHardwareRequest{VerifyBmc: true, Hardware: &pb.Hardware{
			Hostname:   "pkg-client",
			Interfaces: []*pb.Interface{{Mac: pkgClientMAC, Ip: pkgClientIP + "/" + prefix}},
			Bmc:        &pb.BMC{Driver: "ipmi", Address: pkgSegmentHost, Port: 623, Username: bmc.User, Password: password},
			Netboot:    &pb.Netboot{AllowPxe: true},
		}}
	}
	t0 := time.Now()
	if _, err := admin.CreateHardware(ctx, hwReq("wrong-"+bmc.Password)); err == nil || !strings.Contains(err.Error(), pkgSegmentHost) {
		t.Errorf("hardware with a wrong BMC password: want an error naming the BMC %s, got %v", pkgSegmentHost, err)
	} else {
		t.Logf("  wrong BMC password refused in %.1fs: %v", since(t0), err)
	}
	t0 = time.Now()
	hw, err := admin.CreateHardware(ctx, hwReq(bmc.Password))
	if err != nil {
		t.Fatalf("create hardware, its BMC checked by provisiond's ipmitool: %v", err)
	}
	t.Logf("  hardware %s created, BMC checked by ipmitool under the unit in %.1fs", hw.GetId(), since(t0))

	// DHCP from a client on the segment.
	boot := pkgDORA(t, ctx, ns)
	t.Logf("  DHCP: %s acked %s from %s, boot file %q", pkgClientMAC, pkgClientIP, plan.PublicIP, boot)

	// TFTP and HTTP: the files the package's paths hold, byte for byte.
	remoteSums := sh.must(t, ctx, "checksums", "cd / && sha256sum /usr/lib/ipxe/undionly.kpxe /var/lib/provisiond/agent-os/vmlinuz /srv/images/probe.img")
	sum := func(path string) string {
		m := regexp.MustCompile(`(?m)^([0-9a-f]{64})  ` + regexp.QuoteMeta(path) + `$`).FindStringSubmatch(remoteSums)
		if m == nil {
			t.Fatalf("no sha256sum of %s in:\n%s", path, remoteSums)
		}
		return m[1]
	}
	tftpFile := filepath.Join(dir, "undionly.kpxe")
	if out, err := ns.Command(ctx, "curl", "-sS", "--fail", "-o", tftpFile, "tftp://"+plan.PublicIP+"/undionly.kpxe").CombinedOutput(); err != nil {
		t.Errorf("TFTP undionly.kpxe: %v\n%s", err, out)
	} else if got := fileSum(t, tftpFile); got != sum("/usr/lib/ipxe/undionly.kpxe") {
		t.Errorf("TFTP undionly.kpxe: sha256 %s, the ipxe package's is %s", got, sum("/usr/lib/ipxe/undionly.kpxe"))
	}
	for path, want := range map[string]string{
		"/ipxe/bin/undionly.kpxe": sum("/usr/lib/ipxe/undionly.kpxe"),
		"/boot/vmlinuz":           sum("/var/lib/provisiond/agent-os/vmlinuz"),
		"/images/probe.img":       sum("/srv/images/probe.img"),
	} {
		b, err := httpGet(ctx, httpc, base+path)
		if err != nil {
			t.Errorf("HTTP %s: %v", path, err)
			continue
		}
		if got := sha256Hex(b); got != want {
			t.Errorf("HTTP %s: sha256 %s, the file's is %s", path, got, want)
		}
	}
	if b, err := httpGet(ctx, httpc, base+"/ipxe/"+pkgClientMAC); err != nil || !bytes.HasPrefix(b, []byte("#!ipxe")) {
		t.Errorf("HTTP /ipxe/%s: want an iPXE script: %v\n%s", pkgClientMAC, err, b)
	}
	if b, err := httpGet(ctx, httpc, base+"/metrics"); err != nil || !bytes.Contains(b, []byte("provisiond_hardware 1")) {
		t.Errorf("HTTP /metrics: want provisiond_hardware 1: %v\n%s", err, lab.Tail(b, 800))
	}
	t.Logf("  TFTP and HTTP served the package's files; the iPXE script and metrics answered")

	// Inside: the CLI, the journal.
	ctl := "provisiond ctl --endpoint " + net.JoinHostPort(plan.PublicIP, port) + " --token-file /etc/provisiond/token --ca-cert /etc/provisiond/agent-ca.pem hardware"
	if out := sh.must(t, ctx, "provisiond ctl", ctl); !strings.Contains(out, "pkg-client") {
		t.Errorf("%s: want pkg-client listed:\n%s", ctl, out)
	}
	journal := sh.must(t, ctx, "the journal", "journalctl -u provisiond --no-pager -o cat")
	if !strings.Contains(journal, "pkg-client") && !strings.Contains(journal, hw.GetId()) {
		t.Errorf("the journal has no line about the hardware created:\n%s", lab.Tail([]byte(journal), 3000))
	}
	for what, secret := range map[string]string{"the admin token": token, "the BMC password": bmc.Password} {
		if strings.Contains(journal, secret) {
			t.Errorf("the journal holds %s", what)
		}
	}

	// Killed, systemd starts it again; the store kept the hardware.
	t0 = time.Now()
	sh.must(t, ctx, "kill provisiond", "systemctl kill -s KILL provisiond")
	if out, err := sh.run(ctx, `for i in $(seq 60); do
  [ "$(systemctl show -p NRestarts --value provisiond)" -ge 1 ] && systemctl is-active -q provisiond && exit 0
  sleep 0.5
done
systemctl status --no-pager provisiond; exit 1`); err != nil {
		t.Fatalf("provisiond killed: systemd did not restart it within 30 s: %v\n%s", err, out)
	}
	if err := waitHealthy(ctx, httpc, base+"/healthz"); err != nil {
		t.Fatal(err)
	}
	if out := sh.must(t, ctx, "provisiond ctl after the restart", ctl); !strings.Contains(out, "pkg-client") {
		t.Errorf("after the restart, %s: want pkg-client listed:\n%s", ctl, out)
	}
	t.Logf("%6.1fs killed with SIGKILL: restarted by systemd, healthy and the hardware kept, %.1fs", since(start), since(t0))
}

// buildDeb builds provisiond and its package as `make deb` does, into dir.
func buildDeb(t *testing.T, ctx context.Context, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "deb", "provisiond")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+pkgVersion, "-o", bin, "./provisiond")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./provisiond: %v\n%s", err, out)
	}
	cmd = exec.CommandContext(ctx, filepath.Join(root, "packaging", "build-deb"), pkgVersion, "amd64", bin, filepath.Join(dir, "deb"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// imageFile is a file put into the image's root file system: Src's
// content, or Data; owned by root.
type imageFile struct {
	Path string
	Mode os.FileMode
	Src  string
	Data string
}

// prepareDisk writes the image decompressed to disk and puts files into
// its root file system (partition 3) with debugfs: no loop device, no
// mount on this host. Existing files are replaced, missing directories
// made (mode 0700 below /root, else 0755).
func prepareDisk(ctx context.Context, image, disk, scratch string, files []imageFile) error {
	if out, err := exec.CommandContext(ctx, "zstd", "-dqf", image, "-o", disk).CombinedOutput(); err != nil {
		return fmt.Errorf("decompress %s: %v: %s", image, err, out)
	}
	out, err := exec.CommandContext(ctx, "sgdisk", "-i", "3", disk).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sgdisk -i 3 %s: %v: %s", disk, err, out)
	}
	m := regexp.MustCompile(`First sector: (\d+)`).FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("%s: no first sector of partition 3 in: %s", disk, out)
	}
	first, _ := strconv.ParseInt(string(m[1]), 10, 64)
	fs := fmt.Sprintf("%s?offset=%d", disk, first*512)
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return err
	}
	exists := func(path string) bool {
		out, _ := exec.CommandContext(ctx, "debugfs", "-R", "stat "+path, fs).CombinedOutput()
		return bytes.Contains(out, []byte("Inode: "))
	}
	var cmds strings.Builder
	made := map[string]bool{}
	var mkdirs func(d string)
	mkdirs = func(d string) {
		if d == "/" || made[d] {
			return
		}
		mkdirs(filepath.Dir(d))
		made[d] = true
		if exists(d) {
			return
		}
		mode := "040755"
		if strings.HasPrefix(d, "/root/") {
			mode = "040700"
		}
		fmt.Fprintf(&cmds, "mkdir %s\nsif %s mode %s\n", d, d, mode)
	}
	for i, f := range files {
		src := f.Src
		if src == "" {
			src = filepath.Join(scratch, strconv.Itoa(i))
			if err := os.WriteFile(src, []byte(f.Data), 0o600); err != nil {
				return err
			}
		}
		d := filepath.Dir(f.Path)
		mkdirs(d)
		// debugfs's write names the new file in the current directory.
		fmt.Fprintf(&cmds, "cd %s\n", d)
		if exists(f.Path) {
			fmt.Fprintf(&cmds, "rm %s\n", filepath.Base(f.Path))
		}
		fmt.Fprintf(&cmds, "write %s %s\nsif %s mode 0%o\nsif %s uid 0\nsif %s gid 0\n",
			src, filepath.Base(f.Path), filepath.Base(f.Path), 0o100000|f.Mode.Perm(), filepath.Base(f.Path), filepath.Base(f.Path))
	}
	script := filepath.Join(scratch, "cmds")
	if err := os.WriteFile(script, []byte(cmds.String()), 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", script, fs)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs: %v: %s", err, stderr.String())
	}
	// debugfs goes on after a failed command: any message but its banner
	// is one.
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs ") {
			return fmt.Errorf("debugfs on %s: %s", disk, stderr.String())
		}
	}
	for _, f := range files {
		if !exists(f.Path) {
			return fmt.Errorf("debugfs: %s is not in the image after writing it", f.Path)
		}
	}
	return nil
}

// applySettings sets the settings block's keys in the installed config as
// an operator editing it does: the line of each key, active or commented
// out, becomes the block's line; a key the file does not have is added at
// its end. A key twice in the file is an error (the edit would be
// ambiguous).
func applySettings(installed, block string) (string, error) {
	lines := strings.Split(strings.TrimRight(installed, "\n"), "\n")
	var added []string
	for _, l := range strings.Split(block, "\n") {
		key, _, ok := strings.Cut(command(l), ":")
		if !ok {
			continue
		}
		key = strings.TrimSpace(key)
		re := regexp.MustCompile(`^#?\s*` + regexp.QuoteMeta(key) + `:`)
		hit := -1
		for i, have := range lines {
			if re.MatchString(have) {
				if hit >= 0 {
					return "", fmt.Errorf("%s is on lines %d and %d of the installed config", key, hit+1, i+1)
				}
				hit = i
			}
		}
		if hit >= 0 {
			lines[hit] = strings.TrimSpace(l)
		} else {
			added = append(added, strings.TrimSpace(l))
		}
	}
	return strings.Join(append(lines, added...), "\n") + "\n", nil
}

// vmShell runs commands on a VM over ssh, from the namespace, as user
// (root when empty) with key.
type vmShell struct {
	ns   *lab.NetNS
	key  string
	user string
	addr string
}

func (s *vmShell) command(ctx context.Context, remote string) *exec.Cmd {
	user := s.user
	if user == "" {
		user = "root"
	}
	return s.ns.Command(ctx, "ssh", "-i", s.key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", user+"@"+s.addr, remote)
}

// run runs script with bash on the VM and returns its output. The script
// goes to a file first: run from standard input, apt and dpkg would read
// the rest of it as their own input.
func (s *vmShell) run(ctx context.Context, script string) (string, error) {
	return s.runInput(ctx, "f=$(mktemp) && cat > $f && bash $f </dev/null; r=$?; rm -f $f; exit $r", script)
}

// runInput runs remote with input on its standard input.
func (s *vmShell) runInput(ctx context.Context, remote, input string) (string, error) {
	cmd := s.command(ctx, remote)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs script and fails the test when it fails.
func (s *vmShell) must(t *testing.T, ctx context.Context, what, script string) string {
	t.Helper()
	out, err := s.run(ctx, script)
	if err != nil {
		t.Fatalf("%s on the VM: %v\n%s", what, err, out)
	}
	return out
}

// wait polls until ssh runs a command, the VM ends or the time is up.
func (s *vmShell) wait(ctx context.Context, limit time.Duration, proc *lab.Process) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var out string
	for {
		o, err := s.run(ctx, "systemctl is-system-running --wait >/dev/null; true")
		if err == nil {
			return nil
		}
		out = o
		select {
		case <-proc.Done():
			return fmt.Errorf("QEMU ended")
		case <-ctx.Done():
			return fmt.Errorf("%w: last ssh said: %s", ctx.Err(), out)
		case <-time.After(2 * time.Second):
		}
	}
}

// waitHealthy polls url until it answers 200, for up to a minute.
func waitHealthy(ctx context.Context, c *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		if _, err := httpGet(ctx, c, url); err == nil {
			return nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", url, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func httpGet(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return b, err
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b)
}

// pkgDORA runs a DHCP client for pkgClientMAC on a veth into the segment
// (a namespace of its own) and returns the ACK's boot file.
func pkgDORA(t *testing.T, ctx context.Context, seg *lab.NetNS) string {
	t.Helper()
	ns := clientNS(t, ctx, seg, "rack0", "e2epkg-cl", "pc", pkgClientMAC)
	var (
		c   *nclient4.Client
		err error
	)
	inNS(t, ns.Name, func() {
		c, err = nclient4.New("pc0", nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
	})
	if err != nil {
		t.Fatalf("DHCP client on pc0: %v", err)
	}
	defer func() { _ = c.Close() }() // the client's raw socket
	// A PXE client's DISCOVER and REQUEST: the class, architecture (93)
	// and network interface (94, UNDI 2.1) that make it a netboot client.
	lease, err := c.Request(ctx,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 0})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1})))
	if err != nil {
		t.Fatalf("DORA of %s: %v", pkgClientMAC, err)
	}
	ack := lease.ACK
	if ack.YourIPAddr.String() != pkgClientIP || ack.BootFileName == "" {
		t.Fatalf("ACK for %s: %s\nwant yiaddr %s and a boot file", pkgClientMAC, ack.Summary(), pkgClientIP)
	}
	return ack.BootFileName
}

// TestPackageSettings applies the guide's settings block to the package's
// config as TestE2EPackage does, without a lab: each key ends up set once,
// active, to the guide's value.
func TestPackageSettings(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	plan := readGuidePlan(t, root)
	block := plan.role(t, roleConfig)[0].Body
	installed, err := os.ReadFile(filepath.Join(root, "packaging", "provisiond.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := applySettings(string(installed), block)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(block, "\n") {
		key, value, ok := strings.Cut(command(l), ":")
		if !ok {
			continue
		}
		n++
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.TrimSpace(key)) + `:\s*(\S+)`)
		if m := re.FindAllStringSubmatch(got, -1); len(m) != 1 || m[0][1] != strings.TrimSpace(value) {
			t.Errorf("%s: want it once, active, set to %s; got %q", key, strings.TrimSpace(value), m)
		}
	}
	if n == 0 {
		t.Fatal("the guide's settings block has no key")
	}
	if _, err := applySettings("a: 1\n#a: 2\n", "a: 3\n"); err == nil {
		t.Error("a key twice in the installed config: want an error")
	}
}
