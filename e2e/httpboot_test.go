package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

// OVMF's console lines of its network boot options.
var (
	reHTTPBoot = regexp.MustCompile(`>>Start HTTP Boot over IPv4`)
	rePXEBoot  = regexp.MustCompile(`>>Start PXE over IPv`)
)

// TestE2EHTTPBoot installs a UEFI server whose firmware boots by UEFI HTTP
// boot with PXE disabled in its setup (Debian's OVMF, built with
// NETWORK_HTTP_BOOT_ENABLE; lab.Shape.HTTPBoot): its DHCP request carries
// option 60 "HTTPClient", provisiond's offer echoes it with the URL of
// snponly.efi on its HTTP server, and iPXE goes on from there as on PXE.
// Real terraform installs the demo OS, which boots and reads its
// user-data; destroy wipes the disk and powers the server off. No TFTP
// transfer is made in the whole run.
func TestE2EHTTPBoot(t *testing.T) {
	root := requireLab(t)
	terraform := filepath.Join(root, "bin", "terraform")
	if _, err := os.Stat(terraform); err != nil {
		t.Fatalf("bin/terraform missing: `make tools` builds it (%v)", err)
	}
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		t.Fatalf("OVMF missing (apt-get install ovmf; DEB_PACKAGES has it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	start := time.Now()
	dir := t.TempDir()
	bin := build(t, ctx, root, dir, map[string]string{"./provisiond": "provisiond", ".": "terraform-provider-baremetal"})
	t.Logf("%6.1fs built provisiond and the provider", since(start))

	rack := startRack(t, ctx, root, dir, bin, "e2ehb", 1, false, lab.Shape{Firmware: lab.UEFI, HTTPBoot: true})
	s := rack.Servers[0]
	console := rack.consoles[s.Name]
	t.Logf("%6.1fs rack up: namespace %s, %s UEFI with PXE off and HTTP boot on", since(start), rack.NS.Name, s.Name)
	admin := rack.admin(t, ctx)

	tf := newTerraform(t, ctx, rack.Rack, root, terraform, filepath.Join(bin, "terraform-provider-baremetal"), dir, "demo")
	tf.run("init", "-input=false", "-no-color")

	// 1. Install.
	mark := console.Len()
	applyStart := time.Now()
	tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs apply: installed in %.1fs", since(start), since(applyStart))
	if m := tf.machines()[s.Name]; m.State != "succeeded" || m.IP != strings.Split(s.Address, "/")[0] {
		t.Errorf("%s: output %+v, want state succeeded and ip %s", s.Name, m, s.Address)
	}
	// The firmware's HTTP boot, before iPXE's script, counted from the
	// power-on into the network.
	t0 := applyStart
	if on, ok := pxePowerOn(s, applyStart); ok {
		t0 = on
	}
	checkInstalled(t, ctx, admin, console, mark, s, "revision 1", applyStart)
	// The firmware's lines came before iPXE's: they are on the console.
	if l, ok := consoleHas(console, max(mark, console.IndexAt(t0)), reHTTPBoot); !ok {
		t.Errorf("%s: no %q on the console: the firmware did not HTTP boot", s.Name, reHTTPBoot)
	} else {
		t.Logf("  %s: firmware's HTTP boot line (printed once its DHCP is done) %.1fs after power-on", s.Name, l.At.Sub(t0).Seconds())
	}
	checkDisk(t, ctx, filepath.Join(root, "build/images/demo-os.raw"), s, true)

	// 2. Destroy: the agent boots again by HTTP boot, wipes, powers off.
	mark = console.Len()
	destroy := time.Now()
	tf.run("destroy", "-auto-approve", "-input=false", "-no-color")
	t.Logf("%6.1fs destroy took %.1fs", since(start), since(destroy))
	if _, l, err := console.Wait(ctx, mark, reWipeStart); err != nil {
		t.Errorf("%s: %v", s.Name, err)
	} else {
		t.Logf("  %s: wipe started %.1fs into destroy", s.Name, l.At.Sub(destroy).Seconds())
	}
	if out, err := s.BMC.Ipmitool(ctx, "chassis", "power", "status"); err != nil || out != "Chassis Power is off" {
		t.Errorf("%s: power after destroy: %q %v", s.Name, out, err)
	}
	checkDisk(t, ctx, "", s, false)

	// 3. How it booted: every firmware DHCP exchange was HTTPClient with
	// the binary's URL, iPXE's got the script, nothing went over TFTP and
	// the firmware never tried PXE.
	checkHTTPBootExchange(t, lab.ReadLog(rack.Daemon.Log), s)
	if l, ok := consoleHas(console, 0, rePXEBoot); ok {
		t.Errorf("%s: the firmware tried PXE: %q", s.Name, l.Text)
	}
	// provisiond_tftp_transfers_total has a series only once a request
	// came (any result: ok, size_probe, not_found, refused, failed).
	metrics := provisiondCounters(t, ctx, rack.NS, "provisiond_tftp_")
	for _, m := range metrics {
		if !strings.HasSuffix(m, " 0") {
			t.Errorf("TFTP counter not zero: %s", m)
		}
	}
	t.Logf("  provisiond TFTP counters: %s", strings.Join(metrics, ", "))
	t.Logf("%6.1fs done", since(start))
}

// checkHTTPBootExchange checks provisiond's log of the server's DHCP
// exchanges: the firmware's offers (HTTPClient) carried the http:// URL of
// the EFI binary, iPXE's the script URL, and provisiond's TFTP server
// logged nothing for it.
func checkHTTPBootExchange(t *testing.T, plog string, s *lab.Server) {
	t.Helper()
	// provisiond's HTTP base is http://ADDRESS:PORT (port 80 in the lab).
	base := `^http://` + regexp.QuoteMeta(lab.RackAddress) + `(:80)?`
	binURL := regexp.MustCompile(base + `/ipxe/bin/snponly\.efi$`)
	scriptURL := regexp.MustCompile(base + `/ipxe/` + regexp.QuoteMeta(s.MAC) + `$`)
	firmware, ipxe := 0, 0
	var discover time.Time
	var waits []string // the firmware's DISCOVER to REQUEST: how long it collects offers
	for _, line := range strings.Split(plog, "\n") {
		switch {
		case strings.Contains(line, "component=tftp") && !strings.Contains(line, `msg="serving TFTP"`):
			t.Errorf("TFTP activity: %s", line)
		case strings.Contains(line, `msg="boot file"`) && strings.Contains(line, "mac="+s.MAC):
			switch file, class := logField(line, "boot_file"), logField(line, "class"); {
			case binURL.MatchString(file):
				firmware++
				at, _ := time.Parse(time.RFC3339Nano, logField(" "+line, "time"))
				switch logField(line, "type") {
				case "DISCOVER":
					discover = at
				case "REQUEST":
					if !discover.IsZero() {
						waits = append(waits, fmt.Sprintf("%.1fs", at.Sub(discover).Seconds()))
					}
				}
				if class != "HTTPClient" {
					t.Errorf("offer of %s with class %q, want HTTPClient: %s", binURL, class, line)
				}
			case scriptURL.MatchString(file):
				ipxe++
				if class != "PXEClient" {
					t.Errorf("iPXE's offer of its script with class %q, want PXEClient (iPXE's own request): %s", class, line)
				}
			default:
				t.Errorf("boot file %q (class %q) offered; want %s or %s: %s", file, class, binURL, scriptURL, line)
			}
		}
	}
	// Two network boots (install, destroy), each an OFFER and an ACK.
	if firmware < 4 || ipxe < 4 {
		t.Errorf("%s: %d firmware (HTTPClient) and %d iPXE boot-file replies, want at least 4 of each (install and destroy)", s.Name, firmware, ipxe)
	}
	t.Logf("  %s: DHCP replies with the EFI binary's URL (class HTTPClient) %d, with the iPXE script %d; the firmware's OFFER to REQUEST %s",
		s.Name, firmware, ipxe, strings.Join(waits, ", "))
}

// consoleHas returns the first line of the console so far, from index
// from, that matches re, without waiting for more.
func consoleHas(c *lab.Console, from int, re *regexp.Regexp) (lab.ConsoleLine, bool) {
	done, cancel := context.WithCancel(context.Background())
	cancel() // Wait scans what is there before it looks at the context
	_, l, err := c.Wait(done, from, re)
	return l, err == nil
}

// provisiondCounters returns provisiond's metrics whose names start with
// prefix, as "name{labels} value" lines.
func provisiondCounters(t *testing.T, ctx context.Context, ns *lab.NetNS, prefix string) []string {
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
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		t.Fatalf("provisiond exports no %s* metric", prefix)
	}
	return out
}
