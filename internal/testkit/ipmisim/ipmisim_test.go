package ipmisim

import (
	"strings"
	"testing"
)

// TestLanConfAddr: ipmi_sim listens on 127.0.0.1 unless told another
// address, and ipmitool is pointed at the same one.
func TestLanConfAddr(t *testing.T) {
	c := Config{Name: "s", Port: 623, Script: "/x", Users: []User{{ID: 2, Name: "admin", Password: "p", Priv: "admin"}}}
	if conf := LanConf(c); !strings.Contains(conf, "    addr 127.0.0.1 623\n") {
		t.Errorf("default lan.conf:\n%s", conf)
	}
	c.Addr = "10.0.100.31"
	if conf := LanConf(c); !strings.Contains(conf, "    addr 10.0.100.31 623\n") {
		t.Errorf("lan.conf with Addr:\n%s", conf)
	}
	for host, want := range map[string]string{"": "127.0.0.1", "10.0.100.31": "10.0.100.31"} {
		args := strings.Join(Client{Host: host, Port: 623}.Args(), " ")
		if !strings.Contains(args, "-H "+want+" -p 623") {
			t.Errorf("Client{Host: %q}.Args() = %s, want -H %s", host, args, want)
		}
	}
}
