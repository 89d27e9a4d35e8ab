// Command demoinit is the /init of the demo OS that the end-to-end tests and
// `make demo` install on a machine's disk. When the installed disk boots it
// proves two things on the serial console: the OS really booted, and it really
// read its metadata from provisiond:
//
//	DEMO-OS booting kernel=6.1.0-56-amd64
//	DEMO-OS dhcp iface=eth0 requesting
//	DEMO-OS dhcp iface=eth0 ip=10.99.0.10/24 server=10.99.0.1 router=...
//	DEMO-OS hostname=web-1
//	DEMO-OS user-data begin
//	...
//	DEMO-OS user-data end
//
// It loads the kernel modules listed in /lib/modules/$(uname -r)/modules.load
// (see internal/osbuild), brings the first Ethernet NIC up by DHCP and fetches
// /2009-04-04/meta-data/hostname and /2009-04-04/user-data from the base URL
// given as bm.http=URL on the kernel command line, else from
// http://<DHCP server identifier>. Then it idles forever (PID 1 must not exit).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// say prints one line to the console (stdout is /dev/console for PID 1).
// The console is the only place this init reports to: a write that fails
// there has nowhere else to go, so its error is dropped.
func say(format string, args ...any) {
	_, _ = fmt.Fprintf(os.Stdout, "DEMO-OS "+format+"\n", args...)
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demoinit")
	err := run(context.Background(), log)
	if err != nil {
		say("error: %v", err)
	}
	if os.Getpid() != 1 {
		if err != nil {
			os.Exit(1)
		}
		return
	}
	say("idle")
	for {
		time.Sleep(time.Hour)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	say("booting kernel=%s", release)
	if os.Getpid() == 1 {
		mountPseudo(log)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	params := parseCmdline(string(cmdline))
	loadModules(log, filepath.Join("/lib/modules", release, "modules.load"))

	iface, err := waitForNIC(ctx, 20*time.Second)
	if err != nil {
		return err
	}
	if err := setUp(iface); err != nil {
		return fmt.Errorf("bring %s up: %w", iface, err)
	}
	say("dhcp iface=%s requesting", iface)
	lease, err := dhcp(ctx, iface)
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", iface, err)
	}
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	ones, _ := mask.Size()
	routers := ack.Router()
	say("dhcp iface=%s ip=%s/%d server=%s router=%v", iface, ack.YourIPAddr, ones, ack.ServerIdentifier(), routers)
	if err := configure(iface, ack.YourIPAddr, mask, routers); err != nil {
		return fmt.Errorf("configure %s: %w", iface, err)
	}

	base := params["bm.http"]
	if base == "" {
		if ack.ServerIdentifier() == nil {
			return errors.New("no bm.http= on the command line and no DHCP server identifier")
		}
		base = "http://" + ack.ServerIdentifier().String()
	}
	base = strings.TrimRight(base, "/")
	say("metadata url=%s", base)
	hc := &http.Client{Timeout: 10 * time.Second}
	host, err := fetch(ctx, hc, base+"/2009-04-04/meta-data/hostname")
	if err != nil {
		return err
	}
	host = strings.TrimSpace(host)
	if host != "" {
		if err := unix.Sethostname([]byte(host)); err != nil && os.Getpid() == 1 {
			log.Warn("sethostname", "err", err)
		}
	}
	say("hostname=%s", host)
	ud, err := fetch(ctx, hc, base+"/2009-04-04/user-data")
	if err != nil {
		return err
	}
	say("user-data begin")
	if !strings.HasSuffix(ud, "\n") {
		ud += "\n"
	}
	// The user-data on the console is this OS's whole output: failing to
	// print it fails the run.
	if _, err := io.WriteString(os.Stdout, ud); err != nil {
		return fmt.Errorf("print user-data: %w", err)
	}
	say("user-data end")
	return nil
}

func mountPseudo(log *slog.Logger) {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			log.Warn("mount", "fs", m.typ, "err", err)
		}
	}
}

// parseCmdline splits a kernel command line into key=value pairs (bare words
// map to "").
func parseCmdline(s string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

// loadModules loads every module listed in list, in order. A module already
// loaded (or built in) is fine; any other failure is logged and skipped so
// one driver without its hardware or firmware does not stop the boot.
func loadModules(log *slog.Logger, list string) {
	f, err := os.Open(list)
	if err != nil {
		log.Info("no module list", "path", list, "err", err)
		return
	}
	defer func() { _ = f.Close() }() // read-only
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rel := strings.TrimSpace(sc.Text())
		if rel == "" {
			continue
		}
		p := filepath.Join(filepath.Dir(list), rel)
		mf, err := os.Open(p)
		if err != nil {
			log.Warn("open module", "path", p, "err", err)
			continue
		}
		err = unix.FinitModule(int(mf.Fd()), "", 0)
		_ = mf.Close() // read-only; the kernel has read it on return
		if err != nil && !errors.Is(err, unix.EEXIST) {
			log.Warn("load module", "path", p, "err", err)
			continue
		}
		n++
	}
	say("modules loaded=%d", n)
}

// waitForNIC returns the first Ethernet interface (lowest name), waiting for
// drivers to register one.
func waitForNIC(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ifs, _ := net.Interfaces()
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 {
				return i.Name, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no Ethernet interface appeared: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func dhcp(ctx context.Context, iface string) (*nclient4.Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }() // the lease is in hand or the error is what counts
	var lastErr error
	for attempt := 1; attempt <= 10; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lease, err := c.Request(rctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("demo-os")))
		cancel()
		if err == nil {
			return lease, nil
		}
		lastErr = err
		say("dhcp iface=%s attempt=%d failed: %v", iface, attempt, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// fetch GETs url, retrying for about a minute: the metadata service may come
// up after the machine.
func fetch(ctx context.Context, hc *http.Client, url string) (string, error) {
	var lastErr error
	for attempt := 0; attempt < 12; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(5 * time.Second):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			say("fetch %s: %v", url, err)
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close() // what was read is in b; closing only frees the connection
		if err == nil && resp.StatusCode == http.StatusOK {
			return string(b), nil
		}
		lastErr = fmt.Errorf("GET %s: %s", url, resp.Status)
		say("fetch %s: %s", url, resp.Status)
	}
	return "", lastErr
}
