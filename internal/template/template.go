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

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
)

// Built-in action images, the names the agent implements (see
// internal/actionspec for what each reads).
const (
	ImageImage2Disk = actionspec.Image2Disk
	ImageWriteFile  = actionspec.WriteFile
	ImageExec       = actionspec.Exec
	ImageCExec      = actionspec.CExec
	ImageWipe       = actionspec.Wipe
	ImageKexec      = actionspec.Kexec
	ImageReboot     = actionspec.Reboot
	ImagePoweroff   = actionspec.Poweroff
)

// BuiltinImages lists every built-in action image, sorted.
var BuiltinImages = actionspec.Names()

// Wipe modes of ImageWipe (and of a deprovision).
const (
	WipeNone    = "none"
	WipeQuick   = "quick"
	WipeZero    = "zero"
	WipeDiscard = "discard"
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

// validator walks the YAML tree, collecting errors (at most maxErrors).
type validator struct {
	errs []error
}

const maxErrors = 20

func (v *validator) fail(n *yaml.Node, field, format string, args ...any) {
	if len(v.errs) >= maxErrors {
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	v.errs = append(v.errs, &Error{Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func deferred(s string) bool { return strings.Contains(s, placeholder) }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// fields returns the key → value pairs of a mapping, refusing unknown and
// duplicate keys.
func (v *validator) fields(n *yaml.Node, field string, known ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		v.fail(n, field, "want a mapping, got %s", kindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := join(field, k.Value)
		if k.Kind != yaml.ScalarNode {
			v.fail(k, field, "keys must be plain strings")
			continue
		}
		if !contains(known, k.Value) {
			v.fail(k, name, "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			v.fail(k, name, "given twice")
			continue
		}
		out[k.Value] = val
	}
	return out
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (v *validator) str(n *yaml.Node, field string) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		v.fail(n, field, "want a string, got %s", kindName(n))
		return ""
	}
	if n.Tag == "!!null" {
		return ""
	}
	return n.Value
}

func (v *validator) strList(n *yaml.Node, field string) []string {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind == yaml.ScalarNode && deferred(n.Value) {
		return nil // a whole list from one action; checked after rendering
	}
	if n.Kind != yaml.SequenceNode {
		v.fail(n, field, "want a list of strings, got %s", kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		if c.Kind != yaml.ScalarNode {
			v.fail(c, f, "want a string, got %s", kindName(c))
			continue
		}
		out = append(out, c.Value)
	}
	return out
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (v *validator) env(n *yaml.Node, field string) map[string]string {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind == yaml.ScalarNode && deferred(n.Value) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		v.fail(n, field, "want a mapping of names to strings, got %s", kindName(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		f := join(field, k.Value)
		if k.Kind != yaml.ScalarNode || (!envNameRE.MatchString(k.Value) && !deferred(k.Value)) {
			v.fail(k, f, "not a valid environment variable name")
			continue
		}
		if _, dup := out[k.Value]; dup {
			v.fail(k, f, "given twice")
			continue
		}
		if val.Kind != yaml.ScalarNode {
			v.fail(val, f, "want a string, got %s", kindName(val))
			continue
		}
		if strings.ContainsRune(val.Value, 0) {
			v.fail(val, f, "contains a NUL byte")
			continue
		}
		out[k.Value] = val.Value
	}
	return out
}

// duration reads seconds (Tinkerbell) or a Go duration (ours).
func (v *validator) duration(n *yaml.Node, field string, required bool) time.Duration {
	if n == nil || n.Tag == "!!null" {
		if required {
			v.fail(n, field, "is required (seconds, or a duration like 30m)")
		}
		return 0
	}
	if n.Kind != yaml.ScalarNode {
		v.fail(n, field, "want a number of seconds, got %s", kindName(n))
		return 0
	}
	if deferred(n.Value) {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
		if secs <= 0 {
			v.fail(n, field, "must be positive, got %d", secs)
			return 0
		}
		if secs > int64(MaxTimeout/time.Second) {
			v.fail(n, field, "%d seconds is more than the limit of %s", secs, MaxTimeout)
			return 0
		}
		d = time.Duration(secs) * time.Second
	} else if pd, err := time.ParseDuration(n.Value); err == nil {
		d = pd
	} else {
		v.fail(n, field, "%q is neither a number of seconds nor a duration like 30m", n.Value)
		return 0
	}
	if d <= 0 {
		v.fail(n, field, "must be positive, got %s", d)
		return 0
	}
	if d > MaxTimeout {
		v.fail(n, field, "%s is more than the limit of %s", d, MaxTimeout)
		return 0
	}
	return d
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._ -]{0,62}$`)

func (v *validator) name(n *yaml.Node, field string) string {
	if n == nil {
		return ""
	}
	s := v.str(n, field)
	if s == "" {
		v.fail(n, field, "must not be empty")
		return ""
	}
	if !deferred(s) && !nameRE.MatchString(s) {
		v.fail(n, field, "%q: use 1-63 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit", s)
	}
	return s
}

func (v *validator) template(root *yaml.Node) *Template {
	t := &Template{}
	f := v.fields(root, "", "version", "name", "global_timeout", "tasks")
	if root.Kind != yaml.MappingNode {
		return t
	}
	if n, ok := f["version"]; !ok {
		v.fail(root, "version", "is required (\"%s\")", Version)
	} else {
		t.Version = v.str(n, "version")
		if t.Version != Version && !deferred(t.Version) {
			v.fail(n, "version", "%q is not supported; use \"%s\"", t.Version, Version)
		}
	}
	if n, ok := f["name"]; !ok {
		v.fail(root, "name", "is required")
	} else {
		t.Name = v.name(n, "name")
	}
	gt, ok := f["global_timeout"]
	if !ok {
		v.fail(root, "global_timeout", "is required (seconds, or a duration like 30m)")
	}
	t.GlobalTimeout = v.duration(gt, "global_timeout", ok)

	tasks, ok := f["tasks"]
	if !ok || tasks.Tag == "!!null" {
		v.fail(root, "tasks", "at least one task is required")
		return t
	}
	if tasks.Kind != yaml.SequenceNode {
		v.fail(tasks, "tasks", "want a list of tasks, got %s", kindName(tasks))
		return t
	}
	if len(tasks.Content) == 0 {
		v.fail(tasks, "tasks", "at least one task is required")
	}
	if len(tasks.Content) > MaxTasks {
		v.fail(tasks, "tasks", "%d tasks, more than the limit of %d", len(tasks.Content), MaxTasks)
		return t
	}
	seen := map[string]int{}
	total := 0
	for i, tn := range tasks.Content {
		field := fmt.Sprintf("tasks[%d]", i)
		task := v.task(tn, field)
		if task.Name != "" && !deferred(task.Name) {
			if prev, dup := seen[task.Name]; dup {
				v.fail(tn, field+".name", "%q is also the name of the task at line %d", task.Name, prev)
			}
			seen[task.Name] = tn.Line
		}
		total += len(task.Actions)
		t.Tasks = append(t.Tasks, task)
	}
	if total > MaxActions {
		v.fail(tasks, "tasks", "%d actions in all, more than the limit of %d", total, MaxActions)
	}
	v.finalLast(t, tasks)
	return t
}

// finalLast refuses an action that ends the workflow (kexec, reboot,
// poweroff) anywhere but last: what would run after it never runs.
func (v *validator) finalLast(t *Template, tasks *yaml.Node) {
	for ti, task := range t.Tasks {
		for ai, a := range task.Actions {
			last := ti == len(t.Tasks)-1 && ai == len(task.Actions)-1
			if last || !actionspec.IsFinal(a.Builtin) {
				continue
			}
			field := fmt.Sprintf("tasks[%d].actions[%d]", ti, ai)
			v.errs = append(v.errs, &Error{Line: a.Line, Field: field + ".image",
				Msg: fmt.Sprintf("the %s action ends the workflow and must be its last action; move it after %s, or remove it", a.Builtin, lastName(t))})
			if len(v.errs) >= maxErrors {
				return
			}
		}
	}
}

func lastName(t *Template) string {
	task := t.Tasks[len(t.Tasks)-1]
	if len(task.Actions) == 0 {
		return "the last action"
	}
	return fmt.Sprintf("%s/%s", task.Name, task.Actions[len(task.Actions)-1].Name)
}

func (v *validator) task(n *yaml.Node, field string) Task {
	task := Task{Line: n.Line}
	f := v.fields(n, field, "name", "worker", "volumes", "environment", "actions")
	if n.Kind != yaml.MappingNode {
		return task
	}
	if nn, ok := f["name"]; ok {
		task.Name = v.name(nn, field+".name")
	} else {
		v.fail(n, field+".name", "is required")
	}
	task.Worker = v.str(f["worker"], field+".worker")
	task.Volumes = v.strList(f["volumes"], field+".volumes")
	task.Environment = v.env(f["environment"], field+".environment")

	an, ok := f["actions"]
	if !ok || an.Tag == "!!null" {
		v.fail(n, field+".actions", "at least one action is required")
		return task
	}
	if an.Kind != yaml.SequenceNode {
		v.fail(an, field+".actions", "want a list of actions, got %s", kindName(an))
		return task
	}
	if len(an.Content) == 0 {
		v.fail(an, field+".actions", "at least one action is required")
	}
	seen := map[string]int{}
	for i, a := range an.Content {
		af := fmt.Sprintf("%s.actions[%d]", field, i)
		act := v.action(a, af, task.Environment)
		if act.Name != "" && !deferred(act.Name) {
			if prev, dup := seen[act.Name]; dup {
				v.fail(a, af+".name", "%q is also the name of the action at line %d in this task", act.Name, prev)
			}
			seen[act.Name] = a.Line
		}
		task.Actions = append(task.Actions, act)
	}
	return task
}

func (v *validator) action(n *yaml.Node, field string, taskEnv map[string]string) Action {
	a := Action{Line: n.Line}
	f := v.fields(n, field, "name", "image", "timeout", "command", "environment", "volumes", "pid", "retries", "on-timeout", "on-failure")
	if n.Kind != yaml.MappingNode {
		return a
	}
	if nn, ok := f["name"]; ok {
		a.Name = v.name(nn, field+".name")
	} else {
		v.fail(n, field+".name", "is required")
	}
	in, ok := f["image"]
	if !ok {
		v.fail(n, field+".image", "is required (one of %s)", strings.Join(BuiltinImages, ", "))
	} else {
		a.Image = v.str(in, field+".image")
		if !deferred(a.Image) {
			b, err := Builtin(a.Image)
			if err != nil {
				v.fail(in, field+".image", "%v", err)
			}
			a.Builtin = b
		}
	}
	tn, ok := f["timeout"]
	if !ok {
		v.fail(n, field+".timeout", "is required (seconds, or a duration like 30m)")
	} else {
		a.Timeout = v.duration(tn, field+".timeout", true)
	}
	a.Command = v.strList(f["command"], field+".command")
	a.Environment = v.env(f["environment"], field+".environment")
	a.Volumes = v.strList(f["volumes"], field+".volumes")
	a.PID = v.str(f["pid"], field+".pid")
	if rn, ok := f["retries"]; ok && !deferred(rn.Value) {
		r, err := strconv.Atoi(rn.Value)
		switch {
		case rn.Kind != yaml.ScalarNode || err != nil:
			v.fail(rn, field+".retries", "want a whole number from 0 to %d", MaxRetries)
		case r < 0 || r > MaxRetries:
			v.fail(rn, field+".retries", "%d is out of range 0 to %d", r, MaxRetries)
		default:
			a.Retries = r
		}
	}
	// Tinkerbell's on-timeout and on-failure hooks are refused with a hint.
	for _, k := range []string{"on-timeout", "on-failure"} {
		if hn, ok := f[k]; ok {
			v.fail(hn, field+"."+k, "is not supported; use retries, or a later action")
		}
	}
	if a.Builtin != "" {
		env := map[string]string{}
		for k, val := range taskEnv {
			env[k] = val
		}
		for k, val := range a.Environment {
			env[k] = val
		}
		v.builtinEnv(n, field, a, env)
	}
	return a
}

var (
	hexRE   = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	octalRE = regexp.MustCompile(`^0?[0-7]{3,4}$`)
)

// builtinEnv checks the environment a built-in needs (actionspec says
// which variables are required). Values that are still template actions
// are checked after rendering.
func (v *validator) builtinEnv(n *yaml.Node, field string, a Action, env map[string]string) {
	spec, _ := actionspec.Get(a.Builtin)
	for _, m := range spec.Missing(env) {
		msg := "is required by the " + a.Builtin + " action"
		if m.Unless != "" {
			msg += " (or " + m.Unless + ")"
		}
		v.fail(n, field+".environment."+m.Name, "%s: %s", msg, m.Desc)
	}
	if spec.NeedsCommand && len(a.Command) == 0 && env["CMD_LINE"] == "" {
		if cn, ok := findKey(n, "command"); !ok || cn.Kind != yaml.ScalarNode || !deferred(cn.Value) {
			v.fail(n, field+".command", "is required by the %s action (or environment CMD_LINE)", a.Builtin)
		}
	}
	check := func(k string, ok func(string) bool, what string) {
		if val, set := env[k]; set && val != "" && !deferred(val) && !ok(val) {
			v.fail(n, field+".environment."+k, "%q: want %s", val, what)
		}
	}
	abs := func(s string) bool { return strings.HasPrefix(s, "/") }
	switch a.Builtin {
	case ImageImage2Disk:
		check("IMG_URL", func(s string) bool {
			return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
		}, "an http:// or https:// URL")
		check("COMPRESSED", func(s string) bool {
			return contains([]string{"true", "false", "gz", "gzip", "xz", "zst", "zstd", "bz2", "bzip2"}, strings.ToLower(s))
		}, "true, false, gz, xz, zst or bz2")
		check("SHA256", hexRE.MatchString, "64 hex digits")
		check("RETRIES", func(s string) bool { r, err := strconv.Atoi(s); return err == nil && r >= 0 }, "a whole number, 0 or more")
	case ImageWriteFile:
		check("DEST_PATH", abs, "an absolute path")
		check("MODE", octalRE.MatchString, "an octal mode like 0644")
		check("DIRMODE", octalRE.MatchString, "an octal mode like 0755")
		num := func(s string) bool { _, err := strconv.ParseUint(s, 10, 31); return err == nil }
		check("UID", num, "a number")
		check("GID", num, "a number")
	case ImageWipe:
		check("WIPE_MODE", func(s string) bool { return contains([]string{WipeQuick, WipeZero, WipeDiscard}, s) }, "quick, zero or discard")
	}
}

func findKey(n *yaml.Node, key string) (*yaml.Node, bool) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1], true
		}
	}
	return nil, false
}

// Builtin maps an image reference to its built-in action: "image2disk"
// stays, and a registry reference like
// quay.io/tinkerbell/actions/image2disk:v1.0.0 maps to "image2disk" (see
// actionspec.Normalize, which the agent uses too).
func Builtin(image string) (string, error) {
	a, err := actionspec.Resolve(image)
	if err != nil {
		return "", err
	}
	return a.Name, nil
}
