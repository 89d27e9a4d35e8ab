// Package packaging holds the test of provisiond's Debian package: the
// files beside it are the package's (see build-deb and `make deb`).
package packaging

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/gobuild"
	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
)

const (
	testVersion = "v0.0.0-pkgtest"
	unitPath    = "/lib/systemd/system/provisiond.service"
	configPath  = "/etc/provisiond/provisiond.yaml"
	tokenPath   = "/etc/provisiond/token"
	stateDir    = "/var/lib/provisiond"
)

// TestDeb builds the .deb, installs it on this host with dpkg -i, checks
// what it put where, verifies the unit, turns TLS on as an operator does
// (certificate files at the paths the installed config names, its tls-*
// lines uncommented), runs the installed provisiond as the package's user
// with the unit's capabilities and the installed config (on free loopback
// ports, DHCP off, a temporary data dir); real terraform then creates a
// hardware and a template in it with the installed token, the installed
// `provisiond ctl` lists them with the same token and CA, terraform
// destroys them; then it purges the package.
//
// It installs for real rather than into a scratch root: dpkg --root and
// --instdir chroot into that root to run the maintainer scripts, which
// need adduser, a shell and coreutils there, i.e. a whole Debian. The
// real install tests the real scripts. It runs only as root, never where
// any trace of a provisiond install is (package, user, /etc/provisiond,
// /var/lib/provisiond, /usr/bin/provisiond), and undoes everything it did,
// including the user and the state directory that a purge leaves; no
// systemd service is started (the postinst never starts one).
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: installs a package on this host")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: installs the .deb with dpkg -i")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "deluser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	for _, dep := range []string{"adduser", "ipmitool", "ipxe"} {
		out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", dep).Output()
		if !strings.Contains(string(out), "install ok installed") {
			t.Skipf("the package depends on %s, which is not installed (make deps)", dep)
		}
	}
	// Two runs on one host (two checkouts) would install and purge the
	// same package under each other: the second waits for the first.
	lock, err := os.OpenFile("/run/lock/provisiond-pkgtest.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the purge's cleanup, so it runs after it.
	t.Cleanup(func() { _ = lock.Close() }) // closing releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock out other runs of TestDeb: %v", err)
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "provisiond").Output(); len(out) > 0 && !strings.Contains(string(out), "not-installed") {
		t.Skipf("a provisiond package is on this host (%s): not touching it", out)
	}
	if _, err := user.Lookup("provisiond"); err == nil {
		t.Skip("a provisiond user exists on this host: not touching it")
	}
	for _, p := range []string{"/usr/bin/provisiond", "/etc/provisiond", stateDir} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists on this host: not touching it", p)
		}
	}

	deb := buildDeb(t)
	fi, err := os.Stat(deb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes", filepath.Base(deb), fi.Size())

	t.Cleanup(func() { purge(t) })
	run(t, "dpkg", "-i", deb)

	checkInstalled(t)
	token := readToken(t)

	// A reinstall (what an upgrade does) keeps the token Terraform holds.
	run(t, "dpkg", "-i", deb)
	if again := readToken(t); again != token {
		t.Error("reinstalling replaced the admin token")
	}

	if out, err := exec.Command("systemd-analyze", "verify", unitPath).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}
	if out, err := exec.Command("systemd-analyze", "security", "--offline=yes", unitPath).CombinedOutput(); err == nil {
		if i := bytes.Index(out, []byte("Overall exposure level")); i >= 0 {
			t.Logf("systemd-analyze security: %s", bytes.TrimSpace(out[i:]))
		}
	}

	caFile := enableTLS(t)
	runInstalled(t, token, caFile)

	purge(t)
	for _, p := range []string{"/usr/bin/provisiond", unitPath, configPath, tokenPath, "/etc/provisiond"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after dpkg -P: %v", p, err)
		}
	}
}

// TestMain removes the binaries the tests built (the test kit's gobuild)
// when they end.
func TestMain(m *testing.M) { os.Exit(gobuild.Main(m)) }

// buildDeb builds provisiond and the package the way `make deb` does.
func buildDeb(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// As make deb builds it.
	bin := gobuild.Build(t, "./provisiond", gobuild.Options{
		Flags: []string{"-trimpath", "-ldflags", "-s -w -X main.version=" + testVersion},
		Env:   []string{"CGO_ENABLED=0"},
	})
	goarch, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("./build-deb", testVersion, strings.TrimSpace(string(goarch)), bin, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// purge removes the package and what a purge leaves on purpose: the user
// and the state directory, both made by this test's install, and the TLS
// files enableTLS put in /etc/provisiond (a purge leaves an operator's
// files, and with them the directory).
func purge(t *testing.T) {
	t.Helper()
	for _, f := range tlsFiles {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Error(err)
		}
	}
	if out, err := exec.Command("dpkg", "-P", "provisiond").CombinedOutput(); err != nil {
		t.Errorf("dpkg -P provisiond: %v\n%s", err, out)
	}
	if _, err := user.Lookup("provisiond"); err == nil {
		if out, err := exec.Command("deluser", "--system", "--quiet", "provisiond").CombinedOutput(); err != nil {
			t.Errorf("deluser provisiond: %v\n%s", err, out)
		}
	}
	if err := os.RemoveAll(stateDir); err != nil {
		t.Error(err)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// ids is the uid and gid of the package's user.
func ids(t *testing.T) (uint32, uint32) {
	t.Helper()
	u, err := user.Lookup("provisiond")
	if err != nil {
		t.Fatalf("the postinst made no provisiond user: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(uid), uint32(gid)
}

func checkInstalled(t *testing.T) {
	t.Helper()
	uid, gid := ids(t)
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err != nil || g.Name != "provisiond" {
		t.Errorf("the provisiond user's group is %v (%v), want a group provisiond", g, err)
	}
	owned := func(path string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", path, fi.Mode().Perm(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	owned("/usr/bin/provisiond", 0o755, 0, 0)
	owned(unitPath, 0o644, 0, 0)
	owned(configPath, 0o644, 0, 0)
	owned(tokenPath, 0o600, uid, gid)
	owned(stateDir, 0o750, uid, gid)

	out, err := exec.Command("dpkg-query", "-W", "-f=${Conffiles}", "provisiond").Output()
	if err != nil || !strings.Contains(string(out), configPath) {
		t.Errorf("%s is not a conffile: %q %v", configPath, out, err)
	}
	out, err = exec.Command("/usr/bin/provisiond", "--version").CombinedOutput()
	if got, want := strings.TrimSpace(string(out)), "provisiond "+testVersion; err != nil || got != want {
		t.Errorf("provisiond --version: %q %v, want %q", got, err, want)
	}
}

func readToken(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatalf("the postinst made no token: %v", err)
	}
	token := strings.TrimSpace(string(raw))
	if b, err := base64.StdEncoding.DecodeString(token); err != nil || len(b) != 32 {
		t.Errorf("token is not the base64 of 32 bytes: %d bytes decoded, %v", len(b), err)
	}
	return token
}

// unitCaps reads AmbientCapabilities= of the installed unit.
func unitCaps(t *testing.T) []uintptr {
	t.Helper()
	known := map[string]uintptr{"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
	f, err := os.Open(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read only
	var caps []uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "AmbientCapabilities=")
		if !ok {
			continue
		}
		for _, name := range strings.Fields(v) {
			c, ok := known[name]
			if !ok {
				t.Fatalf("the unit grants %s, which this test does not know", name)
			}
			caps = append(caps, c)
		}
	}
	if len(caps) == 0 {
		t.Fatal("the unit has no AmbientCapabilities=")
	}
	return caps
}

// tlsFiles are the certificate, key and agent CA enableTLS wrote.
var tlsFiles []string

// enableTLS turns TLS on the way an operator does: it writes a server
// certificate, its key and the CA that signed it to the paths the
// installed config's commented tls-cert, tls-key and tls-agent-ca lines
// name, and uncomments those lines. It returns the CA's path.
func enableTLS(t *testing.T) string {
	t.Helper()
	uid, gid := ids(t)
	pki := testpki.New(t)
	raw, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	content := map[string]string{"tls-cert": pki.ServerCert, "tls-key": pki.ServerKey, "tls-agent-ca": pki.CACert}
	paths := map[string]string{}
	lines := strings.Split(string(raw), "\n")
	for i, line := range lines {
		key, path, ok := strings.Cut(strings.TrimPrefix(line, "#"), ": ")
		if _, want := content[key]; !ok || !want || !strings.HasPrefix(line, "#") {
			continue
		}
		if _, dup := paths[key]; dup {
			t.Fatalf("%s has two %s lines", configPath, key)
		}
		paths[key] = strings.TrimSpace(path)
		lines[i] = strings.TrimPrefix(line, "#")
	}
	for key, pem := range content {
		path := paths[key]
		if path == "" {
			t.Fatalf("%s has no commented %s line to turn on", configPath, key)
		}
		if !strings.HasPrefix(path, "/etc/provisiond/") {
			t.Fatalf("%s: %s %s is not in /etc/provisiond", configPath, key, path)
		}
		tlsFiles = append(tlsFiles, path)
		if err := os.WriteFile(path, []byte(pem), 0o600); err != nil {
			t.Fatal(err)
		}
		if key == "tls-key" { // read by the provisiond user, nobody else
			if err := os.Chown(path, int(uid), int(gid)); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(configPath, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return paths["tls-agent-ca"]
}

// runInstalled runs /usr/bin/provisiond as systemd would run the unit
// (its user, its ambient capabilities, the installed config with TLS on),
// with the listeners moved to loopback: TFTP on a port below 1024, which
// only CAP_NET_BIND_SERVICE opens to the provisiond user. Then real
// terraform and the installed `provisiond ctl` talk to it.
func runInstalled(t *testing.T, token, caFile string) {
	t.Helper()
	uid, gid := ids(t)
	data, err := os.MkdirTemp("", "provisiond-pkg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(data); err != nil {
			t.Error(err)
		}
	})
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpAddr, tftpAddr := testkit.FreeTCP(t), testkit.FreeTCP(t), freePrivilegedUDP(t)

	// Room for building the provider and three terraform runs.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	log := &testkit.Buffer{}
	cmd := exec.CommandContext(ctx, "/usr/bin/provisiond", "--config", configPath,
		"--data-dir", filepath.Join(data, "db"), "--grpc-listen", grpcAddr, "--http-listen", httpAddr,
		"--tftp-listen", tftpAddr, "--dhcp-mode", "off")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // no PROVISIOND_* of this host
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		AmbientCaps: unitCaps(t),
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM) // an exited process has nothing to stop
		if err := <-exited; err != nil {
			t.Errorf("provisiond did not stop cleanly on SIGTERM: %v\n%s", err, log.String())
		}
	}
	defer stop()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			_ = resp.Body.Close() // the status is the answer
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/healthz: %s", resp.Status)
			}
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("provisiond exited: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz did not answer within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		token string
		want  codes.Code
	}{
		"generated token": {token, codes.OK},
		"another token":   {strings.Repeat("x", 44), codes.Unauthenticated},
	} {
		c, err := client.New(ctx, client.Config{Endpoint: grpcAddr, Token: tc.token, CACert: string(caPEM), ConnectTimeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("%s: connect: %v", name, err)
		}
		_, err = c.ListHardware(ctx, &pb.ListHardwareRequest{})
		if status.Code(err) != tc.want {
			t.Errorf("%s: ListHardware: %v, want %v", name, err, tc.want)
		}
		_ = c.Close() // the call was the test
	}

	if err := tftpFetch(tftpAddr, "undionly.kpxe"); err != nil {
		t.Errorf("TFTP on %s (a port below 1024, as the provisiond user): %v\n%s", tftpAddr, err, log.String())
	}
	// TLS is on: a plain-text client gets nowhere.
	if c, err := client.New(ctx, client.Config{Endpoint: "grpc://" + grpcAddr, Token: token, ConnectTimeout: 5 * time.Second}); err == nil {
		if _, err := c.ListHardware(ctx, &pb.ListHardwareRequest{}); err == nil {
			t.Error("a plain-text ListHardware succeeded: the installed config's TLS lines did not take")
		}
		_ = c.Close() // the call was the test
	}
	terraformAgainstInstalled(t, grpcAddr, token, caFile)
	stop()
}

// freePrivilegedUDP finds a free UDP port below 1024 on loopback.
func freePrivilegedUDP(t *testing.T) string {
	t.Helper()
	for port := 1000; port > 900; port-- {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		_ = c.Close() // free for provisiond
		return addr
	}
	t.Fatal("no free UDP port in 901-1000 on 127.0.0.1")
	return ""
}

// tftpFetch sends a TFTP read request (RFC 1350) and waits for the first
// DATA packet, retrying while the server may still be starting.
func tftpFetch(addr, file string) error {
	server, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }() // only read from
	rrq := append(append([]byte{0, 1}, file...), 0)
	rrq = append(append(rrq, "octet"...), 0)
	buf := make([]byte, 1024)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.WriteTo(rrq, server); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return err
		}
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			continue
		}
		if n >= 4 && buf[0] == 0 && buf[1] == 3 && buf[2] == 0 && buf[3] == 1 {
			return nil
		}
		return fmt.Errorf("first answer is not DATA block 1: % x", buf[:min(n, 32)])
	}
	return errors.New("no answer within 10s")
}
