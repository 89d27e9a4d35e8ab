package metadata

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestNoCloudNetworkWithCloudInit: the interfaces(5) text of the NoCloud
// meta-data is read by Debian's cloud-init 22.4 itself (its net-convert,
// the code its NoCloud datasource runs) into a systemd-networkd config with
// the hardware's static address, gateway, name server and MAC.
func TestNoCloudNetworkWithCloudInit(t *testing.T) {
	hw := store.Hardware{ID: "n1", Interfaces: []store.Interface{
		{MAC: "52:54:00:00:00:0a", IP: "10.0.0.10/24", Gateway: "10.0.0.1", NameServers: []string{"10.0.0.2"}},
		{MAC: "52:54:00:00:01:0a"},
	}}
	eni := noCloudInterfaces(record{hw: hw})
	if eni == "" {
		t.Fatal("no network-interfaces for a hardware with a static address")
	}
	for _, off := range []string{`{"network": "dhcp"}`} {
		hw2 := hw
		hw2.Metadata = json.RawMessage(off)
		if got := noCloudInterfaces(record{hw: hw2}); got != "" {
			t.Errorf("with metadata %s: %q, want none (cloud-init's DHCP fallback)", off, got)
		}
	}
	if got := noCloudInterfaces(record{hw: store.Hardware{ID: "n2", Interfaces: []store.Interface{{MAC: "52:54:00:00:00:0b"}}}}); got != "" {
		t.Errorf("no address anywhere: %q, want none", got)
	}

	py := "/usr/bin/python3"
	if _, err := os.Stat("/usr/lib/python3/dist-packages/cloudinit"); err != nil {
		t.Skip("cloud-init not installed (apt-get install --no-install-recommends cloud-init)")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "interfaces")
	if err := os.WriteFile(in, []byte(eni), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command(py, "-m", "cloudinit.cmd.main", "devel", "net-convert", "-p", in, "-k", "eni", "-D", "debian", "-d", out, "-O", "networkd")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cloud-init net-convert: %v\n%s", err, b)
	}
	var all strings.Builder
	err := filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		all.WriteString("## " + p + "\n" + string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got := all.String()
	for _, want := range []string{"MACAddress=52:54:00:00:00:0a", "Address=10.0.0.10/24", "Gateway=10.0.0.1", "DNS=10.0.0.2", "MACAddress=52:54:00:00:01:0a", "DHCP=ipv4"} {
		if !strings.Contains(got, want) {
			t.Errorf("cloud-init's networkd config lacks %q:\n%s", want, got)
		}
	}
}
