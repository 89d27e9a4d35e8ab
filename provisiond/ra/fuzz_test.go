package ra

import (
	"net/netip"
	"testing"
)

// knownDrops are decide's reasons: the label values of dropped_total.
var knownDrops = map[string]bool{
	dropNotRS: true, dropShort: true, dropCode: true, dropHopLimit: true,
	dropOption: true, dropUnspecSLLA: true, dropSource: true,
}

// FuzzDecide feeds decide any message, source and hop limit. It must not
// panic, must keep the drop reasons (a metrics label) to its known set, and
// may answer only a well-formed solicitation with hop limit 255, to the
// source or, for the unspecified source, to all nodes.
//
//	go test -run '^$' -fuzz FuzzDecide -fuzztime 2m ./provisiond/ra/
func FuzzDecide(f *testing.F) {
	ll := hostLL.As16()
	unspec := netip.IPv6Unspecified().As16()
	f.Add(rs(0, slla...), ll[:], 255)
	f.Add(rs(0), unspec[:], 255)
	f.Add(rs(0, slla...), unspec[:], 255)
	f.Add(rs(1), ll[:], 255)
	f.Add(rs(0, 1, 0), ll[:], 255)
	f.Add([]byte{134, 0, 0, 0}, ll[:], 255)
	f.Add(rs(0), ll[:], 64)
	f.Fuzz(func(t *testing.T, msg, src []byte, hop int) {
		addr, _ := netip.AddrFromSlice(src)
		v := decide(msg, addr, hop)
		if v.Reply == (v.Drop != "") {
			t.Fatalf("verdict %+v: want exactly one of Reply and Drop", v)
		}
		if !v.Reply {
			if !knownDrops[v.Drop] {
				t.Fatalf("unknown drop reason %q", v.Drop)
			}
			return
		}
		if len(msg) < rsMinLen || msg[0] != typeRouterSolicitation || msg[1] != 0 || hop != ndpHopLimit {
			t.Fatalf("answered %x (hop limit %d): not a valid solicitation", msg, hop)
		}
		if (len(msg)-rsMinLen)%8 != 0 {
			t.Fatalf("answered %x: options are not whole 8-byte units", msg)
		}
		switch {
		case addr.IsUnspecified():
			if v.Dst != allNodes {
				t.Fatalf("unspecified source answered at %s, want ff02::1", v.Dst)
			}
		case v.Dst != addr:
			t.Fatalf("source %s answered at %s", addr, v.Dst)
		}
		if v.Dst.IsMulticast() && v.Dst != allNodes {
			t.Fatalf("answer to multicast %s", v.Dst)
		}
		if v.MAC != nil && len(v.MAC) != 6 {
			t.Fatalf("MAC %x is not 6 bytes", v.MAC)
		}
	})
}
