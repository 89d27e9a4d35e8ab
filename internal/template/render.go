package template

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	texttemplate "text/template"
)

// Data is what a template is rendered against. In the template:
//
//	{{ .Hardware.ID }} {{ .Hardware.Hostname }} {{ .Hardware.Arch }} {{ .Hardware.UEFI }}
//	{{ .Hardware.Disks 0 }}            first disk ("/dev/sda"); an index past the end is an error
//	{{ index .Hardware.Disks 0 }}      the same, Tinkerbell style; {{ range .Hardware.Disks }} works too
//	{{ .Hardware.MAC }} {{ .Hardware.IP }}    boot interface's MAC and IPv4 address (no prefix)
//	{{ .Hardware.MACs }} {{ .Hardware.Addresses }} {{ .Hardware.Interfaces }}
//	{{ .Hardware.Metadata.key }}       the hardware's free-form metadata
//	{{ .Params.image_url }}            machine parameters (a missing one is an error)
//	{{ .UserData }} {{ .SSHKeys }}     the machine's user data and SSH keys
//	{{ .PublicURL }} {{ .ImagesURL }} {{ .MetadataURL }}   provisiond's facts
//	{{ .device_1 }}                    Tinkerbell: MAC of the first interface (device_2, ...)
//
// Functions besides text/template's own: join, indent, nindent, quote,
// b64enc, toJSON, default, lower, upper, trim.
type Data struct {
	Hardware    Hardware
	Params      map[string]string
	UserData    string
	SSHKeys     []string
	PublicURL   string
	ImagesURL   string
	MetadataURL string
}

// Hardware is the server as a template sees it.
type Hardware struct {
	ID         string
	Hostname   string
	Arch       string
	UEFI       bool
	Interfaces []Interface
	// DiskPaths are the block devices in order; templates use Disks.
	DiskPaths []string
	Metadata  map[string]any
}

// Interface is one NIC of a server.
type Interface struct {
	MAC string
	// IP is the address without prefix; Prefix the CIDR form ("10.0.0.5/24").
	IP          string
	Prefix      string
	Gateway     string
	NameServers []string
}

// Disks with no argument returns every disk; with an index, that disk, or
// an error naming how many disks there are.
func (h Hardware) Disks(i ...int) (any, error) {
	switch len(i) {
	case 0:
		return h.DiskPaths, nil
	case 1:
		if i[0] < 0 || i[0] >= len(h.DiskPaths) {
			return nil, fmt.Errorf("disk %d of hardware %q does not exist: it has %d disk(s)", i[0], h.ID, len(h.DiskPaths))
		}
		return h.DiskPaths[i[0]], nil
	}
	return nil, errors.New("Disks takes at most one index")
}

// MAC is the boot (first) interface's MAC, or an error if there is none.
func (h Hardware) MAC() (string, error) {
	if len(h.Interfaces) == 0 {
		return "", fmt.Errorf("hardware %q has no interfaces", h.ID)
	}
	return h.Interfaces[0].MAC, nil
}

// IP is the boot interface's address, or an error if it has none.
func (h Hardware) IP() (string, error) {
	if len(h.Interfaces) == 0 || h.Interfaces[0].IP == "" {
		return "", fmt.Errorf("hardware %q has no IP address on its boot interface", h.ID)
	}
	return h.Interfaces[0].IP, nil
}

// MACs lists every interface's MAC.
func (h Hardware) MACs() []string {
	out := make([]string, 0, len(h.Interfaces))
	for _, n := range h.Interfaces {
		out = append(out, n.MAC)
	}
	return out
}

// Addresses lists every interface's address.
func (h Hardware) Addresses() []string {
	var out []string
	for _, n := range h.Interfaces {
		if n.IP != "" {
			out = append(out, n.IP)
		}
	}
	return out
}

// root builds the map a template sees (a map so that Tinkerbell's
// device_N keys, not Go identifiers, resolve).
func (d Data) root() map[string]any {
	params := d.Params
	if params == nil {
		params = map[string]string{}
	}
	md := d.Hardware.Metadata
	if md == nil {
		md = map[string]any{}
	}
	hw := d.Hardware
	hw.Metadata = md
	m := map[string]any{
		"Hardware":    hw,
		"Params":      params,
		"UserData":    d.UserData,
		"SSHKeys":     d.SSHKeys,
		"PublicURL":   d.PublicURL,
		"ImagesURL":   d.ImagesURL,
		"MetadataURL": d.MetadataURL,
	}
	for i, n := range d.Hardware.Interfaces {
		m[fmt.Sprintf("device_%d", i+1)] = n.MAC
	}
	return m
}

// Render executes content against data (missingkey=error), bounds the
// output and parses the result. Rendering errors name the template line.
func Render(content string, data Data) (*Template, error) {
	_, t, err := RenderText(content, data)
	return t, err
}

// RenderText is Render that also returns the rendered YAML.
func RenderText(content string, data Data) (string, *Template, error) {
	if len(content) > MaxTemplateSize {
		return "", nil, &Error{Field: "template", Msg: fmt.Sprintf("is %d bytes, more than the limit of %d", len(content), MaxTemplateSize)}
	}
	tt, err := newTextTemplate().Parse(content)
	if err != nil {
		return "", nil, syntaxError(err)
	}
	if err := checkTree(tt, content); err != nil {
		return "", nil, err
	}
	out := &limitedBuffer{max: MaxRenderedSize}
	if err := tt.Execute(out, data.root()); err != nil {
		if errors.Is(err, errTooBig) {
			return "", nil, &Error{Field: "template", Msg: fmt.Sprintf("renders to more than the limit of %d bytes", MaxRenderedSize)}
		}
		return "", nil, execError(err)
	}
	rendered := out.String()
	t, err := parseYAML(rendered)
	if err != nil {
		return rendered, nil, fmt.Errorf("rendered template: %w", err)
	}
	return rendered, t, nil
}

// execError extracts the line of a text/template execution error.
func execError(err error) error {
	msg := err.Error()
	if m := templateLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1]) // digits, by templateLineRE
		return &Error{Line: line, Field: "template", Msg: m[2]}
	}
	return &Error{Field: "template", Msg: strings.TrimPrefix(msg, "template: ")}
}

var errTooBig = errors.New("output too big")

type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errTooBig
	}
	return b.Buffer.Write(p)
}

func indent(n int, s string) string {
	if n < 0 || n > 256 {
		n = 0
	}
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

var funcs = texttemplate.FuncMap{
	"join": func(sep string, v []string) string { return strings.Join(v, sep) },
	// indent prefixes every line with n spaces; nindent adds a newline first
	// (for YAML block scalars: "CONTENTS: |{{ .UserData | nindent 10 }}").
	"indent":  indent,
	"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
	"quote": func(s string) string {
		b, _ := json.Marshal(s) // a JSON string is a valid YAML double-quoted scalar
		return string(b)
	},
	"b64enc": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"toJSON": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"default": func(def, v any) any {
		if v == nil {
			return def
		}
		if s, ok := v.(string); ok && s == "" {
			return def
		}
		return v
	},
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"trim":  strings.TrimSpace,
}
