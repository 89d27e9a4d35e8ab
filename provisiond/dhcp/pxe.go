package dhcp

import (
	"net/netip"
	"net/url"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// firmware families, from option 93 (RFC 4578 section 2.1, IANA "Processor
// Architecture Types").
type family int

const (
	famUnknown family = iota
	famBIOS
	famEFIx8664
	famEFIARM64
)

// archFamily maps option 93 values the way Tinkerbell's smee does:
// 0-5 and 20 BIOS; 6, 7, 9, 15, 16 x86 UEFI; 10, 11, 18, 19, 41 ARM UEFI.
func archFamily(a iana.Arch) family {
	switch a {
	case 0, 1, 2, 3, 4, 5, 20:
		return famBIOS
	case 6, 7, 9, 15, 16:
		return famEFIx8664
	case 10, 11, 18, 19, 41:
		return famEFIARM64
	}
	return famUnknown
}

// bootInfo is the boot part of a reply.
type bootInfo struct {
	file        string // the 'file' header field and option 67
	vendorClass string // option 60 echoed: "PXEClient" or "HTTPClient"
	ipxe        bool   // the client runs iPXE already
	// configURL, for arm64 UEFI PXE clients, is the boot loader's config
	// URL (HTTPBase/grub/MAC), sent as option 17 (root path): the GRUB
	// loader of internal/osbuild/grub-arm64.sh reads it. Not option 209
	// (PXELINUX's config file): EDK2's PXE (AAVMF) hands its boot file
	// only the options it asked for in option 55, and 17 is one of them.
	configURL string
}

// vendor options, PXE specification 2.1 table 2-1 and iPXE's option 175.
var (
	// Option 43 sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: take the boot
	// file of this reply, no boot server discovery.
	pxeVendorOptions = []byte{6, 1, 8, 255}
	// Option 175 (iPXE encapsulated) sub-option 176 (no-pxedhcp) = 1: iPXE
	// skips its ~3 s wait for a ProxyDHCP offer (LAB.md pitfall 3).
	ipxeNoProxyDHCP = []byte{176, 1, 1}
)

// apply puts the boot information into reply r.
func (b bootInfo) apply(r *dhcpv4.DHCPv4, server netip.Addr) {
	r.BootFileName = b.file
	r.UpdateOption(dhcpv4.OptBootFileName(b.file))
	r.UpdateOption(dhcpv4.OptClassIdentifier(b.vendorClass))
	r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), ipxeNoProxyDHCP))
	if b.vendorClass == "PXEClient" && !b.ipxe {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions))
		r.UpdateOption(dhcpv4.OptTFTPServerName(server.String()))
	}
	if b.configURL != "" {
		r.UpdateOption(dhcpv4.OptRootPath(b.configURL))
	}
}

// isNetbootClient reports whether req comes from PXE or UEFI HTTP boot
// firmware (RFC 4578 section 2): option 60 starting "PXEClient" or
// "HTTPClient", option 93 present, option 94 present, option 97 absent or
// of length 0 or 17.
func isNetbootClient(req *dhcpv4.DHCPv4) bool {
	vc := req.ClassIdentifier()
	if !strings.HasPrefix(vc, "PXEClient") && !strings.HasPrefix(vc, "HTTPClient") {
		return false
	}
	if len(req.ClientArch()) == 0 {
		return false
	}
	if req.Options.Get(dhcpv4.OptionClientNetworkInterfaceIdentifier) == nil {
		return false
	}
	if uuid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(uuid) != 0 && len(uuid) != 17 {
		return false
	}
	return true
}

// hasUserClass reports whether option 77 carries class, either as a plain
// string (iPXE's "iPXE") or in RFC 3004 form.
func hasUserClass(req *dhcpv4.DHCPv4, class string) bool {
	raw := req.Options.Get(dhcpv4.OptionUserClassInformation)
	if raw == nil {
		return false
	}
	if string(raw) == class {
		return true
	}
	for _, c := range req.UserClass() {
		if c == class {
			return true
		}
	}
	return false
}

// bootFor decides what a netboot client boots, in this order:
//  1. our own user class → the per-machine iPXE script URL;
//  2. option 60 "HTTPClient" (UEFI HTTP boot) → HTTP URL of the iPXE binary;
//  3. user class "iPXE" (stock iPXE, e.g. a NIC ROM or our chainloaded
//     binary) → the script URL, so there is no chainload loop;
//  4. otherwise the iPXE binary over TFTP, by architecture; arm64 UEFI
//     clients also get option 17, the URL of their GRUB config (Debian
//     has no arm64 iPXE: the arm64 binary is GRUB, see --efi-arm64-binary).
//
// It returns false for clients that are not netbooting or whose
// architecture has no binary.
func (s *Server) bootFor(req *dhcpv4.DHCPv4) (bootInfo, bool) {
	if !isNetbootClient(req) {
		return bootInfo{}, false
	}
	http := strings.HasPrefix(req.ClassIdentifier(), "HTTPClient")
	vc := "PXEClient"
	if http {
		vc = "HTTPClient"
	}
	script := strings.TrimRight(s.opts.HTTPBase, "/") + "/ipxe/" + url.PathEscape(req.ClientHWAddr.String())
	if hasUserClass(req, s.opts.UserClass) {
		return bootInfo{file: script, vendorClass: vc, ipxe: true}, true
	}
	var bin string
	switch archFamily(req.ClientArch()[0]) {
	case famBIOS:
		bin = s.opts.Binaries.BIOS
	case famEFIx8664:
		bin = s.opts.Binaries.EFIx8664
	case famEFIARM64:
		bin = s.opts.Binaries.EFIARM64
	}
	if http {
		if bin == "" {
			return bootInfo{}, false
		}
		return bootInfo{file: strings.TrimRight(s.opts.HTTPBase, "/") + "/ipxe/bin/" + url.PathEscape(bin), vendorClass: vc}, true
	}
	if hasUserClass(req, "iPXE") {
		return bootInfo{file: script, vendorClass: vc, ipxe: true}, true
	}
	if bin == "" {
		return bootInfo{}, false
	}
	b := bootInfo{file: bin, vendorClass: vc}
	if archFamily(req.ClientArch()[0]) == famEFIARM64 {
		b.configURL = strings.TrimRight(s.opts.HTTPBase, "/") + "/grub/" + url.PathEscape(req.ClientHWAddr.String())
	}
	return b, true
}
