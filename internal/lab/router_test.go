package lab

import "testing"

func TestForwDatagrams(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos\n" +
		"Ip: 1 64 9120 0 3 7343 0\n" +
		"Icmp: InMsgs InErrors\nIcmp: 5 0\n"
	n, err := forwDatagrams("r", snmp)
	if err != nil || n != 7343 {
		t.Fatalf("forwDatagrams = %d, %v; want 7343", n, err)
	}
	for name, bad := range map[string]string{
		"no Ip lines":    "Icmp: InMsgs\nIcmp: 5\n",
		"no values line": "Ip: Forwarding ForwDatagrams\n",
		"not a number":   "Ip: Forwarding ForwDatagrams\nIp: 1 x\n",
	} {
		if n, err := forwDatagrams("r", bad); err == nil {
			t.Errorf("%s: got %d, want an error", name, n)
		}
	}
}
