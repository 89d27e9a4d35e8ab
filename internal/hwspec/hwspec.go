// Package hwspec checks the fields of a hardware record: ids, MAC
// addresses, host names, addresses, disks, the BMC, labels, wipe modes and
// the architecture. The provider runs it at plan time and provisiond's
// Admin API runs it on every request, so both accept the same input and
// reject it with the same words.
//
// Each check takes the value as the user wrote it and returns nil or an
// error whose text names the value (shortened when long) and says what is
// wanted. Callers add where the value was (an attribute path, a field
// name) and nothing else.
package hwspec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Allowed values of the enumerations.
var (
	Arches     = []string{"x86_64", "aarch64"}
	BMCDrivers = []string{"ipmi", "redfish", "manual"}
	WipeModes  = []string{"none", "quick", "zero", "discard"}
)

// Limits of labels, modelled on Kubernetes: a key is an optional DNS
// subdomain prefix and "/", then a name of at most MaxLabelName
// characters; a value is at most MaxLabelValue printable characters
// (Kubernetes allows 63 of a narrower set; ours may hold a free-form
// note such as a rack position "row 3, U12").
const (
	MaxLabelName   = 63
	MaxLabelPrefix = 253
	MaxLabelValue  = 256
	MaxDiskPath    = 255
	MaxHostname    = 253
)

// quote is %q of s, cut short when s is long so that an error about a
// megabyte of input is not itself a megabyte.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// IDPattern is what ID accepts; it is exported for callers that check
// other ids (templates) by the same rule. Do not modify it.
var IDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ID checks a hardware (or template) id.
func ID(s string) error {
	if !IDPattern.MatchString(s) {
		return fmt.Errorf("id %s: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", quote(s))
	}
	return nil
}

// MAC checks an Ethernet MAC address and returns it in provisiond's
// spelling: lower case, colons. A multicast or all-zero address is no
// network card's.
func MAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("MAC address %s: want 6 bytes like 52:54:00:12:34:56", quote(s))
	}
	if hw[0]&1 == 1 {
		return "", fmt.Errorf("MAC address %s is a multicast (group) address, not a network card's", quote(s))
	}
	if slices.Equal(hw, make(net.HardwareAddr, 6)) {
		return "", fmt.Errorf("MAC address %s is all zeros, not a network card's", quote(s))
	}
	return hw.String(), nil
}

var labelRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// dnsName reports why s is not an RFC 1123 host name (dot-separated
// labels of letters, digits and inner hyphens, 1-63 characters each, at
// most 253 in all, the last not all digits so that it cannot be taken
// for an IPv4 address: RFC 1123 section 2.1), or "" if it is one.
func dnsName(s string) string {
	if s == "" {
		return "it is empty"
	}
	if len(s) > MaxHostname {
		return fmt.Sprintf("longer than %d characters", MaxHostname)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return "want dot-separated labels of 1-63 letters, digits or inner hyphens"
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "the last label is all digits (an IP address is not a host name)"
	}
	return ""
}

// Hostname checks an RFC 1123 host name.
func Hostname(s string) error {
	if why := dnsName(s); why != "" {
		return fmt.Errorf("host name %s is not an RFC 1123 host name: %s", quote(s), why)
	}
	return nil
}

// unicast reports why a is no host's unicast IPv4 address, or "".
// Loopback addresses pass: no real server has one, but the acceptance
// lab runs its simulated servers on 127.0.0.0/8, and such an address
// harms nothing.
func unicast4(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "is the unspecified address"
	case a.IsMulticast():
		return "is a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is the broadcast address"
	}
	return ""
}

// lastAddr is the highest address of p (its broadcast address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// IPv4Prefix checks an interface address with its prefix length, like
// 10.0.0.5/24. The address must be one a host can have on that network:
// not the network address nor the broadcast address of the prefix
// (except in a /31 or /32, which have neither: RFC 3021).
func IPv4Prefix(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("address %s: want an IPv4 address with prefix length, like 10.0.0.5/24", quote(s))
	}
	if p.String() != s {
		return fmt.Errorf("address %s: write it as %s", quote(s), p.String())
	}
	if p.Bits() == 0 {
		return fmt.Errorf("address %s: a /0 prefix is no network; want the length of the interface's subnet, like /24", quote(s))
	}
	if why := unicast4(p.Addr()); why != "" {
		return fmt.Errorf("address %s %s, not a host's", quote(s), why)
	}
	if p.Bits() <= 30 {
		if p.Addr() == p.Masked().Addr() {
			return fmt.Errorf("address %s is the network address of %s, not a host's", quote(s), p.Masked())
		}
		if p.Addr() == lastAddr(p) {
			return fmt.Errorf("address %s is the broadcast address of %s, not a host's", quote(s), p.Masked())
		}
	}
	return nil
}

// Gateway checks a default gateway: a unicast IPv4 address.
func Gateway(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || a.String() != s {
		return fmt.Errorf("gateway %s: want an IPv4 address like 10.0.0.1", quote(s))
	}
	if why := unicast4(a); why != "" {
		return fmt.Errorf("gateway %s %s, not a router's", quote(s), why)
	}
	return nil
}

// GatewayFor checks a gateway against the interface address it is
// handed out with (both already valid on their own): it is not the
// interface itself, nor the network or broadcast address of its subnet.
// A gateway outside the subnet is allowed: a /32 with an on-link router
// is a common hosting set-up.
func GatewayFor(gateway, address string) error {
	gw, err := netip.ParseAddr(gateway)
	if err != nil {
		return Gateway(gateway)
	}
	p, err := netip.ParsePrefix(address)
	if err != nil {
		return IPv4Prefix(address)
	}
	switch {
	case gw == p.Addr():
		return fmt.Errorf("gateway %s is the interface's own address", quote(gateway))
	case p.Bits() <= 30 && gw == p.Masked().Addr():
		return fmt.Errorf("gateway %s is the network address of %s", quote(gateway), p.Masked())
	case p.Bits() <= 30 && gw == lastAddr(p):
		return fmt.Errorf("gateway %s is the broadcast address of %s", quote(gateway), p.Masked())
	}
	return nil
}

// NameServer checks a DNS server address: IPv4 or IPv6, as netip
// writes it.
func NameServer(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("name server %s: want an IP address like 10.0.0.1", quote(s))
	}
	if a.String() != s {
		return fmt.Errorf("name server %s: write it as %s", quote(s), a.String())
	}
	if a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("name server %s: want a unicast address", quote(s))
	}
	return nil
}

// diskRE is the alphabet of device paths: what the kernel and udev use
// for /dev/sda, /dev/nvme0n1, /dev/disk/by-id/..., /dev/disk/by-path/...
// (udev writes other bytes as \xNN). It has no comma, which separates
// disks in the wipe action's DEST_DISKS, and no white space or quotes.
var diskRE = regexp.MustCompile(`^[A-Za-z0-9._+:@=/-]+$`)

// Disk checks a block device path: a clean absolute path under /dev/.
func Disk(s string) error {
	const want = "want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/..."
	switch {
	case !strings.HasPrefix(s, "/dev/") || len(s) == len("/dev/"):
		return fmt.Errorf("disk %s: %s", quote(s), want)
	case len(s) > MaxDiskPath:
		return fmt.Errorf("disk %s: longer than %d characters", quote(s), MaxDiskPath)
	case !diskRE.MatchString(s):
		return fmt.Errorf("disk %s: one device per entry, of letters, digits and . _ + : @ = / - only", quote(s))
	case path.Clean(s) != s || !strings.HasPrefix(path.Clean(s), "/dev/"):
		return fmt.Errorf("disk %s: write the path without '.', '..', '//' or a trailing '/'; %s", quote(s), want)
	}
	return nil
}

// oneOf checks that s is one of allowed.
func oneOf(what, s string, allowed []string) error {
	if slices.Contains(allowed, s) {
		return nil
	}
	last := len(allowed) - 1
	return fmt.Errorf("%s %s: want %s or %s", what, quote(s), strings.Join(allowed[:last], ", "), allowed[last])
}

// Arch checks a CPU architecture.
func Arch(s string) error { return oneOf("arch", s, Arches) }

// BMCDriver checks a BMC driver.
func BMCDriver(s string) error { return oneOf("BMC driver", s, BMCDrivers) }

// Wipe checks a wipe mode.
func Wipe(s string) error { return oneOf("wipe mode", s, WipeModes) }

// BMCAddress checks a BMC's address: a host name or an IP address, with
// no port (the port is a field of its own) and no URL scheme.
func BMCAddress(s string) error {
	const want = "want a host name or an IP address"
	if s == "" {
		return fmt.Errorf("BMC address is empty: %s", want)
	}
	if strings.Contains(s, "://") || strings.Contains(s, "/") {
		return fmt.Errorf("BMC address %s: %s, not a URL or path", quote(s), want)
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return fmt.Errorf("BMC address %s has a port: set the address %s and put %d in the BMC port", quote(s), ap.Addr(), ap.Port())
	}
	if host, port, err := net.SplitHostPort(s); err == nil && len(port) <= 5 && strings.Trim(port, "0123456789") == "" && port != "" {
		return fmt.Errorf("BMC address %s has a port: set the address %s and put %s in the BMC port", quote(s), quote(host), port)
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return fmt.Errorf("BMC address %s: write the IPv6 address without brackets, as %s", quote(s), a)
		}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return fmt.Errorf("BMC address %s is no host's address", quote(s))
		}
		return nil
	}
	if strings.Trim(s, "0123456789.") == "" {
		return fmt.Errorf("BMC address %s is not a valid IPv4 address", quote(s))
	}
	if strings.Contains(s, ":") {
		return fmt.Errorf("BMC address %s is not a valid IPv6 address", quote(s))
	}
	if why := dnsName(s); why != "" {
		return fmt.Errorf("BMC address %s: %s; as a host name: %s", quote(s), want, why)
	}
	return nil
}

var labelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// LabelKey checks a label key: an optional prefix that is a DNS name and
// "/", then a name of 1-63 letters, digits, '.', '_' or '-' that starts
// and ends with a letter or digit (rack, example.com/role).
func LabelKey(s string) error {
	name := s
	if prefix, rest, ok := strings.Cut(s, "/"); ok {
		if why := dnsName(prefix); why != "" || len(prefix) > MaxLabelPrefix {
			if why == "" {
				why = fmt.Sprintf("longer than %d characters", MaxLabelPrefix)
			}
			return fmt.Errorf("label key %s: the prefix before '/' must be a DNS name (%s)", quote(s), why)
		}
		name = rest
	}
	if len(name) > MaxLabelName || !labelNameRE.MatchString(name) {
		return fmt.Errorf("label key %s: want an optional DNS-name prefix and '/', then 1-%d letters, digits, '.', '_' or '-', starting and ending with a letter or digit", quote(s), MaxLabelName)
	}
	return nil
}

// LabelValue checks a label value: at most 256 printable characters of
// UTF-8 (spaces allowed; no line breaks, tabs or other control
// characters). It may be empty.
func LabelValue(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("label value %s is not UTF-8 text", quote(s))
	}
	if n := utf8.RuneCountInString(s); n > MaxLabelValue {
		return fmt.Errorf("label value %s: %d characters, at most %d allowed", quote(s), n, MaxLabelValue)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
		return fmt.Errorf("label value %s: printable characters only (a line break, tab or control character is at byte %d)", quote(s), i)
	}
	return nil
}

// Labels checks every key and value of a label map, in key order so the
// first error is always the same one.
func Labels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		if err := LabelKey(k); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := LabelValue(labels[k]); err != nil {
			errs = append(errs, fmt.Errorf("label %s: %w", quote(k), err))
		}
	}
	return errors.Join(errs...)
}

// SSHKey checks one authorized_keys line: a public key as OpenSSH writes
// it (`ssh-ed25519 AAAA... comment`), one per entry. Options before the
// key type (`command="..." ssh-rsa ...`) are refused: provisiond serves
// keys as EC2's public-keys, which carry none.
func SSHKey(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("SSH key %s: one key per entry, without line breaks", quote(s))
	}
	pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	switch {
	case err != nil:
		return fmt.Errorf("SSH key %s is not an OpenSSH public key (want e.g. \"ssh-ed25519 AAAA... user@host\", a line of id_ed25519.pub): %v", quote(s), err)
	case len(options) > 0:
		return fmt.Errorf("SSH key %s: authorized_keys options (%s) are not served; give the key alone", quote(s), strings.Join(options, ","))
	case len(rest) > 0:
		return fmt.Errorf("SSH key %s: one key per entry", quote(s))
	case pub == nil:
		return fmt.Errorf("SSH key %s: no key", quote(s))
	}
	return nil
}
