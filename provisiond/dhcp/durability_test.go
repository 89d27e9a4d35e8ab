package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	bolt "go.etcd.io/bbolt"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/gobuild"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/netns"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestMain removes the binaries the tests built (the test kit's gobuild)
// when they end.
func TestMain(m *testing.M) { os.Exit(gobuild.Main(m)) }

// TestKill9Durability runs the real provisiond binary (reservation mode, its
// store in a temp dir) on the server end of a veth pair, drives perfdhcp at
// it, kills it with SIGKILL mid-run and starts it again. It checks that
//   - every lease perfdhcp saw ACKed is in the store, with the ACKed
//     address (so the number of distinct ACKed MACs is at most the number
//     of stored leases; perfdhcp's raw ACK count can be higher, as it picks
//     MACs at random and one MAC can be ACKed several times);
//   - the store opens clean: provisiond restarts on it, and bbolt's
//     consistency check finds nothing;
//   - DHCP answers again within a second of the restart.
//
// perfdhcp runs only against the first process: ACKs from the restarted
// one could re-create a lost lease and hide the loss.
func TestKill9Durability(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short mode: builds provisiond and runs perfdhcp for about 10s")
	}
	needRoot(t)
	perfdhcp, err := exec.LookPath("perfdhcp")
	if err != nil {
		t.Skip("skipping: perfdhcp is not installed (apt-get install kea-admin)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: the go command is needed to build provisiond")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	l := newLink(t, "52:54:00:ff:ff:fe")
	// 10.99.0.2 is perfdhcp (a relay); 10.99.0.3 is the readiness probe,
	// another relay, so the two never share a socket.
	run(t, "ip", "-n", l.cli, "addr", "add", "10.99.0.2/16", "dev", "vcli")
	run(t, "ip", "-n", l.cli, "addr", "add", "10.99.0.3/16", "dev", "vcli")

	dir := t.TempDir()
	bin := gobuild.Build(t, "./provisiond", gobuild.Options{})

	// Register the hardware before the daemon starts: the store is the
	// daemon's own file, filled through the same package it uses.
	const clients = 5000
	hosts := benchHosts(clients)
	dataDir := filepath.Join(dir, "data")
	dbPath := filepath.Join(dataDir, "provisiond.db")
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := putHosts(ctx, st, hosts); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	macFile := writeMACs(t, dir, hosts)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("durability-test-admin-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--data-dir", dataDir, "--token-file", tokenFile,
		"--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--tftp-listen=",
		"--dhcp-mode", "reservation", "--dhcp-interface", "vsrv", "--public-ip", "10.99.0.1",
		"--power-poll-interval", "-1s", "--log-format", "json",
	}
	probe := newRelayProbe(t, l.cli, net.IPv4(10, 99, 0, 3), hosts[0].mac)

	d := startProvisiond(t, bin, l.srv, args)
	if took, err := probe.serving(ctx, d, 30*time.Second); err != nil {
		t.Fatalf("provisiond did not answer DHCP: %v\n%s", err, d.log.String())
	} else {
		t.Logf("first start: DHCP answers %v after exec", took.Round(time.Millisecond))
	}

	// perfdhcp for 5 s at 2,000 DORA/s; SIGKILL at 2 s, so ACKs and lease
	// commits are in flight when the process dies.
	const rate, seconds = 2000, 5
	perfDone := make(chan struct{})
	var perf perfResult
	var perfErr error
	go func() {
		defer close(perfDone)
		perf, perfErr = runPerfdhcp(ctx, perfdhcp, perfRun{
			ns: l.cli, server: "10.99.0.1", macFile: macFile, clients: clients, rate: rate, seconds: seconds, leases: true,
		})
	}()
	select {
	case <-time.After(2 * time.Second):
	case <-perfDone:
		t.Fatalf("perfdhcp ended before the kill: %v", perfErr)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if err := d.kill(); err != nil {
		t.Fatal(err)
	}
	<-perfDone
	if perfErr != nil {
		t.Fatal(perfErr)
	}
	if perf.acks == 0 || len(perf.acked) == 0 {
		t.Fatalf("perfdhcp got no ACK before the kill (load average %s): nothing was tested\n%s", loadavg(), d.log.String())
	}

	// Restart on the crashed store and time it until DHCP answers.
	d2 := startProvisiond(t, bin, l.srv, args)
	took, err := probe.serving(ctx, d2, 10*time.Second)
	if err != nil {
		t.Fatalf("restarted provisiond did not answer DHCP: %v\n%s", err, d2.log.String())
	}
	t.Logf("after kill -9: DHCP answers %v after restart (load average %s)", took.Round(time.Millisecond), loadavg())
	if took > time.Second {
		t.Errorf("DHCP answered %v after restart, want within 1s", took.Round(time.Millisecond))
	}
	if err := d2.stop(); err != nil {
		t.Errorf("stop restarted provisiond: %v\n%s", err, d2.log.String())
	}

	if err := boltCheck(dbPath); err != nil {
		t.Errorf("bbolt consistency check after kill -9 and restart: %v", err)
	}
	st, err = store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatalf("store after kill -9 and restart: %v", err)
	}
	defer func() { _ = st.Close() }() // test cleanup
	leases, err := store.Read(ctx, st, func(tx *store.Tx) ([]store.Lease, error) { return tx.ListLeases() })
	if err != nil {
		t.Fatal(err)
	}
	stored := make(map[string]string, len(leases))
	for _, le := range leases {
		stored[le.MAC] = le.IP
	}
	ackedMACs := map[string]bool{}
	var lost []string
	for _, a := range perf.acked {
		ackedMACs[a.mac] = true
		if ip, ok := stored[a.mac]; !ok || ip != a.ip {
			lost = append(lost, fmt.Sprintf("%s → %s (stored: %q)", a.mac, a.ip, ip))
		}
	}
	t.Logf("perfdhcp: %d ACKs received (%d listed, %d distinct MACs), drops DO %.1f%% RA %.1f%%; store after restart: %d leases",
		perf.acks, len(perf.acked), len(ackedMACs), perf.dropsDO, perf.dropsRA, len(leases))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged leases lost after kill -9, e.g. %s", len(lost), strings.Join(lost[:min(len(lost), 5)], ", "))
	}
	if len(ackedMACs) > len(leases) {
		t.Errorf("%d distinct MACs ACKed, but only %d leases stored", len(ackedMACs), len(leases))
	}
	if len(perf.acked) != perf.acks {
		// -x l lists every ACK received; a mismatch means the parser is off.
		t.Errorf("perfdhcp counted %d ACKs but listed %d", perf.acks, len(perf.acked))
	}
}

// proc is a provisiond process started in a namespace.
type proc struct {
	cmd     *exec.Cmd
	log     *lockedBuffer
	started time.Time
	exited  chan struct{} // closed when Wait returned; err holds its error
	err     error
}

type lockedBuffer = testkit.Buffer

// startProvisiond runs bin inside ns. `ip netns exec` execs the program
// in place, so the PID is provisiond's own and signals reach it directly.
func startProvisiond(t *testing.T, bin, ns string, args []string) *proc {
	t.Helper()
	p := &proc{log: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start provisiond: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to die.
func (p *proc) kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 provisiond: %w", err)
	}
	<-p.exited
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return fmt.Errorf("provisiond did not die of SIGKILL: %v\n%s", p.err, p.log.String())
	}
	return nil
}

// stop asks for a graceful shutdown and waits for a clean exit.
func (p *proc) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal provisiond: %w", err)
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(20 * time.Second):
		return errors.New("provisiond did not stop within 20s of SIGTERM")
	}
}

// relayProbe asks the server for an OFFER the way a relay agent would:
// from port 67 of relay, with giaddr set, so the reply comes back by
// unicast and needs no raw socket.
type relayProbe struct {
	conn  net.PacketConn
	relay net.IP
	mac   net.HardwareAddr
}

func newRelayProbe(t *testing.T, ns string, relay net.IP, mac string) *relayProbe {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	p := &relayProbe{relay: relay, mac: hw}
	netns.In(t, ns, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: relay, Port: dhcpv4.ServerPort})
		if err != nil {
			t.Fatalf("probe socket: %v", err)
		}
		p.conn = c
	})
	t.Cleanup(func() { _ = p.conn.Close() }) // test cleanup
	return p
}

// serving sends a relayed DISCOVER every 20 ms until an OFFER answers,
// and returns the time from the process's exec to that OFFER.
func (p *relayProbe) serving(ctx context.Context, d *proc, limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	server := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: dhcpv4.ServerPort}
	buf := make([]byte, 1500)
	for {
		select {
		case <-d.exited:
			return 0, fmt.Errorf("provisiond exited: %v", d.err)
		case <-ctx.Done():
			return 0, fmt.Errorf("no OFFER within %v: %w", limit, ctx.Err())
		default:
		}
		disc, err := dhcpv4.NewDiscovery(p.mac, dhcpv4.WithRelay(p.relay))
		if err != nil {
			return 0, fmt.Errorf("build DISCOVER: %w", err)
		}
		// Before the server binds, the send may fail or go unanswered: retry.
		_, _ = p.conn.WriteTo(disc.ToBytes(), server)
		_ = p.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			n, _, err := p.conn.ReadFrom(buf)
			if err != nil {
				break // deadline: send again
			}
			r, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && r.TransactionID == disc.TransactionID && r.MessageType() == dhcpv4.MessageTypeOffer {
				return time.Since(d.started), nil
			}
		}
	}
}

// boltCheck runs bbolt's consistency check (page references, freelist,
// B+tree order) over the file read-only.
func boltCheck(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("open %s read-only: %w", path, err)
	}
	defer func() { _ = db.Close() }() // test cleanup
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}
