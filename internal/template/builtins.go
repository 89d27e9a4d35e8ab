package template

import (
	"regexp"
	"strconv"
	"strings"

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
