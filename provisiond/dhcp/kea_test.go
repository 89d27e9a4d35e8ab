package dhcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// keaConfig is a kea-dhcp4 configuration equivalent to provisiond's
// reservation mode in the benchmark: one subnet behind the relay 10.99.0.2
// (perfdhcp), only reserved addresses (no pool), a memfile lease file in dir
// with persistence on and no lease-file cleanup during the run.
func keaConfig(dir, iface string, hosts []benchHost, threads int) ([]byte, error) {
	type m = map[string]any
	res := make([]m, len(hosts))
	for i, h := range hosts {
		res[i] = m{"hw-address": h.mac, "ip-address": h.ip, "hostname": h.hostname}
	}
	cfg := m{"Dhcp4": m{
		// UDP sockets: every packet is relayed, so no raw socket is needed
		// (Kea's advice for relayed-only traffic).
		"interfaces-config": m{"interfaces": []string{iface}, "dhcp-socket-type": "udp"},
		"lease-database": m{
			"type": "memfile", "persist": true, "name": filepath.Join(dir, "leases4.csv"),
			"lfc-interval": 0,
		},
		"valid-lifetime": 3600,
		// Kea's own tuning for reservation-only setups: look up the host
		// first (always so with multi-threading) and skip pool checks.
		"reservations-lookup-first":    true,
		"host-reservation-identifiers": []string{"hw-address"},
		"multi-threading": m{
			"enable-multi-threading": threads > 1,
			"thread-pool-size":       threads,
			"packet-queue-size":      64,
		},
		"subnet4": []m{{
			"id": 1, "subnet": "10.100.0.0/16",
			"relay":                    m{"ip-addresses": []string{"10.99.0.2"}},
			"reservations-global":      false,
			"reservations-in-subnet":   true,
			"reservations-out-of-pool": true,
			"option-data":              []m{{"name": "routers", "data": "10.100.0.254"}},
			"reservations":             res,
		}},
		// Warnings only: Kea logs every lease at INFO, which would slow it.
		"loggers": []m{{"name": "kea-dhcp4", "severity": "WARN", "output_options": []m{{"output": "stdout"}}}},
	}}
	return json.MarshalIndent(cfg, "", " ")
}

// startKea runs kea-dhcp4 in namespace ns on vsrv with the hosts reserved
// and threads packet-processing threads (1: multi-threading off), waits
// until it listens on port 67, and returns its process id and a function
// that stops it.
func startKea(t testing.TB, kea, ns, dir string, hosts []benchHost, threads int) (pid int, stop func()) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	raw, err := keaConfig(dir, "vsrv", hosts, threads)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "kea-dhcp4.conf")
	if err := os.WriteFile(conf, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "kea.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }() // test cleanup
	cmd := exec.Command("ip", "netns", "exec", ns, kea, "-c", conf)
	// Kea's PID file and logger lock file default to /run/kea; keep this
	// instance's in its own directory so it touches nothing of the system's.
	cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+dir, "KEA_LOCKFILE_DIR="+dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kea-dhcp4: %v", err)
	}
	var waitErr error
	exited := make(chan struct{}) // closed once Wait has set waitErr
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("kea-dhcp4 did not stop on SIGTERM within 10s")
		}
	}
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := waitUDP67(ctx, ns, exited); err != nil {
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w: %v", err, waitErr)
		}
		out, _ := os.ReadFile(logPath)
		t.Fatalf("kea-dhcp4 (%d threads) did not come up: %v\n%s", threads, err, out)
	}
	// ip netns exec execs kea-dhcp4 in its own process.
	return cmd.Process.Pid, stop
}

var errExited = errors.New("server exited")

// waitUDP67 polls the namespace's UDP sockets until one is bound to port 67,
// or the server exits (exited closes), or ctx ends.
func waitUDP67(ctx context.Context, ns string, exited <-chan struct{}) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ss", "-Hlun", "sport = :67").Output()
		if err == nil && strings.Contains(string(out), ":67") {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("waiting for a socket on port 67 in %s: %w", ns, ctx.Err())
		case <-tick.C:
		}
	}
}
