package template

// Bounding the work of a render.
//
// Templates come from users and are rendered inside provisiond, so a
// render must end quickly whatever the template says. text/template has no
// step counter and no context: a running Execute cannot be interrupted from
// outside (golang/go#31107 was declined), and an output-size limit misses a
// loop that writes nothing, like {{ range 200000000 }}{{ end }}. Running
// Execute in a goroutine under a deadline would only abandon that goroutine
// to spin on. The ways others take are a vendored copy of text/template
// with a deadline check in its walk loop (ntfy), or a parse-tree whitelist
// that forbids range, print and template calls outright (authgear). We keep
// the standard library and the whole language, and bound it in three ways:
//
//  1. Statically, at Parse (the provider's plan-time check and the
//     daemon's CreateTemplate both call it): a range over an integer
//     literal, or over a variable assigned one, whose iterations (nested
//     ranges multiply) pass MaxRenderSteps is refused, and so is a printf
//     format with a width or precision over MaxFormatWidth. These are the
//     cases that can be seen without the data.
//  2. By instrumenting the parse tree before Execute: every range body and
//     every template body (the main one, define and block) starts with a
//     call of a hidden function that counts one step and checks the
//     render's context. Every function of ours counts a step too. So the
//     render checks its budget at least once per loop iteration and per
//     template call, and stops itself with an error when it has taken
//     MaxRenderSteps steps or its deadline has passed: nothing is left
//     running. Between two checks it runs at most one pass over a list of
//     the template's own nodes.
//  3. By bounding values: every function that builds a string (ours, and
//     print, printf, println, html, js and urlquery, which we replace)
//     refuses to build one longer than MaxRenderedSize, checking before it
//     allocates where the size can grow by more than a constant factor
//     (printf widths, indent, join, print of many arguments). Without this
//     a few doublings ({{ $s = print $s $s }}) exhaust memory within one
//     step. The output itself is bounded by MaxRenderedSize as well.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	texttemplate "text/template"
	"text/template/parse"
	"time"
)

// Limits of a render. A template that passes one fails to render (or,
// when the limit shows without the data, fails Parse) with an error that
// names it.
const (
	// MaxRenderSteps bounds the work of one render: every range
	// iteration, every call of a template and every call of a function
	// counts one step.
	MaxRenderSteps = 100_000
	// RenderTimeout bounds the time one render takes.
	RenderTimeout = 2 * time.Second
	// MaxFormatWidth bounds a width or precision in a printf format.
	MaxFormatWidth = 4096
)

// stepFunc is the hidden function that instrument puts at the start of
// every range and template body. A template may call it too; that only
// spends a step.
const stepFunc = "_step"

var (
	errSteps   = errors.New("step budget spent")
	errTimeout = errors.New("render deadline passed")
)

// budget is the allowance of one render. Functions of a template that is
// only parsed, never executed, carry a nil budget.
type budget struct {
	ctx   context.Context
	steps int
	max   int
	// maxValue bounds every string a function builds (MaxRenderedSize).
	maxValue int
}

func (b *budget) step() error {
	if b == nil {
		return nil
	}
	b.steps++
	if b.steps > b.max {
		return errSteps
	}
	if b.ctx.Err() != nil {
		if cause := context.Cause(b.ctx); errors.Is(cause, errTimeout) {
			return errTimeout
		}
		return fmt.Errorf("render stopped: %w", context.Cause(b.ctx))
	}
	return nil
}

// valueError is a function's refusal to build a string over the limit.
func (b *budget) valueError(n int) error {
	return fmt.Errorf("the value would be %d bytes, more than the limit of %d", n, b.maxValue)
}

// sized is step plus a check that a string of n bytes may be built.
func (b *budget) sized(n int) error {
	if b == nil {
		return nil
	}
	if err := b.step(); err != nil {
		return err
	}
	if n > b.maxValue || n < 0 {
		return b.valueError(n)
	}
	return nil
}

// argsSize estimates what print-like functions make of args: a string
// adds its length, anything else what fmt makes of it (data values, each
// bounded by what the store accepts). It stops counting past the limit.
func argsSize(args []any, limit int) int {
	n := 0
	for _, a := range args {
		switch v := a.(type) {
		case string:
			n += len(v)
		case []string:
			for _, s := range v {
				n += len(s) + 1
			}
		default:
			n += len(fmt.Sprint(v))
		}
		n++ // a separator
		if n > limit {
			return n
		}
	}
	return n
}

// checkFormat refuses a printf format whose widths or precisions make
// outputs much longer than their inputs: a number over MaxFormatWidth, or
// '*' (taken from an argument). It returns the sum of the widths, which
// is what the format may add to its arguments.
func checkFormat(format string) (int, error) {
	extra := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		// Flags, [n] argument indexes, width, '.', precision, up to the verb.
	verb:
		for i++; i < len(format); i++ {
			c := format[i]
			switch {
			case c == '*':
				return 0, fmt.Errorf("printf format %q: a width or precision from an argument ('*') is not allowed", format)
			case c >= '0' && c <= '9':
				j := i
				for j < len(format) && format[j] >= '0' && format[j] <= '9' {
					j++
				}
				// Anything over the limit is refused; count digits first so
				// a huge run cannot overflow.
				n := MaxFormatWidth + 1
				if j-i <= 5 {
					n = 0
					for _, d := range format[i:j] {
						n = n*10 + int(d-'0')
					}
				}
				if n > MaxFormatWidth {
					return 0, fmt.Errorf("printf format %q: width or precision %s is more than the limit of %d", format, format[i:j], MaxFormatWidth)
				}
				extra += n
				i = j - 1
			case c == '[':
				// An argument index: skip to ']' (its digits are no width).
				for i < len(format) && format[i] != ']' {
					i++
				}
			case strings.IndexByte("+-# .", c) >= 0:
			default:
				break verb // the verb, or %%
			}
		}
	}
	return extra, nil
}

// funcs returns the functions of a template rendered under b (nil: the
// template is only parsed). Besides ours they replace text/template's
// print, printf, println, html, js and urlquery with bounded ones.
func (b *budget) funcs() texttemplate.FuncMap {
	// str checks a result that is at most a constant factor of inputs that
	// are themselves bounded.
	str := func(s string) (string, error) {
		if b != nil && len(s) > b.maxValue {
			return "", b.valueError(len(s))
		}
		return s, nil
	}
	indent := func(n int, s string) (string, error) {
		if n < 0 || n > 256 {
			n = 0
		}
		if err := b.sized(len(s) + n*(strings.Count(s, "\n")+1)); err != nil {
			return "", err
		}
		pad := strings.Repeat(" ", n)
		return pad + strings.ReplaceAll(s, "\n", "\n"+pad), nil
	}
	return texttemplate.FuncMap{
		stepFunc: func() (string, error) { return "", b.step() },
		"join": func(sep string, v []string) (string, error) {
			n := len(sep) * len(v)
			for _, s := range v {
				n += len(s)
			}
			if err := b.sized(n); err != nil {
				return "", err
			}
			return strings.Join(v, sep), nil
		},
		// indent prefixes every line with n spaces; nindent adds a newline first
		// (for YAML block scalars: "CONTENTS: |{{ .UserData | nindent 10 }}").
		"indent": indent,
		"nindent": func(n int, s string) (string, error) {
			out, err := indent(n, s)
			if err != nil {
				return "", err
			}
			return str("\n" + out)
		},
		"quote": func(s string) (string, error) {
			if err := b.sized(len(s)); err != nil {
				return "", err
			}
			out, _ := json.Marshal(s) // a JSON string is a valid YAML double-quoted scalar
			return str(string(out))
		},
		"b64enc": func(s string) (string, error) {
			if err := b.sized(base64.StdEncoding.EncodedLen(len(s))); err != nil {
				return "", err
			}
			return base64.StdEncoding.EncodeToString([]byte(s)), nil
		},
		"toJSON": func(v any) (string, error) {
			if err := b.step(); err != nil {
				return "", err
			}
			out, err := json.Marshal(v)
			if err != nil {
				return "", err
			}
			return str(string(out))
		},
		"default": func(def, v any) (any, error) {
			if err := b.step(); err != nil {
				return nil, err
			}
			if v == nil {
				return def, nil
			}
			if s, ok := v.(string); ok && s == "" {
				return def, nil
			}
			return v, nil
		},
		"lower": func(s string) (string, error) {
			if err := b.sized(len(s)); err != nil {
				return "", err
			}
			return str(strings.ToLower(s))
		},
		"upper": func(s string) (string, error) {
			if err := b.sized(len(s)); err != nil {
				return "", err
			}
			return str(strings.ToUpper(s))
		},
		// Tinkerbell's functions: formatPartition, contains, hasPrefix,
		// hasSuffix.
		"formatPartition": func(dev string, n any) (string, error) {
			if err := b.sized(len(dev) + 16); err != nil {
				return "", err
			}
			return FormatPartition(dev, n)
		},
		"contains":  func(s, sub string) (bool, error) { return strings.Contains(s, sub), b.step() },
		"hasPrefix": func(s, p string) (bool, error) { return strings.HasPrefix(s, p), b.step() },
		"hasSuffix": func(s, p string) (bool, error) { return strings.HasSuffix(s, p), b.step() },
		"trim": func(s string) (string, error) {
			if err := b.step(); err != nil {
				return "", err
			}
			return strings.TrimSpace(s), nil
		},
		"print": func(args ...any) (string, error) {
			if err := b.sized(argsSize(args, b.maxValue)); err != nil {
				return "", err
			}
			return str(fmt.Sprint(args...))
		},
		"println": func(args ...any) (string, error) {
			if err := b.sized(argsSize(args, b.maxValue) + 1); err != nil {
				return "", err
			}
			return str(fmt.Sprintln(args...))
		},
		"printf": func(format string, args ...any) (string, error) {
			extra, err := checkFormat(format)
			if err != nil {
				return "", err
			}
			if err := b.sized(len(format) + extra + argsSize(args, b.maxValue)); err != nil {
				return "", err
			}
			return str(fmt.Sprintf(format, args...))
		},
		// The escapers grow their input at most sixfold.
		"html": func(args ...any) (string, error) {
			if err := b.sized(argsSize(args, b.maxValue)); err != nil {
				return "", err
			}
			return str(texttemplate.HTMLEscaper(args...))
		},
		"js": func(args ...any) (string, error) {
			if err := b.sized(argsSize(args, b.maxValue)); err != nil {
				return "", err
			}
			return str(texttemplate.JSEscaper(args...))
		},
		"urlquery": func(args ...any) (string, error) {
			if err := b.sized(argsSize(args, b.maxValue)); err != nil {
				return "", err
			}
			return str(texttemplate.URLQueryEscaper(args...))
		},
	}
}

// parseFuncs are the functions a template is parsed with; they never run.
var parseFuncs = (*budget)(nil).funcs()

// instrument puts a step at the start of every range body and every
// template body of tt, so that a render checks its budget on every
// iteration and every template call (see the top of this file).
func instrument(tt *texttemplate.Template) {
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.RangeNode:
			walk(n.List)
			walk(n.ElseList)
			if n.List == nil {
				n.List = &parse.ListNode{NodeType: parse.NodeList, Pos: n.Pos}
			}
			prependStep(n.List, n.Pos, n.Line)
		case *parse.IfNode:
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.List)
			walk(n.ElseList)
		}
	}
	for _, t := range tt.Templates() {
		if t.Tree == nil || t.Root == nil {
			continue
		}
		walk(t.Root)
		prependStep(t.Root, t.Root.Pos, 1)
	}
}

func prependStep(l *parse.ListNode, pos parse.Pos, line int) {
	id := parse.NewIdentifier(stepFunc).SetPos(pos)
	cmd := &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: []parse.Node{id}}
	pipe := &parse.PipeNode{NodeType: parse.NodePipe, Pos: pos, Line: line, Cmds: []*parse.CommandNode{cmd}}
	act := &parse.ActionNode{NodeType: parse.NodeAction, Pos: pos, Line: line, Pipe: pipe}
	l.Nodes = append([]parse.Node{act}, l.Nodes...)
}

// checkTree refuses, before any data is seen, what is sure to pass the
// render limits: ranges over integer literals (or variables assigned
// them) whose iterations, nested ranges multiplied, are more than
// MaxRenderSteps, and printf formats with a width over MaxFormatWidth.
// Everything else is bounded while rendering.
func checkTree(tt *texttemplate.Template, content string) error {
	c := &treeChecker{content: content, ints: map[string]int64{}}
	for _, t := range tt.Templates() {
		if t.Tree != nil {
			c.collect(t.Root)
		}
	}
	for _, t := range tt.Templates() {
		if t.Tree != nil {
			if err := c.walk(t.Root, 1); err != nil {
				return err
			}
		}
	}
	return c.recursion(tt)
}

// recursion refuses templates that call themselves, directly or through
// others. text/template allows 100000 nested calls, which the step budget
// would stop, but only after growing the stack by hundreds of megabytes;
// workflow templates have no use for recursion.
func (c *treeChecker) recursion(tt *texttemplate.Template) error {
	calls := map[string][]*parse.TemplateNode{}
	var collect func(name string, n parse.Node)
	collect = func(name string, n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, x := range n.Nodes {
				collect(name, x)
			}
		case *parse.TemplateNode:
			calls[name] = append(calls[name], n)
		case *parse.IfNode:
			collect(name, n.List)
			collect(name, n.ElseList)
		case *parse.WithNode:
			collect(name, n.List)
			collect(name, n.ElseList)
		case *parse.RangeNode:
			collect(name, n.List)
			collect(name, n.ElseList)
		}
	}
	var names []string
	for _, t := range tt.Templates() {
		if t.Tree != nil {
			names = append(names, t.Name())
			collect(t.Name(), t.Root)
		}
	}
	sort.Strings(names) // a stable error for a template with several cycles
	const (
		unseen = iota
		open
		done
	)
	state := map[string]int{}
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		state[name] = open
		for _, call := range calls[name] {
			switch state[call.Name] {
			case open:
				return &Error{Line: c.line(call), Field: "template", Msg: fmt.Sprintf("template %q calls itself (%s → %q): recursion is not supported", call.Name, strings.Join(append(path, fmt.Sprintf("%q", name)), " → "), call.Name)}
			case unseen:
				if err := visit(call.Name, append(path, fmt.Sprintf("%q", name))); err != nil {
					return err
				}
			}
		}
		state[name] = done
		return nil
	}
	for _, name := range names {
		if state[name] == unseen {
			if err := visit(name, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

type treeChecker struct {
	content string
	// ints holds, for every variable assigned an integer literal anywhere
	// in the template, the largest such literal. Scopes are ignored: that
	// can only make the check stricter for a template that reuses a name.
	ints map[string]int64
}

func (c *treeChecker) line(n parse.Node) int {
	return 1 + strings.Count(c.content[:min(int(n.Position()), len(c.content))], "\n")
}

// collect records the integer literals that variables are assigned.
func (c *treeChecker) collect(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, x := range n.Nodes {
			c.collect(x)
		}
	case *parse.ActionNode:
		c.collectPipe(n.Pipe)
	case *parse.IfNode:
		c.collectPipe(n.Pipe)
		c.collect(n.List)
		c.collect(n.ElseList)
	case *parse.WithNode:
		c.collectPipe(n.Pipe)
		c.collect(n.List)
		c.collect(n.ElseList)
	case *parse.RangeNode:
		c.collect(n.List)
		c.collect(n.ElseList)
	}
}

func (c *treeChecker) collectPipe(p *parse.PipeNode) {
	if p == nil || len(p.Decl) != 1 {
		return
	}
	if v, ok := c.constInt(p); ok {
		name := p.Decl[0].Ident[0]
		if old, seen := c.ints[name]; !seen || v > old {
			c.ints[name] = v
		}
	}
}

// constInt is the integer a pipeline is sure to yield, if it is a lone
// literal, a lone variable assigned one, or such a thing in parentheses.
// A non-integer number yields -1, which ranges refuse.
func (c *treeChecker) constInt(p *parse.PipeNode) (int64, bool) {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return 0, false
	}
	switch a := p.Cmds[0].Args[0].(type) {
	case *parse.NumberNode:
		if !a.IsInt {
			return -1, true
		}
		return a.Int64, true
	case *parse.VariableNode:
		if len(a.Ident) == 1 {
			v, ok := c.ints[a.Ident[0]]
			return v, ok
		}
	case *parse.PipeNode:
		return c.constInt(a)
	}
	return 0, false
}

// walk checks n, inside ranges that run mult times in all.
func (c *treeChecker) walk(n parse.Node, mult int64) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, x := range n.Nodes {
			if err := c.walk(x, mult); err != nil {
				return err
			}
		}
	case *parse.ActionNode:
		return c.pipe(n.Pipe)
	case *parse.TemplateNode:
		return c.pipe(n.Pipe)
	case *parse.IfNode:
		return c.branch(n.Pipe, n.List, n.ElseList, mult)
	case *parse.WithNode:
		return c.branch(n.Pipe, n.List, n.ElseList, mult)
	case *parse.RangeNode:
		if err := c.pipe(n.Pipe); err != nil {
			return err
		}
		inner := mult
		if v, ok := c.constInt(n.Pipe); ok {
			text := strings.TrimSpace(n.Pipe.Cmds[0].String())
			if v < 0 {
				return &Error{Line: c.line(n), Field: "template", Msg: fmt.Sprintf("range over %s: want a whole number", text)}
			}
			if v > MaxRenderSteps || v*mult > MaxRenderSteps {
				msg := fmt.Sprintf("range over %s: more than the limit of %d iterations", text, MaxRenderSteps)
				if mult > 1 {
					msg = fmt.Sprintf("range over %s inside ranges that run %d times: more than the limit of %d iterations in all", text, mult, MaxRenderSteps)
				}
				return &Error{Line: c.line(n), Field: "template", Msg: msg}
			}
			inner = max(v*mult, mult)
		}
		if err := c.walk(n.List, inner); err != nil {
			return err
		}
		return c.walk(n.ElseList, mult)
	}
	return nil
}

func (c *treeChecker) branch(p *parse.PipeNode, list, elseList *parse.ListNode, mult int64) error {
	if err := c.pipe(p); err != nil {
		return err
	}
	if err := c.walk(list, mult); err != nil {
		return err
	}
	return c.walk(elseList, mult)
}

// pipe checks the printf formats of a pipeline, nested ones included.
func (c *treeChecker) pipe(p *parse.PipeNode) error {
	if p == nil {
		return nil
	}
	for _, cmd := range p.Cmds {
		if len(cmd.Args) >= 2 {
			if id, ok := cmd.Args[0].(*parse.IdentifierNode); ok && id.Ident == "printf" {
				if s, ok := cmd.Args[1].(*parse.StringNode); ok {
					if _, err := checkFormat(s.Text); err != nil {
						return &Error{Line: c.line(cmd), Field: "template", Msg: err.Error()}
					}
				}
			}
		}
		for _, a := range cmd.Args {
			switch a := a.(type) {
			case *parse.PipeNode:
				if err := c.pipe(a); err != nil {
					return err
				}
			case *parse.ChainNode:
				if p, ok := a.Node.(*parse.PipeNode); ok {
					if err := c.pipe(p); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
