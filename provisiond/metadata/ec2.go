package metadata

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ec2Versions are the EC2 metadata API versions served. cloud-init's Ec2
// datasource probes 2021-03-23, 2018-09-24 and 2016-09-02 first and falls
// back to its minimum, 2009-04-04, when those answer 404.
var ec2Versions = []string{"2009-04-04", "latest"}

// Labels and free-form metadata keys that feed EC2 fields. A label wins
// over the metadata key.
const (
	labelPublicIPv4 = "public-ipv4"                 // public-ipv4, else metadata "public_ipv4"
	metaPublicIPv4  = "public_ipv4"                 //
	labelZone       = "availability-zone"           // placement/availability-zone, else ...
	labelK8sZone    = "topology.kubernetes.io/zone" // ... the Kubernetes zone label
	metaVendorData  = "vendor_data"                 // metadata key: a string served as vendor-data
	maxTagKeyLen    = 128
	maxKeys         = 1000 // SSH keys listed at most
)

// facts are the values derived from one record that several layouts share.
type facts struct {
	instanceID string
	hostname   string
	localIPv4  string
	prefix     netip.Prefix // of localIPv4
	mac        string
	publicIPv4 string
	zone       string
	keys       []string
	tags       [][2]string // labels whose key is a valid EC2 tag name, by key
	userData   []byte      // nil when there is none
	vendorData []byte      // nil when there is none
}

func factsOf(rec record) facts {
	hw := rec.hw
	f := facts{instanceID: hw.ID, hostname: hw.Hostname}
	// The primary interface: the first with an IPv4 address, else the first.
	for _, nic := range hw.Interfaces {
		if p, ok := hostIP(nic.IP); ok && p.Addr().Is4() {
			f.localIPv4, f.prefix, f.mac = p.Addr().String(), p, nic.MAC
			break
		}
	}
	if f.mac == "" && len(hw.Interfaces) > 0 {
		f.mac = hw.Interfaces[0].MAC
	}
	var meta map[string]json.RawMessage
	_ = json.Unmarshal(hw.Metadata, &meta) // not an object: no extra fields
	metaString := func(k string) string {
		var s string
		if raw, ok := meta[k]; ok && json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	for _, cand := range []string{hw.Labels[labelPublicIPv4], metaString(metaPublicIPv4)} {
		if a, err := netip.ParseAddr(strings.TrimSpace(cand)); err == nil && a.Is4() {
			f.publicIPv4 = a.String()
			break
		}
	}
	for _, cand := range []string{hw.Labels[labelZone], hw.Labels[labelK8sZone]} {
		if validLeaf(cand) {
			f.zone = cand
			break
		}
	}
	for k, v := range hw.Labels {
		if validTagKey(k) && validLeaf(v) {
			f.tags = append(f.tags, [2]string{k, v})
		}
	}
	slices.SortFunc(f.tags, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	if vd := metaString(metaVendorData); vd != "" {
		f.vendorData = []byte(vd)
	}
	if m := rec.m; m != nil {
		for _, k := range m.SSHKeys {
			for line := range strings.SplitSeq(k, "\n") {
				if line = strings.TrimSpace(line); line != "" && len(f.keys) < maxKeys {
					f.keys = append(f.keys, line)
				}
			}
		}
		if m.UserData != "" {
			f.userData = []byte(m.UserData)
		}
	}
	return f
}

// validTagKey accepts label keys that can be an EC2 metadata path segment
// and a cloud-init listing line: no "/", no "=", no whitespace, no dot-only
// names. Other labels are still in /metadata.
func validTagKey(k string) bool {
	if k == "" || k == "." || k == ".." || len(k) > maxTagKeyLen {
		return false
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("._-:+@", c):
		default:
			return false
		}
	}
	return true
}

// validLeaf accepts values that fit on one line: cloud-init splits a leaf
// that contains a newline into a list.
func validLeaf(v string) bool { return v != "" && !strings.ContainsAny(v, "\r\n") }

// node is one entry of the meta-data tree: a leaf value or a directory.
type node struct {
	leaf     string
	lines    []string // a directory's listing, as printed
	children map[string]*node
}

func dir() *node { return &node{children: map[string]*node{}} }

func (n *node) add(name string, child *node) {
	line := name
	if child.children != nil {
		line += "/"
	}
	n.lines = append(n.lines, line)
	n.children[name] = child
}

func (n *node) leafIf(name, v string) {
	if v != "" {
		n.add(name, &node{leaf: v})
	}
}

// metaTree builds the meta-data/ tree of f, in the shape of AWS's and of what
// cloud-init's MetadataMaterializer expects (see cloudinit_test.go).
func metaTree(f facts) *node {
	root := dir()
	root.leafIf("hostname", f.hostname)
	root.leafIf("instance-id", f.instanceID)
	root.leafIf("local-hostname", f.hostname)
	root.leafIf("local-ipv4", f.localIPv4)
	root.leafIf("mac", f.mac)
	if f.zone != "" {
		p := dir()
		p.leafIf("availability-zone", f.zone)
		root.add("placement", p)
	}
	root.leafIf("public-ipv4", f.publicIPv4)
	if len(f.keys) > 0 {
		// "N=name" lines; cloud-init turns each into a fetch of
		// public-keys/N/openssh-key.
		pk := dir()
		for i, k := range f.keys {
			idx := strconv.Itoa(i)
			d := dir()
			d.leafIf("openssh-key", k)
			pk.children[idx] = d
			pk.lines = append(pk.lines, idx+"=key-"+idx)
		}
		root.add("public-keys", pk)
	}
	if len(f.tags) > 0 {
		// tags/instance/<key> holds each label whose key is a valid tag name.
		t, inst := dir(), dir()
		for _, kv := range f.tags {
			inst.leafIf(kv[0], kv[1])
		}
		t.add("instance", inst)
		root.add("tags", t)
	}
	return root
}

// resolve walks the tree along path ("", "a", "a/", "a/b", ...). A directory
// answers with or without a trailing slash; a leaf only without.
func (n *node) resolve(path string) (*node, bool) {
	if path == "" {
		return n, true
	}
	trailing := strings.HasSuffix(path, "/")
	path = strings.TrimSuffix(path, "/")
	cur := n
	for seg := range strings.SplitSeq(path, "/") {
		if cur.children == nil || seg == "" {
			return nil, false
		}
		next, ok := cur.children[seg]
		if !ok {
			return nil, false
		}
		cur = next
	}
	if trailing && cur.children == nil {
		return nil, false
	}
	return cur, true
}

// ec2Path splits an EC2 request path into its version and the rest.
func ec2Path(p string) (version, rest string, ok bool) {
	p = strings.TrimPrefix(p, "/")
	version, rest, _ = strings.Cut(p, "/")
	if !slices.Contains(ec2Versions, version) {
		return "", "", false
	}
	return version, rest, true
}

// classify names the metrics class of an EC2 path.
func classify(p string) string {
	_, rest, ok := ec2Path(p)
	switch {
	case !ok:
		return "ec2-other"
	case rest == "user-data":
		return "ec2-user-data"
	case rest == "vendor-data":
		return "ec2-vendor-data"
	case rest == "meta-data" || strings.HasPrefix(rest, "meta-data/"):
		return "ec2-meta-data"
	}
	return "ec2-other"
}

// ec2Answer is what an EC2 path resolves to.
type ec2Answer struct {
	status    int
	body      []byte
	raw       bool // application/octet-stream rather than text
	protected bool // needs a session token unless TokenOptional is set
}

// answerEC2 resolves an EC2 path for one record. It never looks at any
// record but rec, so no path can reach another machine's data.
func answerEC2(rec record, path string) ec2Answer {
	_, rest, ok := ec2Path(path)
	if !ok {
		return ec2Answer{status: http.StatusNotFound}
	}
	f := factsOf(rec)
	switch rest {
	case "":
		lines := []string{"meta-data"}
		if f.userData != nil {
			lines = append(lines, "user-data")
		}
		if f.vendorData != nil {
			lines = append(lines, "vendor-data")
		}
		return ec2Answer{status: http.StatusOK, body: []byte(strings.Join(lines, "\n"))}
	case "user-data":
		if f.userData == nil {
			return ec2Answer{status: http.StatusNotFound, protected: true}
		}
		return ec2Answer{status: http.StatusOK, body: f.userData, raw: true, protected: true}
	case "vendor-data":
		if f.vendorData == nil {
			return ec2Answer{status: http.StatusNotFound, protected: true}
		}
		return ec2Answer{status: http.StatusOK, body: f.vendorData, raw: true, protected: true}
	}
	var sub string
	switch {
	case rest == "meta-data":
	case strings.HasPrefix(rest, "meta-data/"):
		sub = strings.TrimPrefix(rest, "meta-data/")
	default:
		return ec2Answer{status: http.StatusNotFound}
	}
	n, ok := metaTree(f).resolve(sub)
	if !ok {
		return ec2Answer{status: http.StatusNotFound}
	}
	if n.children != nil {
		return ec2Answer{status: http.StatusOK, body: []byte(strings.Join(n.lines, "\n"))}
	}
	return ec2Answer{status: http.StatusOK, body: []byte(n.leaf)}
}

func (s *Server) serveEC2(w http.ResponseWriter, r *http.Request, req *request) {
	a := answerEC2(req.rec, r.URL.Path)
	if a.protected && !s.guard(w, req) {
		return
	}
	switch {
	case a.status != http.StatusOK:
		http.NotFound(w, r)
	case a.raw:
		writeRaw(w, a.body)
	default:
		writeText(w, string(a.body))
	}
}
