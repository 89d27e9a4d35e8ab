// Command mkagentos builds the agent OS: DIR/vmlinuz and DIR/initramfs from a
// Debian linux-image package (or an installed-kernel tree) and the static
// agent binary, which becomes /init.
//
//	mkagentos -kernel-deb build/cache/linux-image-6.1.0-56-amd64_*.deb -init build/agent -out build/agent-os
//	mkagentos -kernel-dir /path/to/kernel-tree -init build/agent -out build/agent-os
//	mkagentos -arch arm64 -kernel-deb build/cache/linux-image-6.1.0-57-arm64_*.deb -init build/agent-arm64 -out build/agent-os/arm64
//
// Same inputs give the same output bytes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/rackform/terraform-provider-baremetal/internal/osbuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkagentos:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkagentos", flag.ContinueOnError)
	deb := fs.String("kernel-deb", "", "Debian linux-image-*.deb to take vmlinuz and modules from")
	dir := fs.String("kernel-dir", "", "installed-kernel tree (boot/vmlinuz-V, lib/modules/V/...) instead of -kernel-deb")
	initPath := fs.String("init", "", "static executable to install as /init (the agent)")
	out := fs.String("out", "build/agent-os", "output directory")
	arch := fs.String("arch", "amd64", "architecture (GOARCH) of the kernel, init and busybox: amd64 or arm64; picks the default -modules and is checked against the ELF files")
	modules := fs.String("modules", "", "comma-separated modules to ship: names, or paths under lib/modules/VERSION ending in / for every module below (dependencies are added); default the architecture's list (osbuild.DefaultModulesFor)")
	extra := fs.String("extra-modules", "", "more comma-separated modules or paths, added to -modules")
	compression := fs.String("compress", "zstd", "initramfs compression: zstd, gzip or none")
	busybox := fs.String("busybox", "", "static busybox binary (Debian busybox-static's bin/busybox) to install with its applet links; empty for no shell")
	firmware := fs.String("firmware-dir", "", "directory copied into the initramfs's lib/firmware (firmware blobs, laid out as in linux-firmware)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*deb == "") == (*dir == "") || *initPath == "" {
		return errors.New("need -init and exactly one of -kernel-deb or -kernel-dir")
	}
	if *modules == "" {
		def, err := osbuild.DefaultModulesFor(*arch)
		if err != nil {
			return err
		}
		*modules = strings.Join(def, ",")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "mkagentos", "arch", *arch)
	return osbuild.BuildAgentOS(ctx, log, osbuild.AgentOSConfig{
		KernelDeb:   *deb,
		KernelDir:   *dir,
		InitPath:    *initPath,
		OutDir:      *out,
		Modules:     splitList(*modules, *extra),
		Compression: osbuild.Compression(*compression),
		BusyboxPath: *busybox,
		FirmwareDir: *firmware,
		Arch:        *arch,
	})
}

func splitList(lists ...string) []string {
	var out []string
	for _, l := range lists {
		for _, s := range strings.Split(l, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
