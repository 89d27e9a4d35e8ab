// Package actionspec is the contract between workflow templates and the
// agent: the names of the built-in actions, how an image reference maps to
// one, the environment each reads, and which end a workflow.
//
// The template parser (internal/template) validates templates against it
// at plan time, the agent (agent/actions) registers one function per name,
// provisiond's engine asks it which actions end a workflow, and Markdown
// renders the table of hub actions for the documentation. Nothing here
// does I/O.
//
// This package must not import provisiond or agent packages: the provider
// links it.
package actionspec

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Names of the built-in actions.
const (
	Image2Disk = "image2disk"
	WriteFile  = "writefile"
	Exec       = "exec"
	CExec      = "cexec"
	Wipe       = "wipe"
	Kexec      = "kexec"
	Reboot     = "reboot"
	Poweroff   = "poweroff"
)

// Var is one environment variable an action reads.
type Var struct {
	Name string
	// Required: the action cannot run without it. Unless, when set, names
	// a variable that may stand in for this one.
	Required bool
	Unless   string
	// Default is the value used when it is unset or empty ("" for none).
	Default string
	// Desc is one line on what it does here.
	Desc string
}

// Action is one built-in action.
type Action struct {
	Name string
	// Summary is one line on what it does here.
	Summary string
	// Hub: Tinkerbell's action hub has an action of this name whose
	// environment this one accepts.
	Hub bool
	// Env lists the variables it reads, required ones first.
	Env []Var
	// NeedsCommand: the action runs its command field.
	NeedsCommand bool
	// Final: the action ends the workflow and must be its last action.
	Final bool
	// WritesDisk: the action writes, or may write, the server's disks (an
	// image, a file, a command that can do anything). Once one has
	// started, the disks may hold what the install put there, and a
	// deprovision must wipe them; an install that never started one left
	// them as they were.
	WritesDisk bool
	// Notes is what differs from the hub action, for the documentation.
	Notes string
}

// Var returns the action's variable named name.
func (a Action) Var(name string) (Var, bool) {
	for _, v := range a.Env {
		if v.Name == name {
			return v, true
		}
	}
	return Var{}, false
}

// Missing returns the required variables that env leaves unset or empty,
// in the order of a.Env.
func (a Action) Missing(env map[string]string) []Var {
	var out []Var
	for _, v := range a.Env {
		if v.Required && env[v.Name] == "" && (v.Unless == "" || env[v.Unless] == "") {
			out = append(out, v)
		}
	}
	return out
}

var builtins = []Action{
	{
		Name: Image2Disk, Hub: true, WritesDisk: true,
		Summary: "stream a raw disk image over HTTP(S) to a block device, decompressing and verifying it in one pass",
		Env: []Var{
			{Name: "IMG_URL", Required: true, Desc: "http:// or https:// URL of the image"},
			{Name: "DEST_DISK", Required: true, Desc: "block device (or file) to write, e.g. /dev/sda"},
			{Name: "COMPRESSED", Default: "false", Desc: "false, true (detect gzip, xz, zstd or bzip2 by magic), or gz, xz, zst, bz2"},
			{Name: "SHA256", Desc: "hex SHA-256 of the bytes served at IMG_URL (the compressed file when compressed); on a mismatch the action fails and the start and end of the disk are zeroed"},
			{Name: "RETRIES", Default: "3", Desc: "resumptions (HTTP Range) of a broken download"},
		},
		Notes: "SHA256 is ours: the hub action verifies nothing. Its progress settings are not needed: progress goes to the action's log every 5 seconds.",
	},
	{
		Name: WriteFile, Hub: true, WritesDisk: true,
		Summary: "write one file into a filesystem on a partition (mounted, written to a temporary name, synced, renamed)",
		Env: []Var{
			{Name: "DEST_DISK", Required: true, Desc: "the partition holding the filesystem, e.g. {{ formatPartition (index .Hardware.Disks 0) 1 }}"},
			{Name: "DEST_PATH", Required: true, Desc: "absolute path of the file inside that filesystem"},
			{Name: "FS_TYPE", Desc: "its filesystem (ext4, xfs, btrfs, vfat, ...); when empty ext4, xfs, btrfs and vfat are tried in turn"},
			{Name: "CONTENTS", Desc: "the file's contents (empty: an empty file)"},
			{Name: "UID", Default: "0", Desc: "owner of the file and of the directories created"},
			{Name: "GID", Default: "0", Desc: "group of the file and of the directories created"},
			{Name: "MODE", Default: "0644", Desc: "octal mode of the file"},
			{Name: "DIRMODE", Default: "0755", Desc: "octal mode of the directories created"},
		},
		Notes: "Paths resolve inside the mounted filesystem: a symlink on the target cannot redirect the write.",
	},
	{
		Name: CExec, Hub: true, WritesDisk: true,
		Summary: "run a command chrooted into a partition of the installed disk (/dev, /proc and /sys bind-mounted)",
		Env: []Var{
			{Name: "BLOCK_DEVICE", Required: true, Desc: "the partition to chroot into, e.g. the root partition"},
			{Name: "CMD_LINE", Required: true, Desc: "the command, run through DEFAULT_INTERPRETER (the action's command field is used instead when set)"},
			{Name: "FS_TYPE", Desc: "its filesystem; when empty ext4, xfs, btrfs and vfat are tried in turn"},
			{Name: "CHROOT", Desc: "y (or any value but false, 0, n, no) to chroot; without it the command runs in the agent OS"},
			{Name: "DEFAULT_INTERPRETER", Default: "/bin/sh -c", Desc: "the interpreter CMD_LINE is appended to, split on spaces"},
		},
		Notes: "As in the hub action, CHROOT: y is what chroots. The command runs in its own process group, killed as a whole at the action's timeout.",
	},
	{
		Name: Exec, WritesDisk: true,
		Summary: "run the action's command in the agent OS",
		Env: []Var{
			{Name: "CMD_LINE", Desc: "used when the action has no command: run through DEFAULT_INTERPRETER"},
			{Name: "DEFAULT_INTERPRETER", Default: "/bin/sh -c", Desc: "the interpreter CMD_LINE is appended to"},
		},
		NeedsCommand: true,
		Notes:        "Ours: the agent runs no containers, so this stands in for a hub action that is a plain command.",
	},
	{
		Name: Wipe, WritesDisk: true,
		Summary: "wipe disks: partition tables and signatures (quick), every byte (zero) or a discard of the whole device",
		Env: []Var{
			{Name: "DEST_DISKS", Required: true, Unless: "DEST_DISK", Desc: "comma-separated disks to wipe"},
			{Name: "DEST_DISK", Desc: "one disk, when DEST_DISKS is not given"},
			{Name: "WIPE_MODE", Default: "quick", Desc: "quick, zero or discard"},
		},
		Notes: "Ours; the deprovision workflow uses it.",
	},
	{
		Name: Kexec, Hub: true, Final: true,
		Summary: "boot the installed kernel straight from the agent OS, without a firmware POST; provisiond still switches netboot off and the boot device to disk, and does not reset the machine",
		Env: []Var{
			{Name: "BLOCK_DEVICE", Required: true, Desc: "the partition holding the kernel and initrd (the root partition, or /boot)"},
			{Name: "KERNEL_PATH", Required: true, Desc: "path of the kernel inside that partition, e.g. /boot/vmlinuz"},
			{Name: "CMD_LINE", Required: true, Desc: "the installed kernel's command line, e.g. root=UUID=... ro console=ttyS0,115200"},
			{Name: "FS_TYPE", Desc: "its filesystem; when empty ext4, xfs, btrfs and vfat are tried in turn"},
			{Name: "INITRD_PATH", Desc: "path of the initrd inside that partition, e.g. /boot/initrd.img"},
		},
		Notes: "The kernel is loaded (kexec_file_load) before the action reports success, so a kernel that cannot be loaded fails the workflow; the agent boots it only once provisiond has acknowledged the report. CMD_LINE is required: GRUBCFG_PATH (reading the command line from grub.cfg) is not supported. pid: host is accepted and not needed.",
	},
	{
		Name: Reboot, Hub: true, Final: true,
		Summary: "end the workflow with a reboot into the installed OS: with a BMC provisiond resets the machine (after boot device disk); without one (driver manual) the agent reboots once provisiond has recorded the action's success",
		Notes:   "The hub action reboots from inside the worker and races its own status report; here the report always comes first. With a BMC the action itself does nothing: it is what provisiond does after the last action anyway.",
	},
	{
		Name: Poweroff, Hub: true, Final: true,
		Summary: "end the workflow powered off: with a BMC provisiond powers the machine off (after boot device disk); without one the agent powers it off once provisiond has recorded the action's success",
		Notes:   "The next power-on boots the installed disk.",
	},
}

// Unsupported are hub actions the agent does not implement, with what to
// do instead.
var Unsupported = map[string]string{
	"archive2disk": "build a raw image and use image2disk, or unpack the archive with exec commands if the agent OS has the tools",
	"oci2disk":     "export the image to a raw file served over HTTP and use image2disk",
	"qemuimg2disk": "convert the image to raw (qemu-img convert -O raw) and use image2disk",
	"grub2disk":    "run grub-install with cexec (CHROOT: y)",
	"syslinux":     "run the installer with cexec (CHROOT: y)",
	"rootio":       "partition and format with exec or cexec commands (sgdisk, mkfs)",
	"slurp":        "copy a disk off with exec commands (dd to an upload) if the agent OS has the tools",
}

var byName = func() map[string]Action {
	m := make(map[string]Action, len(builtins))
	for _, a := range builtins {
		m[a.Name] = a
	}
	return m
}()

// All returns every built-in action, in the order of the documentation.
func All() []Action {
	out := make([]Action, len(builtins))
	copy(out, builtins)
	return out
}

// Names returns the built-in action names, sorted.
func Names() []string {
	out := make([]string, 0, len(builtins))
	for _, a := range builtins {
		out = append(out, a.Name)
	}
	sort.Strings(out)
	return out
}

// Get returns the built-in action called name (already normalised).
func Get(name string) (Action, bool) {
	a, ok := byName[name]
	return a, ok
}

// IsFinal reports whether the built-in called name ends a workflow.
func IsFinal(name string) bool { return byName[name].Final }

// WritesDisk reports whether the action named name (Normalize'd) may
// write the server's disks. A name that is no built-in counts as writing:
// what it would do is unknown.
func WritesDisk(name string) bool {
	a, ok := byName[Normalize(name)]
	return !ok || a.WritesDisk
}

// Normalize reduces an image reference to the name of the action it asks
// for: surrounding space and a digest (@sha256:...) are dropped, then
// everything up to the last "/" (registry, port, repository path), then a
// tag (":v1.0.0"), and the rest is lower-cased. So
// quay.io/tinkerbell/actions/image2disk:v1.0.0,
// ghcr.io/tinkerbell/actions/image2disk@sha256:..., and image2disk all
// give "image2disk". Whether a built-in has that name is Resolve's job.
func Normalize(image string) string {
	s := strings.TrimSpace(image)
	if i := strings.Index(s, "@"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.Index(s, ":"); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}

// Resolve maps an image reference to its built-in action, or explains why
// there is none.
func Resolve(image string) (Action, error) {
	name := Normalize(image)
	if name == "" {
		if strings.TrimSpace(image) == "" {
			return Action{}, errors.New("must not be empty")
		}
		return Action{}, fmt.Errorf("%q names no action", image)
	}
	if a, ok := byName[name]; ok {
		return a, nil
	}
	if hint, ok := Unsupported[name]; ok {
		return Action{}, fmt.Errorf("%q: the hub action %s is not supported here (%s); built-in actions: %s", image, name, hint, strings.Join(Names(), ", "))
	}
	return Action{}, fmt.Errorf("%q maps to no built-in action (known: %s); container images are not supported", image, strings.Join(Names(), ", "))
}
