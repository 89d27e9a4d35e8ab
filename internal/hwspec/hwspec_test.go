package hwspec

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// errText is err's text, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// check runs fn on every input and diffs the error texts against want
// ("" means accepted).
func check(t *testing.T, fn func(string) error, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for in := range want {
		got[in] = errText(fn(in))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("error texts (-want +got):\n%s", d)
	}
}

func TestID(t *testing.T) {
	check(t, ID, map[string]string{
		"node-1":                "",
		"a":                     "",
		"A.b_c-9":               "",
		strings.Repeat("a", 64): "",
		strings.Repeat("a", 65): `id "` + strings.Repeat("a", 64) + `"... (65 bytes): use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
		"":                      `id "": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
		"-x":                    `id "-x": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
		"a/b":                   `id "a/b": use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
	})
}

func TestMAC(t *testing.T) {
	for in, want := range map[string]struct{ mac, err string }{
		"52:54:00:12:34:56": {mac: "52:54:00:12:34:56"},
		"52-54-00-AB-CD-EF": {mac: "52:54:00:ab:cd:ef"},
		"5254.00ab.cdef":    {mac: "52:54:00:ab:cd:ef"},
		"52:54:00:12:34":    {err: `MAC address "52:54:00:12:34": want 6 bytes like 52:54:00:12:34:56`},
		"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01": {err: `MAC address "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01": want 6 bytes like 52:54:00:12:34:56`},
		"ff:ff:ff:ff:ff:ff": {err: `MAC address "ff:ff:ff:ff:ff:ff" is a multicast (group) address, not a network card's`},
		"01:00:5e:00:00:01": {err: `MAC address "01:00:5e:00:00:01" is a multicast (group) address, not a network card's`},
		"00:00:00:00:00:00": {err: `MAC address "00:00:00:00:00:00" is all zeros, not a network card's`},
	} {
		mac, err := MAC(in)
		if d := cmp.Diff(want, struct{ mac, err string }{mac, errText(err)}, cmp.AllowUnexported(want)); d != "" {
			t.Errorf("MAC(%q) (-want +got):\n%s", in, d)
		}
	}
}

func TestHostname(t *testing.T) {
	check(t, Hostname, map[string]string{
		"node1":                    "",
		"node-1.rack2.example.com": "",
		"9node":                    "",
		strings.Repeat("a", 63):    "",
		strings.Repeat("a", 64):    `host name "` + strings.Repeat("a", 64) + `" is not an RFC 1123 host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
		"":                         `host name "" is not an RFC 1123 host name: it is empty`,
		"-node":                    `host name "-node" is not an RFC 1123 host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
		"node_1":                   `host name "node_1" is not an RFC 1123 host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
		"node.":                    `host name "node." is not an RFC 1123 host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
		"node\n":                   `host name "node\n" is not an RFC 1123 host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
		"10.0.0.5":                 `host name "10.0.0.5" is not an RFC 1123 host name: the last label is all digits (an IP address is not a host name)`,
	})
}

func TestIPv4Prefix(t *testing.T) {
	check(t, IPv4Prefix, map[string]string{
		"10.0.0.5/24":      "",
		"10.0.0.1/30":      "",
		"10.0.0.2/30":      "",
		"10.0.0.0/31":      "", // RFC 3021: both addresses of a /31 are hosts'
		"10.0.0.1/31":      "",
		"10.0.0.0/32":      "",
		"192.168.0.255/23": "", // inside a /23, .0.255 is a host
		// Regressions: the network and broadcast addresses were accepted.
		"10.0.0.0/24":        `address "10.0.0.0/24" is the network address of 10.0.0.0/24, not a host's`,
		"10.0.0.255/24":      `address "10.0.0.255/24" is the broadcast address of 10.0.0.0/24, not a host's`,
		"10.0.0.3/30":        `address "10.0.0.3/30" is the broadcast address of 10.0.0.0/30, not a host's`,
		"172.16.0.0/12":      `address "172.16.0.0/12" is the network address of 172.16.0.0/12, not a host's`,
		"10.0.0.5":           `address "10.0.0.5": want an IPv4 address with prefix length, like 10.0.0.5/24`,
		"fd00::5/64":         `address "fd00::5/64": want an IPv4 address with prefix length, like 10.0.0.5/24`,
		"10.0.0.5/33":        `address "10.0.0.5/33": want an IPv4 address with prefix length, like 10.0.0.5/24`,
		"10.0.0.5/0":         `address "10.0.0.5/0": a /0 prefix is no network; want the length of the interface's subnet, like /24`,
		"0.0.0.0/8":          `address "0.0.0.0/8" is the unspecified address, not a host's`,
		"224.0.0.5/24":       `address "224.0.0.5/24" is a multicast address, not a host's`,
		"255.255.255.255/32": `address "255.255.255.255/32" is the broadcast address, not a host's`,
	})
}

func TestGateway(t *testing.T) {
	check(t, Gateway, map[string]string{
		"10.0.0.1":    "",
		"10.0.0.1/24": `gateway "10.0.0.1/24": want an IPv4 address like 10.0.0.1`,
		"fe80::1":     `gateway "fe80::1": want an IPv4 address like 10.0.0.1`,
		"0.0.0.0":     `gateway "0.0.0.0" is the unspecified address, not a router's`,
		"224.0.0.1":   `gateway "224.0.0.1" is a multicast address, not a router's`,
	})
	for _, tc := range []struct{ gw, ip, want string }{
		{"10.0.0.1", "10.0.0.5/24", ""},
		{"172.31.1.1", "203.0.113.7/32", ""}, // on-link router outside a /32
		{"10.0.0.5", "10.0.0.5/24", `gateway "10.0.0.5" is the interface's own address`},
		{"10.0.0.0", "10.0.0.5/24", `gateway "10.0.0.0" is the network address of 10.0.0.0/24`},
		{"10.0.0.255", "10.0.0.5/24", `gateway "10.0.0.255" is the broadcast address of 10.0.0.0/24`},
	} {
		if d := cmp.Diff(tc.want, errText(GatewayFor(tc.gw, tc.ip))); d != "" {
			t.Errorf("GatewayFor(%q, %q) (-want +got):\n%s", tc.gw, tc.ip, d)
		}
	}
}

func TestNameServer(t *testing.T) {
	check(t, NameServer, map[string]string{
		"10.0.0.1":               "",
		"2001:4860:4860::8888":   "",
		"2001:4860:4860:0::8888": `name server "2001:4860:4860:0::8888": write it as 2001:4860:4860::8888`,
		"dns.example":            `name server "dns.example": want an IP address like 10.0.0.1`,
		"0.0.0.0":                `name server "0.0.0.0": want a unicast address`,
		"fe80::1%eth0":           `name server "fe80::1%eth0": want an IP address like 10.0.0.1`,
	})
}

func TestDisk(t *testing.T) {
	check(t, Disk, map[string]string{
		"/dev/sda":     "",
		"/dev/nvme0n1": "",
		"/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB_S467NX0M123456": "",
		"/dev/disk/by-path/pci-0000:00:1f.2-ata-1":                    "",
		"/dev/mapper/vg0-root":                                        "",
		// Regressions: accepted before.
		"/dev/../etc/passwd":               `disk "/dev/../etc/passwd": write the path without '.', '..', '//' or a trailing '/'; want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"/dev/sda,/dev/sdb":                `disk "/dev/sda,/dev/sdb": one device per entry, of letters, digits and . _ + : @ = / - only`,
		"/dev/sda /dev/sdb":                `disk "/dev/sda /dev/sdb": one device per entry, of letters, digits and . _ + : @ = / - only`,
		"/dev/sda\n":                       `disk "/dev/sda\n": one device per entry, of letters, digits and . _ + : @ = / - only`,
		"/dev/./sda":                       `disk "/dev/./sda": write the path without '.', '..', '//' or a trailing '/'; want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"/dev//sda":                        `disk "/dev//sda": write the path without '.', '..', '//' or a trailing '/'; want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"/dev/sda/":                        `disk "/dev/sda/": write the path without '.', '..', '//' or a trailing '/'; want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"/dev/..":                          `disk "/dev/..": write the path without '.', '..', '//' or a trailing '/'; want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"/dev/":                            `disk "/dev/": want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"sda":                              `disk "sda": want a block device path under /dev/, like /dev/sda or /dev/disk/by-id/...`,
		"/dev/" + strings.Repeat("a", 251): `disk "/dev/` + strings.Repeat("a", 59) + `"... (256 bytes): longer than 255 characters`,
	})
}

func TestEnums(t *testing.T) {
	check(t, Arch, map[string]string{
		"x86_64": "", "aarch64": "",
		"arm64": `arch "arm64": want x86_64 or aarch64`,
		"":      `arch "": want x86_64 or aarch64`,
	})
	check(t, BMCDriver, map[string]string{
		"ipmi": "", "redfish": "", "manual": "",
		"IPMI": `BMC driver "IPMI": want ipmi, redfish or manual`,
	})
	check(t, Wipe, map[string]string{
		"none": "", "quick": "", "zero": "", "discard": "",
		"secure": `wipe mode "secure": want none, quick, zero or discard`,
	})
}

func TestBMCAddress(t *testing.T) {
	check(t, BMCAddress, map[string]string{
		"10.0.0.5":          "",
		"bmc-1.example.com": "",
		"bmc1":              "",
		"fe80::1":           "",
		"fe80::1%eth0":      "",
		"2001:db8::5":       "",
		// Regressions: a port inside the address was accepted.
		"10.0.0.5:623":     `BMC address "10.0.0.5:623" has a port: set the address 10.0.0.5 and put 623 in the BMC port`,
		"[fe80::1]:443":    `BMC address "[fe80::1]:443" has a port: set the address fe80::1 and put 443 in the BMC port`,
		"bmc.example:8443": `BMC address "bmc.example:8443" has a port: set the address "bmc.example" and put 8443 in the BMC port`,
		"[fe80::1]":        `BMC address "[fe80::1]": write the IPv6 address without brackets, as fe80::1`,
		"https://10.0.0.5": `BMC address "https://10.0.0.5": want a host name or an IP address, not a URL or path`,
		"":                 `BMC address is empty: want a host name or an IP address`,
		"10.0.0.256":       `BMC address "10.0.0.256" is not a valid IPv4 address`,
		"fe80::1::2":       `BMC address "fe80::1::2" is not a valid IPv6 address`,
		"0.0.0.0":          `BMC address "0.0.0.0" is no host's address`,
		"bmc_1":            `BMC address "bmc_1": want a host name or an IP address; as a host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
		"bmc 1":            `BMC address "bmc 1": want a host name or an IP address; as a host name: want dot-separated labels of 1-63 letters, digits or inner hyphens`,
	})
}

func TestLabels(t *testing.T) {
	keyWant := "want an optional DNS-name prefix and '/', then 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
	check(t, LabelKey, map[string]string{
		"rack":                  "",
		"example.com/role":      "",
		"Rack_Row.3-a":          "",
		strings.Repeat("k", 63): "",
		strings.Repeat("k", 64): `label key "` + strings.Repeat("k", 64) + `": ` + keyWant,
		// Regression: a key with a newline was accepted.
		"rack\nrow":     `label key "rack\nrow": ` + keyWant,
		"":              `label key "": ` + keyWant,
		"-rack":         `label key "-rack": ` + keyWant,
		"rack ":         `label key "rack ": ` + keyWant,
		"example.com/":  `label key "example.com/": ` + keyWant,
		"a/b/c":         `label key "a/b/c": ` + keyWant,
		"/rack":         `label key "/rack": the prefix before '/' must be a DNS name (it is empty)`,
		"ex_ample/rack": `label key "ex_ample/rack": the prefix before '/' must be a DNS name (want dot-separated labels of 1-63 letters, digits or inner hyphens)`,
	})
	big := strings.Repeat("x", 1<<20)
	check(t, LabelValue, map[string]string{
		"":                       "",
		"row 3, U12":             "",
		"größe":                  "",
		strings.Repeat("é", 256): "",
		// Regression: a 1 MiB value was accepted.
		big:                      `label value "` + strings.Repeat("x", 64) + `"... (1048576 bytes): 1048576 characters, at most 256 allowed`,
		strings.Repeat("é", 257): `label value "` + strings.Repeat("é", 32) + `"... (514 bytes): 257 characters, at most 256 allowed`,
		"a\nb":                   `label value "a\nb": printable characters only (a line break, tab or control character is at byte 1)`,
		"a\tb":                   `label value "a\tb": printable characters only (a line break, tab or control character is at byte 1)`,
		"\xff":                   `label value "\xff" is not UTF-8 text`,
	})
	err := Labels(map[string]string{"rack": "r1", "z\n": "x", "role": "a\nb"})
	want := `label "role": label value "a\nb": printable characters only (a line break, tab or control character is at byte 1)` + "\n" +
		`label key "z\n": ` + keyWant
	if d := cmp.Diff(want, errText(err)); d != "" {
		t.Errorf("Labels (-want +got):\n%s", d)
	}
	if err := Labels(nil); err != nil {
		t.Errorf("Labels(nil) = %v", err)
	}
}

func TestSSHKey(t *testing.T) {
	const ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host"
	for in, want := range map[string]string{
		ed: "",
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl": "",
		"not a key":                   "is not an OpenSSH public key",
		"ssh-rsa AAAA":                "is not an OpenSSH public key",
		`command="x" ` + ed:           "authorized_keys options",
		ed + "\n" + ed:                "without line breaks",
		"-----BEGIN PRIVATE KEY-----": "is not an OpenSSH public key",
	} {
		err := SSHKey(in)
		switch {
		case want == "" && err != nil:
			t.Errorf("SSHKey(%q) = %v, want nil", in, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("SSHKey(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}
