package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
)

// The rack's provisioning network, inside its namespace: a bridge holding
// provisiond's address, one tap per server plugged into it.
const (
	RackBridge  = "br0"
	RackAddress = "10.99.0.1"
	RackPrefix  = 24
	RackGRPC    = RackAddress + ":7777"
)

// RackConfig says what StartRack builds.
type RackConfig struct {
	Dir      string // everything the rack writes: disks, logs, store, certificates
	NSPrefix string // namespace name prefix (default "rack")
	Servers  int    // number of servers; server N is UEFI when N is even and UEFI is true
	UEFI     bool   // make the even-numbered servers UEFI (needs Debian's ovmf)
	DiskMiB  int    // each server's empty disk (default 256)
	// Shapes overrides the hardware of server i+1 (Shapes[i]); servers
	// beyond it, and zero fields, keep the defaults above.
	Shapes []Shape
	// Provisiond is the daemon binary; AgentOSDir and ImagesDir what it
	// serves (see `make agent-os demo-image`).
	Provisiond, AgentOSDir, ImagesDir string
	// ExtraFlags are appended to provisiond's command line.
	ExtraFlags []string
	// DHCPMode is provisiond's --dhcp-mode (default "reservation"). In
	// "proxy" another DHCP server on the bridge hands out the addresses
	// (see the ProxyDHCP end-to-end test): provisiond gives only boot
	// information.
	DHCPMode string
	// Routed puts the servers on a segment of their own (ServersBridge,
	// ServersNetwork) behind a router namespace running ISC dhcrelay
	// (Debian's isc-dhcp-relay) towards provisiond: see router.go. The
	// servers' addresses are RoutedServerIP, their gateway RouterGateway.
	Routed bool
}

// Shape is one server's hardware where it differs from the rack's default:
// firmware, disk size and controller, NIC model (a QEMU device: "e1000e",
// default virtio-net-pci) and memory.
type Shape struct {
	Firmware   Firmware
	DiskMiB    int
	DiskDevice DiskDevice
	DiskByID   bool // terraform names the disk by its /dev/disk/by-id link
	NIC        string
	MemoryMiB  int
	// HTTPBoot makes a UEFI server's firmware boot its NIC by UEFI HTTP
	// boot, PXE disabled in its setup (VM.HTTPBoot).
	HTTPBoot bool
}

// Rack is a lab rack: a network namespace with a bridge standing for the
// provisioning network, provisiond on it (DHCP reservation mode, TFTP, HTTP,
// gRPC with TLS and a token), and servers (QEMU VMs behind ipmi_sim BMCs)
// plugged into it with empty disks. Nothing leaves the namespace.
type Rack struct {
	Config  RackConfig
	NS      *NetNS
	Servers []*Server
	Daemon  *Daemon
	// Token is the admin API token, BMCPassword every BMC's password; PKI
	// holds the CA that signed provisiond's certificate (for 10.99.0.1 and
	// 127.0.0.1). All are written under Dir/secrets.
	Token, BMCPassword string
	PKI                *testpki.PKI
	// Router is the router of a routed rack (RackConfig.Routed), else nil.
	Router *Router
}

// Server is one machine of the rack.
type Server struct {
	Name    string
	MAC     string
	Address string // CIDR
	Gateway string // its default gateway: provisiond's address, or the router's in a routed rack
	BMC     *BMC
}

// ServerName, ServerMAC and ServerIP number a rack's servers from 1.
func ServerName(i int) string { return fmt.Sprintf("node-%d", i) }
func ServerMAC(i int) string  { return fmt.Sprintf("52:54:00:b0:00:%02x", i) }
func ServerIP(i int) string   { return fmt.Sprintf("10.99.0.%d", 10+i) }

// StartRack builds the rack and starts provisiond. On error it tears down
// what it made.
func StartRack(ctx context.Context, cfg RackConfig) (_ *Rack, err error) {
	if cfg.NSPrefix == "" {
		cfg.NSPrefix = "rack"
	}
	if cfg.DiskMiB == 0 {
		cfg.DiskMiB = 256
	}
	if cfg.DHCPMode == "" {
		cfg.DHCPMode = "reservation"
	}
	r := &Rack{Config: cfg, Token: randomHex(24), BMCPassword: randomHex(8)} // IPMI passwords hold at most 20 bytes
	defer func() {
		if err != nil {
			_ = r.Close()
		}
	}()
	secrets := filepath.Join(cfg.Dir, "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		return nil, err
	}
	r.PKI, err = testpki.Generate(net.ParseIP(RackAddress), net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, fmt.Errorf("rack certificates: %w", err)
	}
	if err := r.PKI.Write(secrets); err != nil {
		return nil, err
	}
	for name, v := range map[string]string{"token": r.Token, "bmc-password": r.BMCPassword} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(v+"\n"), 0o600); err != nil {
			return nil, err
		}
	}

	if r.NS, err = NewNetNS(ctx, cfg.NSPrefix); err != nil {
		return nil, err
	}
	if err := r.NS.AddBridge(ctx, RackBridge, fmt.Sprintf("%s/%d", RackAddress, RackPrefix)); err != nil {
		return nil, err
	}
	serversBridge := RackBridge
	if cfg.Routed {
		if err := r.startRouter(ctx); err != nil {
			return nil, err
		}
		serversBridge = ServersBridge
	}
	for i := 1; i <= cfg.Servers; i++ {
		s := &Server{Name: ServerName(i), MAC: ServerMAC(i), Address: fmt.Sprintf("%s/%d", ServerIP(i), RackPrefix), Gateway: RackAddress}
		if cfg.Routed {
			s.Address, s.Gateway = fmt.Sprintf("%s/%d", RoutedServerIP(i), ServersPrefix), RouterGateway
		}
		tap := fmt.Sprintf("tap%d", i)
		if err := r.NS.AddBridgePort(ctx, tap, serversBridge); err != nil {
			return nil, err
		}
		vm := VM{Name: s.Name, Dir: filepath.Join(cfg.Dir, s.Name), Tap: tap, MAC: s.MAC, Disk: filepath.Join(cfg.Dir, s.Name, "disk.qcow2")}
		if cfg.UEFI && i%2 == 0 {
			// OVMF's own PXE (no iPXE ROM): DHCP hands it snponly.efi over
			// TFTP, which then fetches the iPXE script: the chain a real
			// UEFI server walks. The BIOS servers boot QEMU's iPXE ROM,
			// which gets the script URL at once.
			vm.Firmware, vm.NoNICROM = UEFI, true
		}
		diskMiB := cfg.DiskMiB
		if i <= len(cfg.Shapes) {
			sh := cfg.Shapes[i-1]
			if sh.Firmware != "" {
				vm.Firmware = sh.Firmware
				// OVMF drives only virtio NICs itself; another model needs
				// its option ROM (QEMU's efi-e1000e.rom, as an Intel NIC
				// carries its UEFI driver in flash).
				vm.NoNICROM = sh.Firmware == UEFI && (sh.NIC == "" || sh.NIC == "virtio-net-pci")
			}
			if sh.DiskMiB > 0 {
				diskMiB = sh.DiskMiB
			}
			vm.DiskDevice, vm.DiskByID, vm.NIC, vm.MemoryMiB = sh.DiskDevice, sh.DiskByID, sh.NIC, sh.MemoryMiB
			vm.HTTPBoot = sh.HTTPBoot && vm.Firmware == UEFI
		}
		if err := os.MkdirAll(vm.Dir, 0o755); err != nil {
			return nil, err
		}
		if err := CreateDisk(ctx, vm.Disk, diskMiB); err != nil {
			return nil, err
		}
		s.BMC = &BMC{VM: vm, Port: 9000 + i, User: "admin", Password: r.BMCPassword}
		if err := s.BMC.Start(ctx, r.NS); err != nil {
			return nil, err
		}
		r.Servers = append(r.Servers, s)
	}
	data := filepath.Join(cfg.Dir, "provisiond")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	args := []string{
		"--data-dir", data,
		"--grpc-listen", ":7777",
		"--http-listen", RackAddress + ":80",
		"--tftp-listen", RackAddress + ":69",
		"--dhcp-mode", cfg.DHCPMode,
		"--dhcp-interface", RackBridge,
		"--public-ip", RackAddress,
		"--agent-os-dir", cfg.AgentOSDir,
		"--images-dir", cfg.ImagesDir,
		"--token-file", filepath.Join(secrets, "token"),
		"--tls-cert", r.PKI.ServerCertFile,
		"--tls-key", r.PKI.ServerKeyFile,
		"--tls-agent-ca", r.PKI.CACertFile,
		"--power-poll-interval", "10s",
	}
	r.Daemon = &Daemon{NS: r.NS, Bin: cfg.Provisiond, Args: append(args, cfg.ExtraFlags...), Log: filepath.Join(cfg.Dir, "provisiond.log")}
	if err := r.Daemon.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops provisiond, every VM and BMC, the router if any, and deletes
// the namespaces.
func (r *Rack) Close() error {
	var errs []error
	if r.Daemon != nil {
		errs = append(errs, r.Daemon.Stop(10*time.Second))
	}
	for _, s := range r.Servers {
		errs = append(errs, s.BMC.Close())
	}
	if r.Router != nil {
		errs = append(errs, r.Router.Close())
	}
	if r.NS != nil {
		errs = append(errs, r.NS.Close())
	}
	return errors.Join(errs...)
}

// TerraformServers returns the servers as examples/modules/rack's `servers`
// variable wants them (the demo's tfvars).
func (r *Rack) TerraformServers() map[string]any {
	out := map[string]any{}
	for _, s := range r.Servers {
		out[s.Name] = map[string]any{
			"mac":     s.MAC,
			"address": s.Address,
			"gateway": s.Gateway,
			"uefi":    s.BMC.VM.Firmware == UEFI || s.BMC.VM.Firmware == AAVMF,
			"arch":    s.BMC.VM.Arch(),
			"disks":   []string{s.BMC.VM.GuestDisk()},
			"bmc":     map[string]any{"address": "127.0.0.1", "port": s.BMC.Port, "username": s.BMC.User},
		}
	}
	return out
}

// Daemon is provisiond running inside a namespace as a child process, its
// output appended to Log across restarts. With NS nil it runs in this
// host's network namespace, for tests whose peers all use loopback.
type Daemon struct {
	NS   *NetNS
	Bin  string
	Args []string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts the daemon and waits until it logs that it is serving.
func (d *Daemon) Start(ctx context.Context) error {
	log, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// The daemon writes through its own descriptor, which outlives ours:
	// closing this one loses nothing.
	defer func() { _ = log.Close() }()
	st, err := log.Stat()
	if err != nil {
		return err
	}
	// `ip netns exec` execs the daemon: the PID is provisiond's own, so a
	// SIGKILL hits the daemon, not a wrapper.
	if d.NS != nil {
		d.cmd = d.NS.Command(context.Background(), d.Bin, d.Args...)
	} else {
		d.cmd = exec.Command(d.Bin, d.Args...)
	}
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start provisiond: %w", err)
	}
	done := make(chan struct{})
	d.done = done
	go func() { _ = d.cmd.Wait(); close(done) }()
	for {
		b, _ := os.ReadFile(d.Log)
		if int64(len(b)) > st.Size() && strings.Contains(string(b[st.Size():]), "provisiond starting") {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("provisiond exited at start: %s", Tail(b[min(int64(len(b)), st.Size()):], 2000))
		case <-ctx.Done():
			return fmt.Errorf("waiting for provisiond to start: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL and reaps the process: a crash, nothing flushed.
func (d *Daemon) Kill() error {
	if d.cmd == nil {
		return nil
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-d.done
	d.cmd = nil
	return nil
}

// Stop asks the daemon to shut down (SIGTERM) and kills it after timeout.
func (d *Daemon) Stop(timeout time.Duration) error {
	if d.cmd == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		d.cmd = nil
		return nil
	case <-time.After(timeout):
		return d.Kill()
	}
}

// Dial connects to address inside the namespace from this process: the
// socket is made on an OS thread switched into the namespace. The thread is
// never switched back; it ends with its goroutine (the Go runtime then
// discards it). For gRPC: grpc.WithContextDialer(func(ctx, a) { return
// ns.Dial(ctx, "tcp", a) }).
func (n *NetNS) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // no unlock: see above
		f, err := os.Open(filepath.Join("/var/run/netns", n.Name))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer func() { _ = f.Close() }() // a namespace handle, only read
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("enter netns %s: %w", n.Name, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		ch <- result{c, err}
	}()
	res := <-ch
	return res.c, res.err
}

// InstallProvider lays out the provider binary as a filesystem mirror under
// dir and writes a Terraform CLI configuration that installs
// rackform/baremetal from it and nothing from the network. It returns the
// configuration's path, for TF_CLI_CONFIG_FILE.
func InstallProvider(binary, dir, version string) (string, error) {
	plat := filepath.Join(dir, "plugins", "registry.terraform.io", "rackform", "baremetal", version, runtime.GOOS+"_"+runtime.GOARCH)
	if err := os.MkdirAll(plat, 0o755); err != nil {
		return "", err
	}
	b, err := os.ReadFile(binary)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(plat, "terraform-provider-baremetal_v"+version), b, 0o755); err != nil {
		return "", err
	}
	rc := filepath.Join(dir, "terraformrc")
	conf := fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path    = %q
    include = ["registry.terraform.io/rackform/baremetal"]
  }
}
`, filepath.Join(dir, "plugins"))
	return rc, os.WriteFile(rc, []byte(conf), 0o644)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
