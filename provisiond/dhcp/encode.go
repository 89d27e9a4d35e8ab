package dhcp

import (
	"encoding/binary"
	"net"
	"slices"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// appendPacket appends the wire form of d to b: byte for byte what
// d.ToBytes() gives (TestAppendPacket and the fuzzer hold it to that), but
// into a buffer the caller reuses, without ToBytes's allocations (a
// growing buffer and a sorted key list per packet), which showed in
// profiles of the reply path.
func appendPacket(b []byte, d *dhcpv4.DHCPv4) []byte {
	start := len(b)
	// RFC 2131 section 2, figure 1: the fixed part, 236 bytes.
	b = append(b, byte(d.OpCode), byte(d.HWType), byte(len(d.ClientHWAddr)), d.HopCount)
	b = append(b, d.TransactionID[:]...)
	b = binary.BigEndian.AppendUint16(b, d.NumSeconds)
	b = binary.BigEndian.AppendUint16(b, d.Flags)
	for _, ip := range [...]net.IP{d.ClientIPAddr, d.YourIPAddr, d.ServerIPAddr, d.GatewayIPAddr} {
		if ip4 := ip.To4(); ip4 != nil {
			b = append(b, ip4...)
		} else {
			b = append(b, 0, 0, 0, 0)
		}
	}
	b = appendField(b, []byte(d.ClientHWAddr), 16, 16)
	b = appendField(b, []byte(d.ServerHostName), 64, 63) // NUL-terminated
	b = appendField(b, []byte(d.BootFileName), 128, 127)
	b = append(b, 99, 130, 83, 99) // magic cookie, section 3
	// Options in code order, except that relay agent information (82)
	// comes last (RFC 3046 section 2.1); pad and end are not taken from
	// the map. Long options are split (RFC 3396).
	var keys [256]uint8
	codes := keys[:0]
	agentInfo := false
	for c := range d.Options {
		switch c {
		case 0, 255:
		case 82:
			agentInfo = true
		default:
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	if agentInfo {
		codes = append(codes, 82)
	}
	for _, c := range codes {
		v := d.Options[c]
		if len(v) == 0 {
			b = append(b, c, 0)
			continue
		}
		for len(v) > 0 {
			n := min(len(v), 255)
			b = append(b, c, byte(n))
			b = append(b, v[:n]...)
			v = v[n:]
		}
	}
	b = append(b, 255)
	// BOOTP's minimum of 300 bytes (RFC 951), which some relays enforce.
	if n := len(b) - start; n < 300 {
		b = append(b, make([]byte, 300-n)...)
	}
	return b
}

// appendField appends v as a fixed field of size bytes, of which at most
// max carry v, the rest zero.
func appendField(b, v []byte, size, max int) []byte {
	n := min(len(v), max)
	b = append(b, v[:n]...)
	return append(b, make([]byte, size-n)...)
}
