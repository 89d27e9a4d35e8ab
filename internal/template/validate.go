package template

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
)

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
