package osbuild

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// metadataHelperEnv makes the test binary act as a one-connection metadata
// server on stdin/stdout: QEMU's user network runs it for each guest TCP
// connection (guestfwd=...-cmd:...), so the demo OS reaches a metadata
// service without any network outside QEMU.
const metadataHelperEnv = "OSBUILD_TEST_METADATA_HELPER"

const (
	testHostname = "demo-test-host"
	testUserData = "#cloud-config\nruncmd: [echo hello from user-data]\n"
)

func TestMain(m *testing.M) {
	if os.Getenv(metadataHelperEnv) == "1" {
		serveMetadataConn(os.Stdin, os.Stdout)
		os.Exit(0)
	}
	if addr := os.Getenv(metadataProxyEnv); addr != "" {
		proxyConn(addr)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func serveMetadataConn(in io.Reader, out io.Writer) {
	br := bufio.NewReader(in)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, status := "not found\n", http.StatusNotFound
		switch req.URL.Path {
		case "/2009-04-04/meta-data/hostname":
			body, status = testHostname, http.StatusOK
		case "/2009-04-04/user-data":
			body, status = testUserData, http.StatusOK
		}
		if _, err := fmt.Fprintf(out, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
			status, http.StatusText(status), len(body), body); err != nil {
			return // the peer is gone
		}
	}
}

// kernelDeb finds the Debian kernel package: $KERNEL_DEB, else the one `make
// agent-os` downloaded into build/cache.
func kernelDeb(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KERNEL_DEB"); p != "" {
		return p
	}
	matches, _ := filepath.Glob("../../build/cache/linux-image-*_amd64.deb")
	if len(matches) == 0 {
		t.Skip("no kernel package: run `make agent-os` (downloads it into build/cache) or set KERNEL_DEB")
	}
	slices.Sort(matches)
	return matches[len(matches)-1]
}

func goBuild(t *testing.T, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v: %s", pkg, err, b)
	}
}

func sha(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil)).With("component", t.Name())
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestAgentOSReproducibleAndBoots builds the agent OS twice from the real
// Debian kernel package with a placeholder init (the agent is someone else's
// package), checks the bytes are identical, then boots it in QEMU and checks
// the modules load and the virtio NIC and disk appear.
func TestAgentOSReproducibleAndBoots(t *testing.T) {
	deb := kernelDeb(t)
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	goBuild(t, "./testdata/placeholderinit", initBin)
	modules := append(append([]string(nil), VirtioModules...), ServerModules...)
	var sums [2][2]string
	for i := range sums {
		out := filepath.Join(dir, fmt.Sprintf("out%d", i))
		start := time.Now()
		err := BuildAgentOS(context.Background(), testLogger(t), AgentOSConfig{KernelDeb: deb, InitPath: initBin, OutDir: out, Modules: modules})
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = [2]string{sha(t, filepath.Join(out, "vmlinuz")), sha(t, filepath.Join(out, "initramfs"))}
		st, _ := os.Stat(filepath.Join(out, "initramfs"))
		t.Logf("build %d: %.1fs, initramfs %d bytes, sha256 %s", i, time.Since(start).Seconds(), st.Size(), sums[i][1])
	}
	if sums[0] != sums[1] {
		t.Fatalf("two builds from the same inputs differ: %v", sums)
	}

	if _, err := exec.LookPath(lab.QEMUBinary); err != nil {
		t.Skipf("%s not installed: boot check skipped", lab.QEMUBinary)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := lab.VM{Name: "agentos", Dir: filepath.Join(dir, "vm"), MemoryMiB: 512, UserNet: "restrict=on", Disk: disk, DiskFormat: "raw",
		ExtraArgs: []string{"-kernel", filepath.Join(dir, "out0", "vmlinuz"), "-initrd", filepath.Join(dir, "out0", "initramfs"),
			"-append", "console=ttyS0,115200 loglevel=4"}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	p, err := vm.Start(ctx, nil, "c")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	line, err := lab.WaitForLine(ctx, vm.SerialPath(), regexp.MustCompile(`PLACEHOLDER-INIT pid=`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent OS /init ran after %.1fs: %s", time.Since(start).Seconds(), line)
	m := regexp.MustCompile(`pid=1 kernel=\S+ modules=(\d+) failed=0 nics=\[eth0=52:54:00:\S+\] disks=1`).FindStringSubmatch(line)
	if m == nil {
		t.Errorf("unexpected init report (want pid 1, all modules loaded, eth0, one virtio disk): %s\n%s", line, lab.ReadLog(vm.SerialPath()))
	}
	if err := p.WaitDone(ctx); err != nil {
		t.Errorf("VM did not power off: %v", err)
	}
}

// TestDemoImageBoots builds the demo OS disk image twice (the bytes must not
// change), then boots it from disk (order=c) under legacy BIOS and under UEFI:
// syslinux or systemd-boot loads the kernel, demoinit gets an address by DHCP
// from QEMU's user network, fetches hostname and user-data from a metadata
// server reached through guestfwd, and prints them.
func TestDemoImageBoots(t *testing.T) {
	deb := kernelDeb(t)
	for _, bin := range append([]string{lab.QEMUBinary}, DemoImageTools...) {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (Debian: qemu-system-x86 dosfstools mtools syslinux): %v", bin, err)
		}
	}
	if _, err := os.Stat(SystemdBootEFI); err != nil {
		t.Skipf("no UEFI loader (Debian: systemd-boot-efi): %v", err)
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "demoinit")
	goBuild(t, "../demoinit", initBin)
	k, err := LoadKernelDeb(context.Background(), deb, DemoModules)
	if err != nil {
		t.Fatal(err)
	}
	init, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	var img string
	var sums [2]string
	for i := range sums {
		img = filepath.Join(dir, fmt.Sprintf("demo%d.raw", i))
		start := time.Now()
		if err := BuildDemoImage(context.Background(), testLogger(t), DemoImageConfig{Kernel: k, Init: init, Out: img, Append: "bm.http=http://10.0.2.100"}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha(t, img)
		t.Logf("demo image %d: %d bytes (%.1f MiB), built in %.1fs, sha256 %s", i, st.Size(), float64(st.Size())/(1<<20), time.Since(start).Seconds(), sums[i])
		if i == 0 {
			// FAT stamps times in 2-second steps: builds at least that far
			// apart would differ if any file or directory took the clock.
			time.Sleep(2100 * time.Millisecond)
		}
	}
	if sums[0] != sums[1] {
		t.Fatalf("two builds from the same inputs differ: %v", sums)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(metadataHelperEnv, "1") // inherited by QEMU, and so by the guestfwd helper
	for _, tc := range []struct {
		fw     lab.Firmware
		loader []string // what the serial console shows before the kernel runs
	}{
		{lab.BIOS, []string{"SYSLINUX"}},
		// OVMF's boot manager names the option it starts (without a loader
		// on the disk it says "failed to load ... Not Found" and falls back
		// to the EFI shell). systemd-boot with timeout 0 prints nothing;
		// the kernel's EFI stub then reports the initramfs that
		// systemd-boot offers it through the LINUX_EFI_INITRD_MEDIA device
		// path.
		{lab.UEFI, []string{"BdsDxe: starting Boot", "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID"}},
	} {
		t.Run(string(tc.fw), func(t *testing.T) {
			if tc.fw == lab.UEFI {
				for _, f := range []string{lab.OVMFCode, lab.OVMFVars} {
					if _, err := os.Stat(f); err != nil {
						t.Skipf("no OVMF (Debian: ovmf): %v", err)
					}
				}
			}
			vm := lab.VM{Name: "demo-" + string(tc.fw), Dir: filepath.Join(dir, "vm-"+string(tc.fw)), Firmware: tc.fw, MemoryMiB: 256,
				Disk: img, DiskFormat: "raw", Snapshot: true,
				UserNet: "restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:" + self + " -test.run=^$"}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			start := time.Now()
			p, err := vm.Start(ctx, nil, "c")
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop()
			for _, want := range append(tc.loader, "DEMO-OS booting kernel="+k.Version, "DEMO-OS dhcp iface=eth0 requesting",
				"DEMO-OS dhcp iface=eth0 ip=10.0.2.15/24", "DEMO-OS hostname="+testHostname, "runcmd: [echo hello from user-data]", "DEMO-OS user-data end") {
				if _, err := lab.WaitForString(ctx, vm.SerialPath(), want); err != nil {
					t.Fatalf("%v\n%s", err, lab.ReadLog(vm.SerialPath()))
				}
				t.Logf("%5.1fs %s", time.Since(start).Seconds(), want)
			}
		})
	}
}
