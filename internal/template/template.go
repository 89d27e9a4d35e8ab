// Package template parses, validates and renders workflow templates.
//
// The format is Tinkerbell's template YAML:
//
//	version: "0.1"
//	name: ubuntu
//	global_timeout: 1800          # seconds
//	tasks:
//	  - name: os-installation
//	    worker: "{{.device_1}}"   # accepted, informative only
//	    volumes: [...]            # accepted, passed to every action
//	    environment: {K: V}       # merged under every action's environment
//	    actions:
//	      - name: stream-image
//	        image: quay.io/tinkerbell/actions/image2disk:v1.0.0
//	        timeout: 600          # seconds
//	        command: [...]
//	        environment: {IMG_URL: ..., DEST_DISK: ...}
//	        volumes: [...]
//	        pid: host
//
// Additions of ours, all optional:
//
//   - retries (per action): how many times a failed or timed-out action is
//     run again before the workflow fails; 0 to 10, default 0.
//   - global_timeout and timeout also accept Go durations ("30m", "1h30m").
//
// Images name one of the built-in actions of the agent (ImageImage2Disk,
// ...; internal/actionspec is the list, with the environment each needs).
// A Tinkerbell hub reference such as
// quay.io/tinkerbell/actions/image2disk:v1.0.0 maps to the built-in of the
// same name (the last path element without tag or digest); an image that
// maps to no built-in is refused, since the agent runs no containers.
// kexec, reboot and poweroff end the workflow and must be its last action.
//
// Templates are Go text/template documents rendered with missingkey=error
// against Data (see Render). Parse accepts both the raw template (the
// provider validates it at plan time) and its rendered form: values that
// still hold a template action are checked for shape only and fully checked
// after rendering.
//
// This package must not import provisiond packages: the provider links it.
package template

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits.
const (
	// MaxTemplateSize bounds the template as written.
	MaxTemplateSize = 256 << 10
	// MaxRenderedSize bounds the template after rendering.
	MaxRenderedSize = 1 << 20
	// MaxTasks and MaxActions bound a template's size in steps.
	MaxTasks   = 64
	MaxActions = 256
	// MaxRetries bounds an action's retries.
	MaxRetries = 10
	// MaxTimeout bounds global_timeout and every action timeout.
	MaxTimeout = 7 * 24 * time.Hour
)

// Version is the only template version understood (Tinkerbell's).
const Version = "0.1"

// Template is a parsed template.
type Template struct {
	// Dynamic is set when Parse could not check the YAML of a raw
	// template because control actions ({{ if }}, {{ range }}) shape it;
	// Render checks it in full.
	Dynamic       bool
	Version       string
	Name          string
	GlobalTimeout time.Duration
	Tasks         []Task
}

// Task is a group of actions run in order on one worker.
type Task struct {
	Name        string
	Worker      string
	Volumes     []string
	Environment map[string]string
	Actions     []Action
	Line        int
}

// Action is one step of a task.
type Action struct {
	Name string
	// Image is the image as written; Builtin the built-in it maps to.
	Image       string
	Builtin     string
	Timeout     time.Duration
	Command     []string
	Environment map[string]string
	Volumes     []string
	PID         string
	Retries     int
	Line        int
}

// TaskSummary names a task and its actions, for APIs.
type TaskSummary struct {
	Name    string
	Actions []string
}

// Summary returns the task and action names in order.
func (t *Template) Summary() []TaskSummary {
	out := make([]TaskSummary, 0, len(t.Tasks))
	for _, task := range t.Tasks {
		s := TaskSummary{Name: task.Name}
		for _, a := range task.Actions {
			s.Actions = append(s.Actions, a.Name)
		}
		out = append(out, s)
	}
	return out
}

// Step is an action flattened out of its task: the task's environment is
// merged under the action's, and the task's volumes come first.
type Step struct {
	Task string
	Action
}

// Steps returns every action in the order the agent runs them.
func (t *Template) Steps() []Step {
	var out []Step
	for _, task := range t.Tasks {
		for _, a := range task.Actions {
			env := make(map[string]string, len(task.Environment)+len(a.Environment))
			for k, v := range task.Environment {
				env[k] = v
			}
			for k, v := range a.Environment {
				env[k] = v
			}
			a.Environment = env
			a.Volumes = append(append([]string(nil), task.Volumes...), a.Volumes...)
			a.Command = append([]string(nil), a.Command...)
			out = append(out, Step{Task: task.Name, Action: a})
		}
	}
	return out
}

// Error is a validation error at a line of the template.
type Error struct {
	// Line is 1-based; 0 when the error concerns the whole document.
	Line int
	// Field is the path of the field, like "tasks[0].actions[1].timeout".
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// placeholder stands for a template action while the raw template's YAML
// is checked.
const placeholder = "__tpl__"

// actionRE matches one text/template action, including across lines.
var actionRE = regexp.MustCompile(`(?s)\{\{.*?\}\}`)

// Parse checks the text/template syntax of content and validates its YAML.
// Values that hold template actions are checked after Render.
func Parse(content string) (*Template, error) {
	if len(content) > MaxTemplateSize {
		return nil, &Error{Field: "template", Msg: fmt.Sprintf("is %d bytes, more than the limit of %d", len(content), MaxTemplateSize)}
	}
	tt, err := newTextTemplate(nil).Parse(content)
	if err != nil {
		return nil, syntaxError(err)
	}
	if err := checkTree(tt, content); err != nil {
		return nil, err
	}
	masked := content
	if strings.Contains(content, "{{") {
		masked = actionRE.ReplaceAllStringFunc(content, func(s string) string {
			// Keep the line count so lines in errors stay true.
			return placeholder + strings.Repeat("\n", strings.Count(s, "\n"))
		})
	}
	t, err := parseYAML(masked)
	var yerr *Error
	if err != nil && masked != content && errors.As(err, &yerr) && yerr.Field == "yaml" {
		if controlRE.MatchString(content) {
			return &Template{Dynamic: true}, nil
		}
		yerr.Msg += " (checked with every {{ ... }} replaced by a word: a value that renders to several lines needs a quoted form, like CONTENTS: {{ quote .UserData }})"
	}
	return t, err
}

// controlRE finds actions that can change the shape of the YAML.
var controlRE = regexp.MustCompile(`\{\{-?\s*(if|range|with|define|block|template)\b`)

// newTextTemplate returns an empty template with the functions of b (nil:
// for parsing only).
func newTextTemplate(b *budget) *texttemplate.Template {
	fm := parseFuncs
	if b != nil {
		fm = b.funcs()
	}
	return texttemplate.New("template").Option("missingkey=error").Funcs(fm)
}

var templateLineRE = regexp.MustCompile(`^template: template:(\d+)(?::\d+)?: (.*)$`)

// syntaxError turns a text/template error into an Error with its line.
func syntaxError(err error) error {
	msg := err.Error()
	if m := templateLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Field: "template", Msg: m[2]}
	}
	return &Error{Field: "template", Msg: strings.TrimPrefix(msg, "template: ")}
}

// parseYAML validates one YAML document.
func parseYAML(content string) (*Template, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(content), &doc); err != nil {
		return nil, yamlError(err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &Error{Field: "template", Msg: "is empty"}
	}
	v := &validator{}
	t := v.template(doc.Content[0])
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return t, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlError(err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Field: "yaml", Msg: m[2]}
	}
	return &Error{Field: "yaml", Msg: strings.TrimPrefix(msg, "yaml: ")}
}
