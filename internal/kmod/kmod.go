// Package kmod reads and writes the module index files that depmod(8)
// leaves in lib/modules/VERSION: modules.dep, modules.alias and
// modules.softdep, in kmod's own formats so that busybox modprobe reads
// them too. The agent OS build (internal/osbuild) writes them from each
// module's .modinfo; the agent (agent/initsys) reads them to load drivers
// by modalias.
package kmod

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Index file names under lib/modules/VERSION.
const (
	DepFile     = "modules.dep"
	AliasFile   = "modules.alias"
	SoftdepFile = "modules.softdep"
)

// Name maps a module file or name to the kernel's canonical form:
// "nvme-core.ko" → "nvme_core".
func Name(s string) string {
	s = path.Base(s)
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// Alias is one line of modules.alias: a glob over modalias strings and the
// module that handles devices matching it.
type Alias struct {
	Pattern string
	Module  string // canonical name
}

// DB is what the index files say about the modules of one kernel.
type DB struct {
	// Paths maps a canonical module name to its path relative to
	// lib/modules/VERSION.
	Paths map[string]string
	// Deps maps a canonical module name to the paths of every module it
	// needs, in kmod's order: load them from the last to the first.
	Deps     map[string][]string
	Aliases  []Alias
	Softdeps map[string][]string // module → names (or aliases) to load before it
}

// NewDB returns an empty DB.
func NewDB() *DB {
	return &DB{Paths: map[string]string{}, Deps: map[string][]string{}, Softdeps: map[string][]string{}}
}

// ReadDep parses modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko".
func (db *DB) ReadDep(r io.Reader) error {
	return eachLine(r, func(line string) error {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("%s: no colon in %q", DepFile, line)
		}
		n := Name(mod)
		db.Paths[n] = strings.TrimSpace(mod)
		db.Deps[n] = strings.Fields(deps)
		return nil
	})
}

// ReadAlias parses modules.alias: "alias PATTERN MODULE".
func (db *DB) ReadAlias(r io.Reader) error {
	return eachLine(r, func(line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("%s: bad line %q", AliasFile, line)
		}
		db.Aliases = append(db.Aliases, Alias{Pattern: f[1], Module: Name(f[2])})
		return nil
	})
}

// ReadSoftdep parses modules.softdep: "softdep MODULE pre: A B post: C".
// Only the pre: modules matter to a loader that never unloads.
func (db *DB) ReadSoftdep(r io.Reader) error {
	return eachLine(r, func(line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return fmt.Errorf("%s: bad line %q", SoftdepFile, line)
		}
		n := Name(f[1])
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					db.Softdeps[n] = append(db.Softdeps[n], w)
				}
			}
		}
		return nil
	})
}

func eachLine(r io.Reader, fn func(string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Resolve returns the modules that a name or modalias string stands for: the
// module of that name if there is one, else every module with a matching
// alias, in the order of the alias file, each once.
func (db *DB) Resolve(s string) []string {
	if n := Name(s); db.Paths[n] != "" {
		return []string{n}
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range db.Aliases {
		if !seen[a.Module] && Match(a.Pattern, s) {
			seen[a.Module] = true
			out = append(out, a.Module)
		}
	}
	return out
}

// Match reports whether a modalias string matches an alias pattern, with
// the meaning kmod gives it (fnmatch(3) with no flags): '*' is any run of
// bytes, '/' included, '?' any one byte, "[...]" a set of bytes with ranges
// and '!' or '^' negation, '\' quotes the next byte. path.Match is close but
// stops '*' at '/', and a malformed set is no match rather than an error.
func Match(pattern, s string) bool {
	px, sx := 0, 0
	// Where to resume when a later part fails: after the last '*'.
	starP, starS := -1, 0
	for sx < len(s) || px < len(pattern) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			case '[':
				if sx < len(s) {
					ok, n := matchSet(pattern[px:], s[sx])
					if n > 0 && ok {
						px += n
						sx++
						continue
					}
					// An unterminated '[' is an ordinary byte, as in fnmatch.
					if n == 0 && s[sx] == '[' {
						px++
						sx++
						continue
					}
				}
			case '\\':
				if px+1 < len(pattern) {
					if sx < len(s) && s[sx] == pattern[px+1] {
						px += 2
						sx++
						continue
					}
					break
				}
				fallthrough
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if starP >= 0 && starS < len(s) {
			starS++
			px, sx = starP+1, starS
			continue
		}
		return false
	}
	return true
}

// matchSet matches c against the set at the start of p ("[...]") and
// returns whether it is in the set and the set's length, 0 when p holds no
// complete set.
func matchSet(p string, c byte) (bool, int) {
	i := 1
	neg := false
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		neg = true
		i++
	}
	in := false
	first := true
	for i < len(p) {
		if p[i] == ']' && !first {
			return in != neg, i + 1
		}
		first = false
		lo := p[i]
		if lo == '\\' && i+1 < len(p) {
			i++
			lo = p[i]
		}
		i++
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			hi = p[i+1]
			if hi == '\\' && i+2 < len(p) {
				hi = p[i+2]
				i++
			}
			i += 2
		}
		if lo <= c && c <= hi {
			in = true
		}
	}
	return false, 0
}

// Module is what the index files need to know of one module.
type Module struct {
	Name    string
	Path    string   // relative to lib/modules/VERSION
	Depends []string // canonical names (hard dependencies)
	Aliases []string
	Softpre []string // softdep pre: names or aliases, as in .modinfo
}

// Write writes modules.dep, modules.alias and modules.softdep for mods
// through put (file name, contents). Every dependency must be among mods.
func Write(mods []Module, put func(name string, data []byte) error) error {
	byName := map[string]Module{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	sorted := append([]Module(nil), mods...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var dep, alias, soft strings.Builder
	for _, m := range sorted {
		// kmod's order: the module's dependencies, the ones loaded last
		// first; a loader walks the list backwards.
		var order []string
		seen := map[string]bool{}
		var visit func(string) error
		visit = func(n string) error {
			if seen[n] {
				return nil
			}
			seen[n] = true
			d, ok := byName[n]
			if !ok {
				return fmt.Errorf("module %s needs %s, which is not shipped", m.Name, n)
			}
			deps := append([]string(nil), d.Depends...)
			sort.Strings(deps)
			for _, x := range deps {
				if err := visit(x); err != nil {
					return err
				}
			}
			if n != m.Name {
				order = append(order, d.Path)
			}
			return nil
		}
		if err := visit(m.Name); err != nil {
			return err
		}
		dep.WriteString(m.Path + ":")
		for i := len(order) - 1; i >= 0; i-- {
			dep.WriteString(" " + order[i])
		}
		dep.WriteString("\n")
		for _, a := range m.Aliases {
			fmt.Fprintf(&alias, "alias %s %s\n", a, m.Name)
		}
		if len(m.Softpre) > 0 {
			fmt.Fprintf(&soft, "softdep %s pre: %s\n", m.Name, strings.Join(m.Softpre, " "))
		}
	}
	for _, f := range []struct {
		name string
		b    *strings.Builder
	}{{DepFile, &dep}, {AliasFile, &alias}, {SoftdepFile, &soft}} {
		if err := put(f.name, []byte(f.b.String())); err != nil {
			return err
		}
	}
	return nil
}
