package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A routed rack (RackConfig.Routed): the servers sit on a segment of their
// own, behind a router namespace that forwards between it and the
// provisioning segment and runs ISC dhcrelay towards provisiond.
//
//	provisioning segment  br0 10.99.0.0/24: provisiond 10.99.0.1, router up0 10.99.0.254
//	servers' segment      br1 10.98.0.0/24: router down0 10.98.0.1, servers 10.98.0.11...
//
// Both bridges live in the rack's namespace, where QEMU opens the servers'
// taps, but br1 has no address there: the rack's namespace is a plain
// switch for it, and every packet between a server and provisiond crosses
// the router namespace.
const (
	ServersBridge  = "br1"
	ServersPrefix  = 24
	RouterUplink   = "10.99.0.254" // the router's leg on the provisioning segment
	RouterGateway  = "10.98.0.1"   // its leg on the servers' segment: their default gateway and the relay's giaddr
	ServersNetwork = "10.98.0.0/24"
)

// RoutedServerIP is server i's address on the servers' segment of a routed
// rack.
func RoutedServerIP(i int) string { return fmt.Sprintf("10.98.0.%d", 10+i) }

// Router is the router between a routed rack's segments: a namespace with
// a leg on each (up0, down0), IPv4 forwarding on, and dhcrelay relaying the
// servers' DHCP to provisiond with giaddr RouterGateway and a relay agent
// information option (82) whose circuit id names the interface.
type Router struct {
	NS  *NetNS
	Log string // dhcrelay's output (-d: every packet it forwards)

	cmd  *exec.Cmd
	done chan struct{}
}

// RequireRelay skips t unless ISC dhcrelay is installed.
func RequireRelay(t Skipper) {
	t.Helper()
	if _, err := exec.LookPath("dhcrelay"); err != nil {
		t.Skipf("dhcrelay not installed (Debian: isc-dhcp-relay): %v", err)
	}
}

// startRouter builds the servers' segment and the router of a routed rack
// and starts dhcrelay. It records the router in r before anything can
// fail, so Close tears down what was made.
func (r *Rack) startRouter(ctx context.Context) error {
	ns, err := NewNetNS(ctx, r.Config.NSPrefix+"-rt")
	if err != nil {
		return err
	}
	r.Router = &Router{NS: ns, Log: filepath.Join(r.Config.Dir, "dhcrelay.log")}
	steps := [][]string{
		{"ip", "link", "add", ServersBridge, "type", "bridge", "forward_delay", "0"},
		// No address of any family: the rack's namespace only switches here.
		{"sysctl", "-q", "-w", "net.ipv6.conf." + ServersBridge + ".disable_ipv6=1"},
		{"ip", "link", "set", ServersBridge, "up"},
		{"ip", "link", "add", "rt0", "type", "veth", "peer", "name", "up0", "netns", ns.Name},
		{"ip", "link", "set", "rt0", "master", RackBridge},
		{"ip", "link", "set", "rt0", "up"},
		{"ip", "link", "add", "rt1", "type", "veth", "peer", "name", "down0", "netns", ns.Name},
		{"ip", "link", "set", "rt1", "master", ServersBridge},
		{"ip", "link", "set", "rt1", "up"},
	}
	for _, s := range steps {
		if err := r.NS.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("routed rack: servers' segment: %w", err)
		}
	}
	steps = [][]string{
		{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{"sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"},
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", RouterUplink, RackPrefix), "dev", "up0"},
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", RouterGateway, ServersPrefix), "dev", "down0"},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "link", "set", "down0", "up"},
	}
	for _, s := range steps {
		if err := ns.Run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("routed rack: router: %w", err)
		}
	}
	// provisiond's side knows the servers' network only through the router.
	if err := r.NS.Run(ctx, "ip", "route", "add", ServersNetwork, "via", RouterUplink, "dev", RackBridge); err != nil {
		return fmt.Errorf("routed rack: route to the servers' segment: %w", err)
	}
	return r.Router.start(ctx, filepath.Join(r.Config.Dir, "dhcrelay.pid"), RackAddress)
}

// start runs dhcrelay in the foreground (-d) inside the router's
// namespace, listening for clients on down0 and for servers on up0, and
// waits until it listens on both.
func (rt *Router) start(ctx context.Context, pidFile, server string) error {
	log, err := os.OpenFile(rt.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }() // dhcrelay writes through its own descriptor
	// -a: add option 82 (circuit id "down0"), which dhcrelay then requires
	// in the replies: provisiond must echo it (RFC 3046).
	rt.cmd = rt.NS.Command(context.Background(), "dhcrelay", "-4", "-d", "-a", "-pf", pidFile,
		"-id", "down0", "-iu", "up0", server)
	rt.cmd.Stdout, rt.cmd.Stderr = log, log
	if err := rt.cmd.Start(); err != nil {
		return fmt.Errorf("start dhcrelay: %w", err)
	}
	done := make(chan struct{})
	rt.done = done
	go func() { _ = rt.cmd.Wait(); close(done) }()
	for {
		b := ReadLog(rt.Log)
		if strings.Contains(b, "Listening on LPF/down0/") && strings.Contains(b, "Listening on LPF/up0/") {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("dhcrelay exited at start: %s", Tail([]byte(b), 2000))
		case <-ctx.Done():
			return fmt.Errorf("waiting for dhcrelay to start: %w: %s", ctx.Err(), Tail([]byte(b), 2000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops dhcrelay and deletes the router's namespace (and with it the
// veth pairs into the rack's bridges).
func (rt *Router) Close() error {
	var errs []error
	if rt.cmd != nil && rt.cmd.Process != nil && rt.done != nil {
		// ip netns exec execs dhcrelay: this PID is dhcrelay's.
		_ = rt.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-rt.done:
		case <-time.After(5 * time.Second):
			if err := rt.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				errs = append(errs, fmt.Errorf("kill dhcrelay: %w", err))
			}
			<-rt.done
		}
	}
	if rt.NS != nil {
		errs = append(errs, rt.NS.Close())
	}
	return errors.Join(errs...)
}

// Forwarded counts the IPv4 datagrams the router forwarded.
func (rt *Router) Forwarded(ctx context.Context) (int64, error) { return rt.NS.Forwarded(ctx) }

// Forwarded counts the IPv4 datagrams the namespace forwarded (its Ip
// ForwDatagrams counter).
func (n *NetNS) Forwarded(ctx context.Context) (int64, error) {
	out, err := n.Command(ctx, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return 0, fmt.Errorf("netns %s: read /proc/net/snmp: %w", n.Name, err)
	}
	return forwDatagrams(n.Name, string(out))
}

// forwDatagrams reads Ip ForwDatagrams from the text of /proc/net/snmp: a
// line of names, then a line of values.
func forwDatagrams(ns, snmp string) (int64, error) {
	var names, values []string
	for _, line := range strings.Split(snmp, "\n") {
		if !strings.HasPrefix(line, "Ip: ") {
			continue
		}
		if names == nil {
			names = strings.Fields(line)
		} else {
			values = strings.Fields(line)
		}
	}
	for i, n := range names {
		if n == "ForwDatagrams" && i < len(values) {
			var v int64
			if _, err := fmt.Sscan(values[i], &v); err != nil {
				return 0, fmt.Errorf("netns %s: ForwDatagrams %q: %w", ns, values[i], err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("netns %s: no Ip ForwDatagrams in /proc/net/snmp", ns)
}
