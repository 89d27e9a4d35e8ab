package template

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
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
//	{{ formatPartition (index .Hardware.Disks 0) 2 }}   partition 2 of the first disk:
//	                                   /dev/sda2, /dev/nvme0n1p2 (Tinkerbell's function; see FormatPartition)
//
// Functions besides text/template's own: join, indent, nindent, quote,
// b64enc, toJSON, default, lower, upper, trim, and Tinkerbell's
// formatPartition, contains, hasPrefix and hasSuffix. print, printf, println,
// html, js and urlquery are replaced by versions that refuse to build a
// string over MaxRenderedSize; printf widths are at most MaxFormatWidth.
// A render is bounded in steps and time too (see limits.go), and a
// template may not call itself.
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

// Render is RenderContext without a caller's context.
func Render(content string, data Data) (*Template, error) {
	return RenderContext(context.Background(), content, data)
}

// RenderContext executes content against data (missingkey=error) within
// the render limits (MaxRenderSteps, RenderTimeout or ctx's deadline if
// that comes first, MaxRenderedSize; see limits.go) and parses the
// result. Rendering errors name the template line, or the limit passed.
// It returns as soon as a limit is passed: the render runs in the caller's
// goroutine and stops itself, so nothing is left running.
func RenderContext(ctx context.Context, content string, data Data) (*Template, error) {
	_, t, err := RenderTextContext(ctx, content, data)
	return t, err
}

// RenderText is Render that also returns the rendered YAML.
func RenderText(content string, data Data) (string, *Template, error) {
	return RenderTextContext(context.Background(), content, data)
}

// RenderTextContext is RenderContext that also returns the rendered YAML.
func RenderTextContext(ctx context.Context, content string, data Data) (string, *Template, error) {
	return renderText(ctx, content, data, defaultLimits)
}

// renderLimits are the limits of one render. Tests and the fuzz target
// lower them to reach them quickly; the daemon and the provider use
// defaultLimits.
type renderLimits struct {
	steps   int
	timeout time.Duration
	// output bounds the rendered text, value every string a function builds.
	output, value int
}

var defaultLimits = renderLimits{steps: MaxRenderSteps, timeout: RenderTimeout, output: MaxRenderedSize, value: MaxRenderedSize}

func renderText(ctx context.Context, content string, data Data, lim renderLimits) (string, *Template, error) {
	if len(content) > MaxTemplateSize {
		return "", nil, &Error{Field: "template", Msg: fmt.Sprintf("is %d bytes, more than the limit of %d", len(content), MaxTemplateSize)}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, lim.timeout, errTimeout)
	defer cancel()
	b := &budget{ctx: ctx, max: lim.steps, maxValue: lim.value}
	tt, err := newTextTemplate(b).Parse(content)
	if err != nil {
		return "", nil, syntaxError(err)
	}
	if err := checkTree(tt, content); err != nil {
		return "", nil, err
	}
	instrument(tt)
	out := &limitedBuffer{max: lim.output}
	if err := tt.Execute(out, data.root()); err != nil {
		return "", nil, limitError(err, lim)
	}
	rendered := out.String()
	t, err := parseYAML(rendered)
	if err != nil {
		return rendered, nil, fmt.Errorf("rendered template: %w", err)
	}
	return rendered, t, nil
}

// limitError turns an execution error into an Error, naming the limit
// that stopped the render if one did.
func limitError(err error, lim renderLimits) error {
	if errors.Is(err, errTooBig) {
		return &Error{Field: "template", Msg: fmt.Sprintf("renders to more than the limit of %d bytes", lim.output)}
	}
	te := &Error{Field: "template"}
	if !errors.As(execError(err), &te) {
		return execError(err)
	}
	switch {
	case errors.Is(err, errSteps):
		te.Msg = fmt.Sprintf("rendering takes more than the limit of %d steps (range iterations, template calls and function calls)", lim.steps)
	case errors.Is(err, errTimeout):
		te.Msg = fmt.Sprintf("rendering takes longer than the limit of %s", lim.timeout)
	}
	return te
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
