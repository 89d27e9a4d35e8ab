package osbuild

import (
	"context"
	"encoding/json"
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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
	"github.com/rackform/terraform-provider-baremetal/provisiond/metadata"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// DebianImage is what `make debian-image` builds (from this package's
// directory: the repository's build/images).
var DebianImage = filepath.Join("..", "..", "build", "images", "debian-12.raw.zst")

// metadataProxyEnv makes the test binary copy stdin/stdout to and from the
// TCP address it names: QEMU's user network runs it for each guest
// connection to 10.0.2.100:80 (guestfwd=...-cmd:...), so the guest reaches
// provisiond's metadata service, served by this test on loopback, and
// nothing else (restrict=on).
const metadataProxyEnv = "OSBUILD_TEST_METADATA_PROXY"

func proxyConn(addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metadata proxy:", err)
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(os.Stdout, c) // the guest's side closes with us
		close(done)
	}()
	_, _ = io.Copy(c, os.Stdin)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
	_ = c.Close()
}

const (
	debTestHostname = "deb-test"
	debTestKey      = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJhcmVtZXRhbC1kZWJpYW4taW1hZ2UtdGVzdA test@provisiond"
	// A user's static network for QEMU's user network (gateway 10.0.2.2,
	// DNS 10.0.2.3), in cloud-init's system configuration.
	debTestStaticNetwork = `network:
  version: 2
  ethernets:
    eth0:
      dhcp4: false
      addresses: [10.0.2.20/24]
      routes: [{to: 0.0.0.0/0, via: 10.0.2.2}]
      nameservers: {addresses: [10.0.2.3]}
`
	// user-data: runcmd reports what cloud-init did to the serial console.
	debTestUserData = `#cloud-config
runcmd:
  - echo "DEBTEST hostname=$(hostname) keys=$(grep -c provisiond /home/debian/.ssh/authorized_keys) rootsize=$(df -BM --output=size / | tail -n 1 | tr -d ' ') disk=$(lsblk -bdno SIZE /dev/vda) ip=$(ip -4 -o addr show eth0 | awk '{print $4}')" > /dev/ttyS0
`
)

// TestDebianImageBoots boots build/images/debian-12.raw.zst (make
// debian-image) from a disk bigger than the image, once with SeaBIOS and
// once with OVMF. cloud-init reads provisiond's NoCloud seed from the
// metadata package served on loopback (through QEMU's user network), after
// the test has pointed the image's seedfrom at it as an install template
// would. It checks the host name, the SSH key, user-data (runcmd), growpart
// and resize2fs, and eth0's address: DHCP by default, static when the
// template adds a network block.
func TestDebianImageBoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the image's first boot is tested as root only (CI: .ci/run)")
	}
	if _, err := os.Stat(DebianImage); err != nil {
		t.Skipf("no Debian image (build it first with `make debian-image`, root): %v", err)
	}
	for _, bin := range []string{lab.QEMUBinary, "qemu-img", "zstd", "sgdisk", "debugfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make deps): %v", bin, err)
		}
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "debian-12.raw")
	if out, err := exec.Command("zstd", "-q", "-d", "-o", raw, DebianImage).CombinedOutput(); err != nil {
		t.Fatalf("zstd -d: %v: %s", err, out)
	}
	st, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	imageMiB := st.Size() >> 20

	// The seed URL is the test's: rewrite it in a copy of the root file
	// system, as an install template's writefile action does.
	seedImage(t, raw, "http://10.0.2.100/nocloud/", nil)
	// The same image with a static address instead of DHCP: the network
	// block a template writes next to the seed URL.
	rawStatic := filepath.Join(dir, "debian-12-static.raw")
	if out, err := exec.Command("cp", "--sparse=always", raw, rawStatic).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	seedImage(t, rawStatic, "http://10.0.2.100/nocloud/", map[string]string{"/etc/cloud/cloud.cfg.d/95-network.cfg": debTestStaticNetwork})

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		fw   lab.Firmware
		raw  string
		ip   string // eth0's address
	}{
		{"bios", lab.BIOS, raw, "10.0.2.15/24"},              // QEMU's DHCP lease
		{"uefi", lab.UEFI, raw, "10.0.2.15/24"},              // QEMU's DHCP lease
		{"bios-static", lab.BIOS, rawStatic, "10.0.2.20/24"}, // 95-network.cfg
	} {
		fw := tc.fw
		t.Run(tc.name, func(t *testing.T) {
			if fw == lab.UEFI {
				for _, f := range []string{lab.OVMFCode, lab.OVMFVars} {
					if _, err := os.Stat(f); err != nil {
						t.Skipf("no OVMF (Debian: ovmf): %v", err)
					}
				}
			}
			vm := lab.VM{Name: "deb-" + tc.name, Dir: filepath.Join(dir, "vm-"+tc.name), Firmware: fw, MemoryMiB: 1024}
			addr := serveMetadata(t, vm)
			vm.UserNet = "restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:" + self + " -test.run=^$"
			t.Setenv(metadataProxyEnv, addr) // inherited by QEMU, and so by the guestfwd helper
			if err := os.MkdirAll(vm.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			const diskMiB = 4096
			vm.Disk = filepath.Join(vm.Dir, "disk.qcow2")
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", tc.raw, "-F", "raw", vm.Disk, strconv.Itoa(diskMiB)+"M").CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			// Under 2 busy cores a boot takes 1.5-2.5 minutes: the three
			// need `go test -timeout 20m`.
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			defer cancel()
			start := time.Now()
			p, err := vm.Start(ctx, nil, "c")
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop()
			steps := []string{"Linux version", "Cloud-init v. 22", "DEBTEST ", "provisiond: cloud-init finished"}
			if fw == lab.UEFI {
				steps = append([]string{"BdsDxe: starting Boot"}, steps...)
			}
			var report string
			for _, want := range steps {
				re := regexp.MustCompile(regexp.QuoteMeta(want))
				if want == "DEBTEST " {
					// Without the seed cloud-init finishes without user-data:
					// stop there rather than wait for a line that cannot come.
					re = regexp.MustCompile(`DEBTEST |provisiond: cloud-init finished`)
				}
				line, err := lab.WaitForLine(ctx, vm.SerialPath(), re)
				if err != nil {
					t.Fatalf("%v\n%s", err, lab.Tail([]byte(lab.ReadLog(vm.SerialPath())), 6000))
				}
				if want == "DEBTEST " {
					if !strings.Contains(line, "DEBTEST ") {
						t.Fatalf("cloud-init finished without running user-data (seed not read?): %s\n%s", line, lab.Tail([]byte(lab.ReadLog(vm.SerialPath())), 6000))
					}
					report = line
				}
				t.Logf("%6.1fs %s", time.Since(start).Seconds(), strings.TrimSpace(line))
			}
			t.Logf("%s: boot to cloud-init done: %.1fs", tc.name, time.Since(start).Seconds())
			m := regexp.MustCompile(`hostname=(\S+) keys=(\d+) rootsize=(\d+)M disk=(\d+) ip=(\S*)`).FindStringSubmatch(report)
			if m == nil {
				t.Fatalf("cannot parse %q", report)
			}
			if m[1] != debTestHostname {
				t.Errorf("hostname %q, want %q from meta-data", m[1], debTestHostname)
			}
			if m[2] != "1" {
				t.Errorf("authorized_keys of user debian holds %s provisiond keys, want 1", m[2])
			}
			if root, _ := strconv.Atoi(m[3]); root < diskMiB-200 || int64(root) <= imageMiB {
				t.Errorf("root file system is %s MiB on a %d MiB disk (image %d MiB): not grown", m[3], diskMiB, imageMiB)
			}
			if m[5] != tc.ip {
				t.Errorf("eth0 has %q, want %s", m[5], tc.ip)
			}
			log := lab.ReadLog(vm.SerialPath())
			if strings.Contains(log, "Traceback") {
				t.Errorf("cloud-init raised an exception:\n%s", log)
			}
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "FAILED") || strings.Contains(l, "Failed to") {
					t.Errorf("a unit failed: %s", strings.TrimSpace(l))
				}
			}
		})
	}
}

// serveMetadata serves provisiond's metadata service on loopback for one
// hardware record whose address is 127.0.0.1 (the guestfwd helper's
// source address) and returns its address.
func serveMetadata(t *testing.T, vm lab.VM) string {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // a test store in a temporary directory
	err = st.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.CreateTemplate(store.Template{ID: "tpl", Name: "debian", Content: "version: \"0.1\"\n"}); err != nil {
			return err
		}
		if err := tx.CreateHardware(store.Hardware{
			ID: "hw-" + vm.Name, Hostname: debTestHostname, Arch: "x86_64", UEFI: vm.Firmware == lab.UEFI,
			Interfaces: []store.Interface{{MAC: lab.MACFor(vm.Name), IP: "127.0.0.1/8"}},
			// The record's address is the guestfwd helper's, not the VM's:
			// the VM keeps QEMU's DHCP rather than take 127.0.0.1 from the
			// meta-data's network-interfaces, as hardware with this choice does.
			Metadata: json.RawMessage(`{"network": "dhcp"}`),
		}); err != nil {
			return err
		}
		return tx.PutMachine(store.Machine{HardwareID: "hw-" + vm.Name, TemplateID: "tpl", UserData: debTestUserData, SSHKeys: []string{debTestKey}})
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// As provisiond by default (--metadata-require-token=false): cloud-init's
	// NoCloud never sends a session token.
	metadata.New(st, testLogger(t), prometheus.NewRegistry(), metadata.Options{TokenOptional: true}).Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with Close below
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// seedImage points the image's NoCloud seed at url and adds files, as an
// install template does with writefile actions: debugfs rewrites them inside
// the root file system (partition 3) of the raw image, no mount.
func seedImage(t *testing.T, raw, url string, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("sgdisk", "-i", "3", raw).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v: %s", err, out)
	}
	m := regexp.MustCompile(`First sector: (\d+)`).FindSubmatch(out)
	last := regexp.MustCompile(`Last sector: (\d+)`).FindSubmatch(out)
	if m == nil || last == nil {
		t.Fatalf("no partition 3 in %s: %s", raw, out)
	}
	first, _ := strconv.ParseInt(string(m[1]), 10, 64)
	end, _ := strconv.ParseInt(string(last[1]), 10, 64)
	fs := filepath.Join(dir, "root.ext4")
	copyRange(t, raw, fs, first*512, (end-first+1)*512)
	cfg := filepath.Join(dir, "90-provisiond.cfg")
	const path = "/etc/cloud/cloud.cfg.d/90-provisiond.cfg"
	if out, err := exec.Command("debugfs", "-R", "dump "+path+" "+cfg, fs).CombinedOutput(); err != nil {
		t.Fatalf("debugfs dump: %v: %s", err, out)
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^(\s+seedfrom:).*$`)
	if !re.Match(b) {
		t.Fatalf("%s has no seedfrom:\n%s", path, b)
	}
	if err := os.WriteFile(cfg, re.ReplaceAll(b, []byte("${1} "+url)), 0o644); err != nil {
		t.Fatal(err)
	}
	var extra strings.Builder
	for p, content := range files {
		f := filepath.Join(dir, filepath.Base(p))
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&extra, "cd %s\nwrite %s %s\nsif %s mode 0100644\nsif %s uid 0\nsif %s gid 0\n", filepath.Dir(p), f, filepath.Base(p), p, p, p)
	}
	cmds := extra.String() + "rm " + path + "\ncd " + filepath.Dir(path) + "\nwrite " + cfg + " " + filepath.Base(path) + "\nsif " + path + " mode 0100644\nsif " + path + " uid 0\nsif " + path + " gid 0\n"
	c := exec.Command("debugfs", "-w", "-f", "-", fs)
	c.Stdin = strings.NewReader(cmds)
	if out, err := c.CombinedOutput(); err != nil || strings.Contains(string(out), "rror") {
		t.Fatalf("debugfs write: %v: %s", err, out)
	}
	copyBack(t, fs, raw, first*512)
}

func copyRange(t *testing.T, src, dst string, off, n int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close() }() // read only
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(in, off, n)); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyBack(t *testing.T, src, dst string, off int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close() }() // read only
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
