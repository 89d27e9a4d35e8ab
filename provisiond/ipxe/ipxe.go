// Package ipxe serves network boot over HTTP: the per-machine iPXE script
// (/ipxe/{mac}) and its GRUB twin for arm64 UEFI machines (/grub/{mac}),
// the iPXE binaries for UEFI HTTP boot (/ipxe/bin/{file}), the agent OS
// kernel and initramfs (/boot/, the arm64 one under /boot/arm64/) and OS
// images (/images/).
//
// The script boots the agent OS only while the hardware allows PXE, a
// workflow runs for it and the request comes from the machine's own
// address: the address provisiond's DHCP server leased (or, in proxy mode,
// saw the machine take) for that MAC, or the address configured on the
// hardware's interface. Its kernel command line carries a fresh agent token
// for that workflow; the token is never logged and the response is never
// cached. Every refusal gets the same script, which boots the local disk,
// so a stranger learns nothing about which MACs are registered or why.
package ipxe

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// Tokens mints agent tokens; the workflow engine implements it.
//
// MintAgentToken makes a fresh token for the workflow running on the
// hardware, stores only its hash (replacing an earlier token no live agent
// holds) and returns the workflow id and the token. It returns an error
// wrapping ErrNoWorkflow when no workflow runs for the hardware, and one
// wrapping ErrAgentLive when a live agent holds the current token. It may
// block on the store and must honour ctx. It is not idempotent: each
// successful call invalidates the previous token.
type Tokens interface {
	MintAgentToken(ctx context.Context, hardwareID string) (workflowID, token string, err error)
}

var (
	// ErrNoWorkflow is what Tokens returns (wrapped) when the hardware has
	// no running workflow.
	ErrNoWorkflow = errors.New("no running workflow")
	// ErrAgentLive is what Tokens returns (wrapped) when the workflow's
	// agent is alive: its token is not handed out a second time.
	ErrAgentLive = errors.New("the workflow's agent is alive")
)

// Options configure the handler.
type Options struct {
	// GRPCAddr is provisiond's gRPC address as machines reach it
	// (HOST:PORT), for bm.grpc.
	GRPCAddr string
	// HTTPBase is provisiond's HTTP base URL as machines reach it
	// ("http://HOST:PORT"), for bm.http and the kernel/initrd URLs.
	HTTPBase string
	// TLS says the agent must use TLS for gRPC (bm.tls=1).
	TLS bool
	// CABundle, when set with TLS, is the PEM the agent trusts (bm.ca).
	CABundle []byte
	// AgentOSDir holds the agent OS kernel and initramfs (/boot/).
	AgentOSDir string
	// Kernel and Initrd are file names in AgentOSDir; default "vmlinuz"
	// and "initramfs".
	Kernel, Initrd string
	// ImagesDir holds OS images (/images/).
	ImagesDir string
	// IPXEDir holds the iPXE binaries (/ipxe/bin/); default /usr/lib/ipxe.
	IPXEDir string
	// Console is the console= argument; default "ttyS0,115200".
	Console string
	// ConsoleARM64 is the console= argument of the arm64 agent OS; default
	// "ttyAMA0,115200" (the PL011 UART of QEMU's virt board and of most
	// arm64 servers).
	ConsoleARM64 string
	// Binaries maps extra names under /ipxe/bin/ to files outside IPXEDir
	// (the arm64 GRUB loader, --efi-arm64-binary).
	Binaries map[string]string
	// AnySource turns off the source check (--ipxe-source-check=false):
	// tokens are then minted for a request from any address. Without it,
	// /ipxe/{mac} mints only for a request from that MAC's DHCP lease or
	// its configured address, so a neighbour cannot take another machine's
	// token by guessing its MAC.
	AnySource bool
	// Now is the clock that judges lease expiry [time.Now].
	Now func() time.Time
}

// Handler serves the boot paths.
type Handler struct {
	st     *store.Store
	tokens Tokens
	log    *slog.Logger
	opts   Options

	scripts *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// New returns a handler; it does no I/O.
func New(st *store.Store, tokens Tokens, log *slog.Logger, reg prometheus.Registerer, opts Options) *Handler {
	if opts.Kernel == "" {
		opts.Kernel = "vmlinuz"
	}
	if opts.Initrd == "" {
		opts.Initrd = "initramfs"
	}
	if opts.IPXEDir == "" {
		opts.IPXEDir = "/usr/lib/ipxe"
	}
	if opts.Console == "" {
		opts.Console = "ttyS0,115200"
	}
	if opts.ConsoleARM64 == "" {
		opts.ConsoleARM64 = "ttyAMA0,115200"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.HTTPBase = strings.TrimRight(opts.HTTPBase, "/")
	h := &Handler{
		st: st, tokens: tokens, log: log.With("component", "ipxe"), opts: opts,
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provisiond_ipxe_scripts_total", Help: "iPXE scripts served, by kind (agent, local_disk, error).",
		}, []string{"kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provisiond_ipxe_refused_total",
			Help: "iPXE script requests answered with the local-disk script, by reason (unknown_mac, netboot_off, workflow_off, no_workflow, wrong_source, agent_live).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(h.scripts, h.refused)
	}
	return h
}

// Register mounts the handler's paths on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /ipxe/{mac}", h.script(flavorIPXE))
	mux.HandleFunc("GET /grub/{mac}", h.script(flavorGRUB))
	mux.Handle("GET /ipxe/bin/{path...}", h.files("ipxe_bin", func() string { return h.opts.IPXEDir }, h.opts.Binaries))
	mux.Handle("GET /boot/{path...}", h.files("boot", func() string { return h.opts.AgentOSDir }, nil))
	mux.Handle("GET /images/{path...}", h.files("images", func() string { return h.opts.ImagesDir }, nil))
}

// ParseMAC reads the {mac} path element: colon or hyphen separated
// (iPXE's ${net0/mac} or ${net0/mac:hexhyp}), six octets.
func ParseMAC(s string) (string, error) {
	if len(s) != 17 {
		return "", fmt.Errorf("MAC %q: want six octets like 52:54:00:12:34:56", s)
	}
	return store.NormalizeMAC(s)
}

// safeArg is what may appear in a kernel argument value without quoting.
var safeArg = regexp.MustCompile(`^[A-Za-z0-9._~:/+=-]+$`)

type agentScript struct {
	MAC, HardwareID, Hostname, WorkflowID string
	KernelURL, InitrdURL, InitrdName      string
	Args                                  string
}

var (
	agentTmpl = template.Must(template.New("agent").Parse(`#!ipxe
# provisiond: agent OS for hardware {{.HardwareID}}, workflow {{.WorkflowID}}
echo provisiond: booting the agent OS on {{.MAC}}{{if .Hostname}} ({{.Hostname}}){{end}}
kernel {{.KernelURL}} initrd={{.InitrdName}} {{.Args}} || goto failed
initrd --name {{.InitrdName}} {{.InitrdURL}} || goto failed
boot || goto failed

:failed
echo provisiond: could not boot the agent OS; rebooting in 10 s
sleep 10
reboot
`))

	// localTmpl boots the local disk. The choice, by firmware:
	//
	//   - BIOS: "sanboot --no-describe --drive 0x80" boots the first hard
	//     disk's MBR through INT 13h right away. A plain "exit" returns to
	//     the BIOS, which may try PXE again or stop at "no bootable device"
	//     depending on the boot order.
	//   - UEFI: there is no drive 0x80 to sanboot. "exit 1" hands control
	//     back to the firmware with an error status, which makes the boot
	//     manager try the next BootOrder entry (the disk). A plain "exit"
	//     (success) makes some firmware believe the boot option finished and
	//     drop into its boot menu or setup instead (tinkerbell PR #984).
	//
	// If sanboot fails on BIOS, "exit 1" is the fallback there too.
	//
	// The script is the same whatever the reason (unknown MAC, netboot
	// off, no workflow, wrong source, live agent): the reason goes to
	// provisiond's log, never to the caller.
	// grubTmpl is the same boot for GRUB (the arm64 UEFI loader Debian
	// has, see internal/osbuild/grub-arm64.sh): GRUB's http reads
	// "(http,HOST:PORT)/path". A failed initrd must not boot the kernel
	// alone (it panics without a root and hangs).
	grubTmpl = template.Must(template.New("grub").Parse(`# provisiond: agent OS for hardware {{.HardwareID}}, workflow {{.WorkflowID}}
echo "provisiond: booting the agent OS on {{.MAC}}{{if .Hostname}} ({{.Hostname}}){{end}}"
if linux {{.KernelURL}} {{.Args}}; then
  if initrd {{.InitrdURL}}; then
    boot
  fi
fi
echo "provisiond: could not boot the agent OS; rebooting in 10 s"
sleep 10
reboot
`))

	// localGRUB leaves GRUB for the firmware's next boot option (the
	// disk), as "exit 1" does in iPXE.
	localGRUB = []byte(`# provisiond: nothing to install here now: boot the local disk.
echo "provisiond: nothing to install here now; booting the local disk"
exit
`)

	localScript = []byte(`#!ipxe
# provisiond: nothing to install here now: boot the local disk.
echo provisiond: nothing to install here now; booting the local disk
iseq ${platform} efi && goto efi ||
sanboot --no-describe --drive 0x80 ||
:efi
exit 1
`)
)

// flavor is the boot loader a script is for.
type flavor int

const (
	flavorIPXE flavor = iota // iPXE, /ipxe/{mac}
	flavorGRUB               // GRUB arm64 UEFI, /grub/{mac}
)

// arm64 reports whether the agent OS to boot is the arm64 one: GRUB's
// config is asked for by the arm64 loader only; iPXE follows the
// hardware's arch.
func (f flavor) arm64(hw store.Hardware) bool {
	return f == flavorGRUB || hw.Arch == "aarch64"
}

// cmdline builds the kernel command line of the shared contract.
func (h *Handler) cmdline(hwID, wfID, token, console string) (string, error) {
	tls := "0"
	if h.opts.TLS {
		tls = "1"
	}
	args := []string{
		"bm.grpc=" + h.opts.GRPCAddr,
		"bm.http=" + h.opts.HTTPBase,
		"bm.hw=" + hwID,
		"bm.workflow=" + wfID,
		"bm.token=" + token,
		"bm.tls=" + tls,
	}
	if h.opts.TLS && len(h.opts.CABundle) > 0 {
		args = append(args, "bm.ca="+base64.StdEncoding.EncodeToString(h.opts.CABundle))
	}
	for _, a := range args {
		_, v, _ := strings.Cut(a, "=")
		if !safeArg.MatchString(v) {
			// Never print the value: it may be the token.
			name, _, _ := strings.Cut(a, "=")
			return "", fmt.Errorf("kernel argument %s has characters unsafe on a command line", name)
		}
	}
	args = append(args, "console="+console)
	return strings.Join(args, " "), nil
}

func (h *Handler) script(fl flavor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { h.serveScript(fl, w, r) }
}

func (h *Handler) serveScript(fl flavor, w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	mac, err := ParseMAC(r.PathValue("mac"))
	if err != nil {
		h.scripts.WithLabelValues("error").Inc()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	log := h.log.With("mac", mac, "remote", r.RemoteAddr)
	body, kind, err := h.render(r.Context(), log, fl, mac, r.RemoteAddr)
	if err != nil {
		h.scripts.WithLabelValues("error").Inc()
		log.Error("render iPXE script", "err", err)
		http.Error(w, "cannot render the iPXE script; see the provisiond log", http.StatusInternalServerError)
		return
	}
	h.scripts.WithLabelValues(kind).Inc()
	if _, err := w.Write(body); err != nil {
		// The client hung up: there is no one left to answer.
		log.Debug("send iPXE script", "err", err)
	}
}

// render returns the script (or GRUB config) for mac and its kind ("agent"
// or "local_disk").
func (h *Handler) render(ctx context.Context, log *slog.Logger, fl flavor, mac, remoteAddr string) ([]byte, string, error) {
	local := func(reason, why string, level slog.Level) ([]byte, string, error) {
		h.refused.WithLabelValues(reason).Inc()
		if fl == flavorGRUB {
			log.Log(ctx, level, "GRUB config: boot the local disk", "reason", why)
			return localGRUB, "local_disk", nil
		}
		log.Log(ctx, level, "iPXE script: boot the local disk", "reason", why)
		return localScript, "local_disk", nil
	}
	hw, lease, err := h.lookup(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return local("unknown_mac", "unknown MAC", slog.LevelInfo)
	}
	if err != nil {
		return nil, "", fmt.Errorf("look up hardware of %s: %w", mac, err)
	}
	log = log.With("hardware", hw.ID)
	if !hw.Netboot.AllowPXE {
		return local("netboot_off", "netboot is off for the hardware", slog.LevelInfo)
	}
	// allow_pxe lets the server netboot; allow_workflow lets that boot run
	// the agent OS (Tinkerbell's allowPXE and allowWorkflow).
	if !hw.Netboot.AllowWorkflow {
		return local("workflow_off", "workflows are off for the hardware (netboot.allow_workflow)", slog.LevelInfo)
	}
	if !h.opts.AnySource {
		if ok, why := h.sourceMatches(hw, lease, mac, remoteAddr); !ok {
			return local("wrong_source", "no token minted: "+why, slog.LevelWarn)
		}
	}
	wfID, token, err := h.tokens.MintAgentToken(ctx, hw.ID)
	switch {
	case errors.Is(err, ErrNoWorkflow):
		return local("no_workflow", "no workflow runs for the hardware", slog.LevelInfo)
	case errors.Is(err, ErrAgentLive):
		return local("agent_live", "no token minted: the workflow's agent is alive and holds its token; "+
			"a new one is issued once it has been silent for a while (the server rebooted)", slog.LevelWarn)
	case err != nil:
		return nil, "", fmt.Errorf("mint agent token for hardware %s: %w", hw.ID, err)
	}
	arm64 := fl.arm64(hw)
	console, bootDir := h.opts.Console, "/boot/"
	if arm64 {
		console, bootDir = h.opts.ConsoleARM64, "/boot/arm64/"
		if hw.Arch != "aarch64" {
			log.Warn("GRUB arm64 asks for the agent OS of hardware whose arch is not aarch64: booting the arm64 one", "arch", hw.Arch)
		}
	}
	args, err := h.cmdline(hw.ID, wfID, token, console)
	if err != nil {
		return nil, "", err
	}
	hostname := hw.Hostname
	if !safeArg.MatchString(hostname) {
		hostname = "" // shown by echo only; never let "${...}" reach iPXE or GRUB
	}
	base, tmpl, what := h.opts.HTTPBase, agentTmpl, "iPXE script"
	if fl == flavorGRUB {
		host, ok := strings.CutPrefix(base, "http://")
		if !ok || strings.Contains(host, "/") {
			return nil, "", fmt.Errorf("GRUB fetches over plain http://HOST:PORT only, and the HTTP base is %q", base)
		}
		base, tmpl, what = "(http,"+host+")", grubTmpl, "GRUB config"
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, agentScript{
		MAC: mac, HardwareID: hw.ID, Hostname: hostname, WorkflowID: wfID,
		KernelURL: base + bootDir + h.opts.Kernel, InitrdURL: base + bootDir + h.opts.Initrd,
		InitrdName: "initrd", Args: args,
	})
	if err != nil {
		return nil, "", fmt.Errorf("render agent script: %w", err)
	}
	log.Info(what+": boot the agent OS", "workflow", wfID, "arm64", arm64) // never the token
	return b.Bytes(), "agent", nil
}

// lookup reads the hardware of mac and its DHCP lease (zero when there is
// none) in one read transaction.
func (h *Handler) lookup(ctx context.Context, mac string) (store.Hardware, store.Lease, error) {
	var (
		hw    store.Hardware
		lease store.Lease
	)
	err := h.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if hw, err = tx.HardwareByMAC(mac); err != nil {
			return err
		}
		l, err := tx.Lease(mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			lease = l
		}
		return nil
	})
	return hw, lease, err
}

// sourceMatches reports whether remoteAddr is an address tied to mac: its
// unexpired DHCP lease, or the address configured on the hardware's
// interface. An interface with neither matches no source: in proxy mode
// without a lease seen, the request is refused. When it does not match it
// says why, for the log.
func (h *Handler) sourceMatches(hw store.Hardware, lease store.Lease, mac, remoteAddr string) (bool, string) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	src, err := netip.ParseAddr(host)
	if err != nil {
		return false, fmt.Sprintf("source %q is not an address", remoteAddr)
	}
	src = src.Unmap()
	var tied []string
	if lease.IP != "" && h.opts.Now().Before(lease.Expires) {
		if a, err := netip.ParseAddr(lease.IP); err == nil {
			if a == src {
				return true, ""
			}
			tied = append(tied, "leased "+lease.IP)
		}
	}
	for _, nic := range hw.Interfaces {
		if !strings.EqualFold(nic.MAC, mac) || nic.IP == "" {
			continue
		}
		a, err := netip.ParseAddr(nic.IP)
		if p, perr := netip.ParsePrefix(nic.IP); perr == nil {
			a, err = p.Addr(), nil
		}
		if err == nil {
			if a == src {
				return true, ""
			}
			tied = append(tied, "configured "+a.String())
		}
	}
	if len(tied) == 0 {
		return false, fmt.Sprintf("request from %s, and %s has no DHCP lease and no configured address to tie a request to", src, mac)
	}
	return false, fmt.Sprintf("request from %s, not from %s's address (%s)", src, mac, strings.Join(tied, ", "))
}
