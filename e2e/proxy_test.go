package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// The site's DHCP server in TestE2EProxyDHCP: Kea on a host of its own (a
// namespace) plugged into the rack's bridge, handing out addresses from a
// pool and knowing nothing of PXE.
const (
	siteAddress = "10.99.0.2"
	sitePoolLo  = "10.99.0.100"
	sitePoolHi  = "10.99.0.149"
	// A plain DHCP client (no PXE options) on the segment.
	plainClientMAC = "52:54:00:b0:00:99"
)

// TestE2EProxyDHCP runs provisiond in proxy mode beside a real DHCP
// server: Kea gives every address, provisiond only boot information. Real
// terraform installs a BIOS server (QEMU's iPXE ROM) and a UEFI one (OVMF's
// PXE, then snponly.efi over TFTP) whose hardware has no ip: each agent
// gets its token from its Kea-assigned address, and the installed demo OS
// gets its address from Kea and reads its metadata from provisiond. A
// plain DHCP client on the segment gets an offer from Kea only.
func TestE2EProxyDHCP(t *testing.T) {
	root := requireLab(t)
	lab.RequireBinaries(t, "kea-dhcp4")
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	uefi := true
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		uefi = false
		t.Logf("OVMF not installed (apt-get install ovmf): both servers boot legacy BIOS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	// The demo OS finds its metadata at its DHCP server unless told: here
	// that is Kea, so the image installed carries provisiond's URL.
	images := filepath.Join(dir, "images")
	image := filepath.Join(images, "demo-os.raw")
	buildProxyDemoImage(t, ctx, root, image)
	t.Logf("%6.1fs built the demo image with bm.http=http://%s", since(start), lab.RackAddress)

	cfg := rackConfig(root, dir, bin, "e2epx", 2, uefi)
	cfg.ImagesDir = images
	cfg.DHCPMode = "proxy"
	rack := startRackWith(t, ctx, dir, cfg)
	consoles := rack.consoles
	site := startSite(t, ctx, rack.NS, filepath.Join(dir, "site"))
	t.Logf("%6.1fs rack up (namespace %s, provisiond in proxy mode), Kea serving %s-%s from %s (namespace %s)",
		since(start), rack.NS.Name, sitePoolLo, sitePoolHi, siteAddress, site.ns.Name)

	// Who asks on port 4011 (PXE specification 2.1: a ProxyDHCP REQUEST
	// to the boot server)? provisiond does not listen there; this does.
	asked4011 := listen4011(t, rack.NS)

	// A plain DHCP client, no PXE options: only Kea may answer it.
	offers := plainDiscover(t, site)
	t.Logf("%6.1fs plain DHCP client %s: offers by server id %v", since(start), plainClientMAC, offers)
	if offers[siteAddress] == 0 {
		t.Errorf("the plain client got no offer from Kea (%s): %v", siteAddress, offers)
	}
	for id, n := range offers {
		if id != siteAddress {
			t.Errorf("the plain client got %d offers from %s; only Kea (%s) may answer it", n, id, siteAddress)
		}
	}

	// The hardware has no ip: Kea assigns it.
	servers := map[string]any{}
	for _, s := range rack.Servers {
		servers[s.Name] = map[string]any{
			"mac":   s.MAC,
			"uefi":  s.BMC.VM.Firmware == lab.UEFI,
			"disks": []string{"/dev/vda"},
			"bmc":   map[string]any{"address": "127.0.0.1", "port": s.BMC.Port, "username": s.BMC.User},
		}
	}
	tf := newTerraform(t, ctx, rack.Rack, root, terraform, filepath.Join(bin, "terraform-provider-baremetal"), dir, "demo")
	tf.vars["servers"] = servers
	tf.writeVars()
	tf.run("init", "-input=false", "-no-color")

	marks := map[string]int{}
	for name, c := range consoles {
		marks[name] = c.Len()
	}
	applyStart := time.Now()
	tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs apply: both servers installed in %.1fs", since(start), since(applyStart))
	outputs := tf.machines()
	admin := rack.admin(t, ctx)
	reDHCP := regexp.MustCompile(`DEMO-OS dhcp iface=\S+ ip=([0-9.]+)/\d+ server=([0-9.]+)`)
	leases := site.leases(t)
	plog := lab.ReadLog(rack.Daemon.Log)
	for _, s := range rack.Servers {
		if m := outputs[s.Name]; m.State != "succeeded" {
			t.Errorf("%s: output %+v, want state succeeded", s.Name, m)
		}
		checkInstalled(t, ctx, admin, consoles[s.Name], marks[s.Name], s, "revision 1", applyStart)
		checkDisk(t, ctx, image, s, true)

		kea, ok := leases[s.MAC]
		if !ok {
			t.Errorf("%s: Kea's lease file has no lease for %s: %v", s.Name, s.MAC, leases)
			continue
		}
		// The installed OS's address and DHCP server, from its console.
		if _, l, err := consoles[s.Name].Wait(ctx, marks[s.Name], reDHCP); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		} else {
			// The agent OS prints no DEMO-OS line: this is the installed OS.
			m := reDHCP.FindStringSubmatch(l.Text)
			if m[1] != kea || m[2] != siteAddress {
				t.Errorf("%s: installed OS: %q, want ip %s from server %s (Kea)", s.Name, l.Text, kea, siteAddress)
			}
		}
		// provisiond minted the agent's token for a request from the
		// address Kea gave, and refused none.
		var agent, wrong int
		proxied := map[string]int{}  // ProxyDHCP replies by type and boot file
		recorded := map[string]int{} // addresses seen taken from Kea
		for _, line := range strings.Split(plog, "\n") {
			if !strings.Contains(line, "mac="+s.MAC) {
				continue
			}
			switch {
			case strings.Contains(line, `msg="ProxyDHCP reply"`):
				proxied[logField(line, "type")+" "+logField(line, "boot_file")]++
			case strings.Contains(line, `msg="address from another DHCP server recorded"`):
				recorded[logField(line, "ip")]++
				if ip := logField(line, "ip"); ip != kea {
					t.Errorf("%s: provisiond recorded %s, Kea leased %s", s.Name, ip, kea)
				}
			case strings.Contains(line, `msg="iPXE script: boot the agent OS"`):
				if strings.Contains(line, "remote="+kea+":") {
					agent++
				} else {
					t.Errorf("%s: agent OS script for another source than Kea's %s: %s", s.Name, kea, line)
				}
			case strings.Contains(line, "wrong_source") || strings.Contains(line, "no token minted"):
				wrong++
				t.Errorf("%s: %s", s.Name, line)
			}
		}
		if agent == 0 {
			t.Errorf("%s: provisiond never served the agent OS script to %s (Kea's address)", s.Name, kea)
		}
		if len(recorded) == 0 {
			t.Errorf("%s: provisiond never recorded the address Kea gave it", s.Name)
		}
		t.Logf("  %s: Kea leased %s; provisiond's ProxyDHCP replies %v, address recorded from REQUESTs %v; agent OS script served to it %d time(s), %d source refusals; installed OS took %s from Kea",
			s.Name, kea, proxied, recorded, agent, wrong, kea)
	}
	// Every non-netboot DHCP message (the plain client, the agent OS's and
	// the installed OS's DHCP) was dropped unanswered.
	metrics := provisiondMetrics(t, ctx, rack.NS)
	t.Logf("  provisiond metrics: %s", strings.Join(metrics, ", "))
	// provisiond answered the plain client nothing.
	for _, line := range strings.Split(plog, "\n") {
		if strings.Contains(line, "mac="+plainClientMAC) && strings.Contains(line, "reply") {
			t.Errorf("provisiond replied to the plain DHCP client: %s", line)
		}
	}
	if n := asked4011(); len(n) == 0 {
		t.Logf("  port 4011: no firmware sent anything there")
	} else {
		t.Logf("  port 4011: %s", strings.Join(n, "; "))
	}
	// The listener hears what is sent there: a probe from the site.
	probe4011(t, ctx, site)
	deadline := time.Now().Add(2 * time.Second)
	for len(asked4011()) == 0 || !strings.Contains(asked4011()[len(asked4011())-1], siteAddress) {
		if time.Now().After(deadline) {
			t.Errorf("the port 4011 listener did not hear a probe from %s: %v", siteAddress, asked4011())
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%6.1fs done", since(start))
}

// buildProxyDemoImage writes the demo image with provisiond's metadata URL
// on its kernel command line, with `make demo-image`'s tools.
func buildProxyDemoImage(t *testing.T, ctx context.Context, root, out string) {
	t.Helper()
	mk, init := filepath.Join(root, "build/mkdemoimage"), filepath.Join(root, "build/demoinit")
	for _, f := range []string{mk, init} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: `make demo-image` builds it (%v)", f, err)
		}
	}
	kdeb := exec.CommandContext(ctx, filepath.Join(root, "internal/osbuild/kernel-deb.sh"), filepath.Join(root, "build/cache"))
	deb, err := kdeb.Output()
	if err != nil {
		t.Fatalf("kernel-deb.sh: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, mk, "-kernel-deb", strings.TrimSpace(string(deb)), "-init", init,
		"-append", "bm.http=http://"+lab.RackAddress, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkdemoimage: %v\n%s", err, b)
	}
}

// site is the site's network beside the rack: a namespace plugged into the
// rack's bridge, holding Kea (site0, 10.99.0.2) and a spare port for a
// plain DHCP client (cli0, no address).
type site struct {
	ns  *lab.NetNS
	dir string
}

func startSite(t *testing.T, ctx context.Context, rack *lab.NetNS, dir string) *site {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ns, err := lab.NewNetNS(ctx, "e2esite")
	if err != nil {
		t.Fatal(err)
	}
	s := &site{ns: ns, dir: dir}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	// Each veth pair: one end a port of the rack's bridge, the other in
	// the site's namespace.
	for _, p := range []struct{ port, end, mac, cidr string }{
		{"kea0", "site0", "", siteAddress + "/24"},
		{"cli1", "cli0", plainClientMAC, ""},
	} {
		steps := [][]string{
			{"ip", "link", "add", p.port, "type", "veth", "peer", "name", p.end, "netns", ns.Name},
			{"ip", "link", "set", p.port, "master", lab.RackBridge},
			{"ip", "link", "set", p.port, "up"},
		}
		for _, st := range steps {
			if err := rack.Run(ctx, st[0], st[1:]...); err != nil {
				t.Fatal(err)
			}
		}
		steps = [][]string{{"sysctl", "-q", "-w", "net.ipv6.conf." + p.end + ".disable_ipv6=1"}}
		if p.mac != "" {
			steps = append(steps, []string{"ip", "link", "set", p.end, "address", p.mac})
		}
		if p.cidr != "" {
			steps = append(steps, []string{"ip", "addr", "add", p.cidr, "dev", p.end})
		}
		steps = append(steps, []string{"ip", "link", "set", p.end, "up"})
		for _, st := range steps {
			if err := ns.Run(ctx, st[0], st[1:]...); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.startKea(t)
	return s
}

// startKea runs kea-dhcp4 on site0 with a pool and no boot options, its
// lease file, PID file and log in the site's directory, and stops it at
// cleanup.
func (s *site) startKea(t *testing.T) {
	t.Helper()
	type m = map[string]any
	cfg := m{"Dhcp4": m{
		// Raw sockets (Kea's default): the clients have no address yet.
		"interfaces-config": m{"interfaces": []string{"site0"}},
		"lease-database":    m{"type": "memfile", "persist": true, "name": s.leaseFile(), "lfc-interval": 0},
		"valid-lifetime":    3600,
		// One address per NIC whatever client identifier each stage of the
		// boot (firmware, iPXE, agent OS, installed OS) sends.
		"match-client-id": false,
		"subnet4": []m{{
			"id": 1, "subnet": fmt.Sprintf("%s/%d", siteAddress, lab.RackPrefix),
			"pools": []m{{"pool": sitePoolLo + " - " + sitePoolHi}},
		}},
		"loggers": []m{{"name": "kea-dhcp4", "severity": "INFO", "output_options": []m{{"output": "stdout"}}}},
	}}
	raw, err := json.MarshalIndent(cfg, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(s.dir, "kea-dhcp4.conf")
	if err := os.WriteFile(conf, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(s.dir, "kea.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }() // Kea holds its own descriptor
	cmd := s.ns.Command(context.Background(), "kea-dhcp4", "-c", conf)
	// Kea's PID and logger lock files default to /run/kea: keep this
	// instance's in its own directory.
	cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+s.dir, "KEA_LOCKFILE_DIR="+s.dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kea-dhcp4: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// Registered after the namespace's cleanup, so it runs before it.
	t.Cleanup(func() {
		_ = cmd.Process.Signal(unix.SIGTERM) // ip netns exec execs kea-dhcp4: this is its PID
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("Kea log (tail):\n%s", lab.Tail([]byte(lab.ReadLog(logPath)), 4000))
		}
	})
	deadline := time.After(20 * time.Second)
	for !strings.Contains(lab.ReadLog(logPath), "DHCP4_STARTED") {
		select {
		case <-exited:
			t.Fatalf("kea-dhcp4 exited at start:\n%s", lab.ReadLog(logPath))
		case <-deadline:
			t.Fatalf("kea-dhcp4 did not start within 20s:\n%s", lab.ReadLog(logPath))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *site) leaseFile() string { return filepath.Join(s.dir, "leases4.csv") }

// leases reads Kea's memfile: the last address of every MAC.
func (s *site) leases(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(s.leaseFile())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read only
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatalf("Kea's lease file: %v", err)
	}
	out := map[string]string{}
	for _, row := range rows {
		if len(row) < 2 || row[0] == "address" {
			continue
		}
		out[strings.ToLower(row[1])] = row[0]
	}
	return out
}

// plainDiscover sends one DISCOVER without any PXE option from cli0 and
// counts the offers that come back within 3 s by server identifier.
func plainDiscover(t *testing.T, s *site) map[string]int {
	t.Helper()
	var (
		c   *nclient4.Client
		err error
	)
	inNS(t, s.ns.Name, func() {
		c, err = nclient4.New("cli0", nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(1))
	})
	if err != nil {
		t.Fatalf("DHCP client on cli0: %v", err)
	}
	defer func() { _ = c.Close() }() // the client's raw socket
	mac, _ := net.ParseMAC(plainClientMAC)
	disc, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	offers := map[string]int{}
	_, err = c.SendAndRead(context.Background(), nclient4.DefaultServers, disc, func(p *dhcpv4.DHCPv4) bool {
		if p.TransactionID == disc.TransactionID && p.MessageType() == dhcpv4.MessageTypeOffer {
			mu.Lock()
			offers[p.ServerIdentifier().String()]++
			mu.Unlock()
		}
		return false // keep listening: every offer is counted
	})
	if err != nil && !errors.Is(err, nclient4.ErrNoResponse) {
		t.Fatalf("DISCOVER: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return offers
}

// listen4011 listens on UDP port 4011 in the rack's namespace and returns
// a function that describes what arrived there so far.
func listen4011(t *testing.T, ns *lab.NetNS) func() []string {
	t.Helper()
	var (
		conn net.PacketConn
		err  error
	)
	inNS(t, ns.Name, func() { conn, err = net.ListenPacket("udp4", ":4011") })
	if err != nil {
		t.Fatalf("listen on port 4011: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // ours; stops the reader
	var (
		mu   sync.Mutex
		seen []string
	)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			what := fmt.Sprintf("%d bytes from %s", n, from)
			if p, err := dhcpv4.FromBytes(buf[:n]); err == nil {
				what = fmt.Sprintf("%s from %s (mac %s, class %q)", p.MessageType(), from, p.ClientHWAddr, p.ClassIdentifier())
			}
			mu.Lock()
			seen = append(seen, what)
			mu.Unlock()
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// clientNS makes a namespace of its own (name, a prefix) for a DHCP
// client on a segment: a veth whose end <link>1 is a port of bridge in seg
// and whose end <link>0, in the new namespace, has mac and no IPv6. It is
// removed at cleanup.
func clientNS(t *testing.T, ctx context.Context, seg *lab.NetNS, bridge, name, link, mac string) *lab.NetNS {
	t.Helper()
	ns, err := lab.NewNetNS(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	port, end := link+"1", link+"0"
	for _, st := range [][]string{
		{"ip", "link", "add", port, "type", "veth", "peer", "name", end, "netns", ns.Name},
		{"ip", "link", "set", port, "master", bridge},
		{"ip", "link", "set", port, "up"},
	} {
		if err := seg.Run(ctx, st[0], st[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range [][]string{
		{"sysctl", "-q", "-w", "net.ipv6.conf." + end + ".disable_ipv6=1"},
		{"ip", "link", "set", end, "address", mac},
		{"ip", "link", "set", end, "up"},
	} {
		if err := ns.Run(ctx, st[0], st[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// inNS runs fn on a thread switched into namespace ns, then switches it
// back. Sockets made in fn stay in ns.
func inNS(t *testing.T, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("open own netns: %v", err)
	}
	defer func() { _ = orig.Close() }() // a namespace handle, only read
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("open netns %s: %v", ns, err)
	}
	defer func() { _ = target.Close() }() // a namespace handle, only read
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns %s: %v", ns, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime ends it with the goroutine.
			panic(fmt.Sprintf("leave netns %s: %v", ns, err))
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// logField returns the value of key=value in a logfmt line ("" if none).
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

// provisiondMetrics returns provisiond's DHCP counters (received, replies,
// dropped) that are not zero.
func provisiondMetrics(t *testing.T, ctx context.Context, ns *lab.NetNS) []string {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ns.Dial(ctx, network, addr)
	}}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+lab.RackAddress+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("provisiond metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }() // read only
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "provisiond_dhcp_received_total") && !strings.HasPrefix(line, "provisiond_dhcp_replies_total") &&
			!strings.HasPrefix(line, "provisiond_dhcp_dropped_total") {
			continue
		}
		if strings.HasSuffix(line, " 0") {
			continue
		}
		out = append(out, strings.TrimPrefix(line, "provisiond_dhcp_"))
	}
	return out
}

// probe4011 sends one datagram from the site's host to provisiond's
// address, port 4011.
func probe4011(t *testing.T, ctx context.Context, s *site) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	inNS(t, s.ns.Name, func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, "udp4", lab.RackAddress+":4011")
	})
	if err != nil {
		t.Fatalf("probe port 4011: %v", err)
	}
	defer func() { _ = c.Close() }() // a probe
	if _, err := c.Write([]byte("probe")); err != nil {
		t.Fatalf("probe port 4011: %v", err)
	}
}
