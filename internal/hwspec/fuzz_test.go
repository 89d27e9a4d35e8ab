package hwspec

import (
	"net"
	"net/netip"
	"path"
	"strings"
	"testing"
)

// FuzzHWSpec feeds one string to every check. None may panic, every
// error stays short whatever the input's size, and what is accepted
// keeps the promises the callers rely on.
func FuzzHWSpec(f *testing.F) {
	for _, s := range []string{
		"node-1", "52:54:00:12:34:56", "10.0.0.5/24", "10.0.0.0/24", "10.0.0.1", "fe80::1%eth0",
		"/dev/sda", "/dev/../etc/passwd", "/dev/sda,/dev/sdb", "10.0.0.5:623", "[fe80::1]:443",
		"example.com/role", "rack\nrow", "row 3, U12", "x86_64", "quick", "ipmi", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		short := func(what string, err error) {
			if err != nil && len(err.Error()) > 1024 {
				t.Fatalf("%s(%q): error of %d bytes", what, s, len(err.Error()))
			}
		}
		short("ID", ID(s))
		short("Arch", Arch(s))
		short("BMCDriver", BMCDriver(s))
		short("Wipe", Wipe(s))
		short("Gateway", Gateway(s))
		short("NameServer", NameServer(s))
		short("LabelKey", LabelKey(s))
		short("Labels", Labels(map[string]string{"k": s}))

		if mac, err := MAC(s); err == nil {
			if again, err := MAC(mac); err != nil || again != mac {
				t.Fatalf("MAC(%q) = %q, but MAC of that = %q, %v", s, mac, again, err)
			}
		} else {
			short("MAC", err)
		}
		if err := Hostname(s); err == nil {
			if _, err := netip.ParseAddr(s); err == nil {
				t.Fatalf("Hostname accepted the IP address %q", s)
			}
			if err := BMCAddress(s); err != nil {
				t.Fatalf("host name %q is not a BMC address: %v", s, err)
			}
		} else {
			short("Hostname", err)
		}
		if err := IPv4Prefix(s); err == nil {
			p := netip.MustParsePrefix(s)
			if p.Bits() <= 30 && (p.Addr() == p.Masked().Addr() || p.Addr() == lastAddr(p)) {
				t.Fatalf("IPv4Prefix accepted %q, the network or broadcast address", s)
			}
			short("GatewayFor", GatewayFor("10.0.0.1", s))
		} else {
			short("IPv4Prefix", err)
		}
		if err := Disk(s); err == nil {
			if strings.ContainsAny(s, ", \t\n\"'") || path.Clean(s) != s || !strings.HasPrefix(s, "/dev/") {
				t.Fatalf("Disk accepted %q", s)
			}
		} else {
			short("Disk", err)
		}
		if err := BMCAddress(s); err == nil {
			if _, err := netip.ParseAddrPort(s); err == nil {
				t.Fatalf("BMCAddress accepted %q, which has a port", s)
			}
			if _, _, err := net.SplitHostPort(s); err == nil {
				t.Fatalf("BMCAddress accepted %q, which splits into host and port", s)
			}
		} else {
			short("BMCAddress", err)
		}
		if err := LabelValue(s); err == nil && strings.ContainsAny(s, "\r\n\t\x00") {
			t.Fatalf("LabelValue accepted %q", s)
		}
	})
}
