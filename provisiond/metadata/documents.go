package metadata

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Document is the body of GET /metadata: the caller's whole record, minus
// anything about its BMC (address and credentials never leave provisiond).
type Document struct {
	InstanceID       string            `json:"instance_id"`
	Hostname         string            `json:"hostname,omitempty"`
	Arch             string            `json:"arch,omitempty"`
	UEFI             bool              `json:"uefi"`
	LocalIPv4        string            `json:"local_ipv4,omitempty"`
	PublicIPv4       string            `json:"public_ipv4,omitempty"`
	AvailabilityZone string            `json:"availability_zone,omitempty"`
	Interfaces       []DocInterface    `json:"interfaces"`
	Disks            []string          `json:"disks"`
	Labels           map[string]string `json:"labels"`
	// Metadata is the hardware's free-form JSON, as stored (null if none).
	Metadata json.RawMessage `json:"metadata"`
	// Machine is null while no machine is installed on the hardware.
	Machine *DocMachine `json:"machine"`
}

// DocInterface is one NIC in Document.
type DocInterface struct {
	MAC         string   `json:"mac"`
	Address     string   `json:"address,omitempty"` // "10.0.0.5"
	Prefix      int      `json:"prefix,omitempty"`  // 24
	Netmask     string   `json:"netmask,omitempty"` // "255.255.255.0"
	Gateway     string   `json:"gateway,omitempty"`
	NameServers []string `json:"name_servers,omitempty"`
}

// DocMachine is the installed machine in Document.
type DocMachine struct {
	TemplateID    string            `json:"template_id"`
	WorkflowID    string            `json:"workflow_id,omitempty"`
	Parameters    map[string]string `json:"parameters"`
	SSHKeys       []string          `json:"ssh_keys"`
	UserData      string            `json:"user_data,omitempty"`
	ProvisionedAt *time.Time        `json:"provisioned_at,omitempty"`
}

func documentOf(rec record) Document {
	hw, f := rec.hw, factsOf(rec)
	d := Document{
		InstanceID: hw.ID, Hostname: hw.Hostname, Arch: hw.Arch, UEFI: hw.UEFI,
		LocalIPv4: f.localIPv4, PublicIPv4: f.publicIPv4, AvailabilityZone: f.zone,
		Interfaces: []DocInterface{}, Disks: append([]string{}, hw.Disks...), Labels: map[string]string{},
	}
	for _, nic := range hw.Interfaces {
		di := DocInterface{MAC: nic.MAC, Gateway: nic.Gateway, NameServers: nic.NameServers}
		if p, ok := hostIP(nic.IP); ok {
			di.Address, di.Prefix, di.Netmask = p.Addr().String(), p.Bits(), maskString(p)
		}
		d.Interfaces = append(d.Interfaces, di)
	}
	for k, v := range hw.Labels {
		d.Labels[k] = v
	}
	if len(hw.Metadata) > 0 && json.Valid(hw.Metadata) {
		d.Metadata = hw.Metadata
	}
	if m := rec.m; m != nil {
		dm := &DocMachine{
			TemplateID: m.TemplateID, WorkflowID: m.WorkflowID, Parameters: map[string]string{},
			SSHKeys: append([]string{}, f.keys...), UserData: m.UserData,
		}
		for k, v := range m.Parameters {
			dm.Parameters[k] = v
		}
		if !m.ProvisionedAt.IsZero() {
			t := m.ProvisionedAt
			dm.ProvisionedAt = &t
		}
		d.Machine = dm
	}
	return d
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // only a failed write can fail; nothing to tell the client then
}

// serveJSON answers GET /metadata. It holds user-data and parameters, so it
// is guarded like user-data.
func (s *Server) serveJSON(w http.ResponseWriter, r *http.Request, req *request) {
	if !s.guard(w, req) {
		return
	}
	writeJSON(w, documentOf(req.rec))
}

// ---------------------------------------------------------------- OpenStack

// The files of the OpenStack metadata service that cloud-init's OpenStack
// (and ConfigDrive) datasource reads for version "latest":
// meta_data.json (required), user_data, vendor_data.json, network_data.json.
type osMeta struct {
	UUID             string            `json:"uuid"`
	Hostname         string            `json:"hostname,omitempty"`
	Name             string            `json:"name,omitempty"`
	LaunchIndex      int               `json:"launch_index"`
	AvailabilityZone string            `json:"availability_zone,omitempty"`
	PublicKeys       map[string]string `json:"public_keys,omitempty"`
	Keys             []osKey           `json:"keys,omitempty"`
	Meta             map[string]string `json:"meta,omitempty"`
}

type osKey struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"`
}

type osNetwork struct {
	Links    []osLink    `json:"links"`
	Networks []osNet     `json:"networks"`
	Services []osService `json:"services"`
}

type osLink struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	MAC  string `json:"ethernet_mac_address"`
}

type osNet struct {
	ID        string      `json:"id"`
	Link      string      `json:"link"`
	Type      string      `json:"type"` // ipv4, ipv6, ipv4_dhcp
	IPAddress string      `json:"ip_address,omitempty"`
	Netmask   string      `json:"netmask,omitempty"`
	Routes    []osRoute   `json:"routes,omitempty"`
	Services  []osService `json:"services,omitempty"`
}

type osRoute struct {
	Network string `json:"network"`
	Netmask string `json:"netmask"`
	Gateway string `json:"gateway"`
}

type osService struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

func openStackMeta(rec record) osMeta {
	f := factsOf(rec)
	m := osMeta{UUID: rec.hw.ID, Hostname: f.hostname, Name: f.hostname, AvailabilityZone: f.zone}
	for i, k := range f.keys {
		name := "key-" + strconv.Itoa(i)
		if m.PublicKeys == nil {
			m.PublicKeys = map[string]string{}
		}
		m.PublicKeys[name] = k
		m.Keys = append(m.Keys, osKey{Name: name, Type: "ssh", Data: k})
	}
	if len(f.tags) > 0 {
		m.Meta = map[string]string{}
		for _, kv := range f.tags {
			m.Meta[kv[0]] = kv[1]
		}
	}
	return m
}

func openStackNetwork(rec record) osNetwork {
	n := osNetwork{Links: []osLink{}, Networks: []osNet{}, Services: []osService{}}
	seen := map[string]bool{}
	for i, nic := range rec.hw.Interfaces {
		link := "iface" + strconv.Itoa(i)
		n.Links = append(n.Links, osLink{ID: link, Type: "phy", MAC: nic.MAC})
		p, ok := hostIP(nic.IP)
		if !ok {
			n.Networks = append(n.Networks, osNet{ID: "network" + strconv.Itoa(i), Link: link, Type: "ipv4_dhcp"})
			continue
		}
		net := osNet{ID: "network" + strconv.Itoa(i), Link: link, Type: "ipv4", IPAddress: p.Addr().String(), Netmask: maskString(p)}
		if p.Addr().Is6() {
			net.Type = "ipv6"
		}
		if gw, err := netip.ParseAddr(nic.Gateway); err == nil && gw.Is4() == p.Addr().Is4() {
			def, mask := "0.0.0.0", "0.0.0.0"
			if gw.Is6() {
				def, mask = "::", "::"
			}
			net.Routes = []osRoute{{Network: def, Netmask: mask, Gateway: gw.String()}}
		}
		for _, ns := range nic.NameServers {
			net.Services = append(net.Services, osService{Type: "dns", Address: ns})
			if !seen[ns] {
				seen[ns] = true
				n.Services = append(n.Services, osService{Type: "dns", Address: ns})
			}
		}
		n.Networks = append(n.Networks, net)
	}
	return n
}

// serveOpenStack answers /openstack/ and /openstack/latest/<file>.
func (s *Server) serveOpenStack(w http.ResponseWriter, r *http.Request, req *request) {
	f := factsOf(req.rec)
	switch strings.TrimPrefix(r.URL.Path, "/openstack/") {
	case "":
		writeText(w, "latest")
	case "latest", "latest/":
		lines := []string{"meta_data.json", "network_data.json", "vendor_data.json"}
		if f.userData != nil {
			lines = append(lines, "user_data")
		}
		writeText(w, strings.Join(lines, "\n"))
	case "latest/meta_data.json":
		writeJSON(w, openStackMeta(req.rec))
	case "latest/network_data.json":
		writeJSON(w, openStackNetwork(req.rec))
	case "latest/user_data":
		if !s.guard(w, req) {
			return
		}
		if f.userData == nil {
			http.NotFound(w, r)
			return
		}
		writeRaw(w, f.userData)
	case "latest/vendor_data.json":
		if !s.guard(w, req) {
			return
		}
		v := map[string]string{}
		if f.vendorData != nil {
			v["cloud-init"] = string(f.vendorData)
		}
		writeJSON(w, v)
	default:
		http.NotFound(w, r)
	}
}

// ---------------------------------------------------------------- NoCloud

// noCloudMeta is the NoCloud meta-data file. It is written as JSON, which
// is YAML, which is what NoCloud parses.
type noCloudMeta struct {
	InstanceID       string   `json:"instance-id"`
	LocalHostname    string   `json:"local-hostname,omitempty"`
	Hostname         string   `json:"hostname,omitempty"`
	PublicKeys       []string `json:"public-keys,omitempty"`
	AvailabilityZone string   `json:"availability_zone,omitempty"`
	// NetworkInterfaces is the network in Debian's interfaces(5) format:
	// the one network source cloud-init 22.4 takes from a NoCloud seed
	// over HTTP (network-config is read only from a local seed).
	NetworkInterfaces string `json:"network-interfaces,omitempty"`
}

// metaNetwork is the hardware metadata key that chooses the installed
// OS's network: "static" (the default: the addresses, gateways and name
// servers of the hardware's interfaces) or "dhcp" (no network served:
// cloud-init's fallback, DHCP on the first NIC).
const metaNetwork = "network"

// noCloudInterfaces renders the hardware's interfaces as interfaces(5)
// text for cloud-init, or "" with metadata network "dhcp" or when no
// interface has an address. Each interface is named ethN in the
// hardware's order and tied to its MAC (hwaddress), which cloud-init uses
// to find, and rename, the NIC; one without an address gets DHCP.
func noCloudInterfaces(rec record) string {
	var meta map[string]json.RawMessage
	_ = json.Unmarshal(rec.hw.Metadata, &meta) // not an object: defaults
	var mode string
	if raw, ok := meta[metaNetwork]; ok {
		_ = json.Unmarshal(raw, &mode) // not a string: the default
	}
	if mode == "dhcp" {
		return ""
	}
	var b strings.Builder
	static := false
	for i, nic := range rec.hw.Interfaces {
		name := "eth" + strconv.Itoa(i)
		p, ok := hostIP(nic.IP)
		if !ok || !p.Addr().Is4() {
			fmt.Fprintf(&b, "auto %s\niface %s inet dhcp\n    hwaddress ether %s\n", name, name, nic.MAC)
			continue
		}
		static = true
		fmt.Fprintf(&b, "auto %s\niface %s inet static\n    hwaddress ether %s\n    address %s\n    netmask %s\n",
			name, name, nic.MAC, p.Addr(), maskString(p))
		if gw, err := netip.ParseAddr(nic.Gateway); err == nil && gw.Is4() {
			fmt.Fprintf(&b, "    gateway %s\n", gw)
		}
		if len(nic.NameServers) > 0 {
			fmt.Fprintf(&b, "    dns-nameservers %s\n", strings.Join(nic.NameServers, " "))
		}
	}
	if !static {
		return ""
	}
	return b.String()
}

// serveNoCloud answers the NoCloud seed, for
// `ds=nocloud;s=http://HOST:PORT/nocloud/`. cloud-init's read_seeded treats
// any error (404 too) on user-data as a failed seed, so user-data and
// vendor-data answer 200 with an empty body when there are none.
func (s *Server) serveNoCloud(w http.ResponseWriter, r *http.Request, req *request) {
	f := factsOf(req.rec)
	switch strings.TrimPrefix(r.URL.Path, "/nocloud/") {
	case "":
		writeText(w, "meta-data\nuser-data\nvendor-data")
	case "meta-data":
		w.Header().Set("Content-Type", "text/yaml; charset=utf-8")
		b, _ := json.MarshalIndent(noCloudMeta{
			InstanceID: f.instanceID, LocalHostname: f.hostname, Hostname: f.hostname,
			PublicKeys: f.keys, AvailabilityZone: f.zone, NetworkInterfaces: noCloudInterfaces(req.rec),
		}, "", "  ")
		_, _ = w.Write(append(b, '\n'))
	case "user-data":
		if s.guard(w, req) {
			writeRaw(w, f.userData)
		}
	case "vendor-data":
		if s.guard(w, req) {
			writeRaw(w, f.vendorData)
		}
	default:
		http.NotFound(w, r)
	}
}
