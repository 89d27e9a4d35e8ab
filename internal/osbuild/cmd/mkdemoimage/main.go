// Command mkdemoimage builds the demo OS: a raw disk image that boots under
// legacy BIOS (syslinux MBR) and UEFI (systemd-boot at \EFI\BOOT\BOOTX64.EFI),
// with one FAT partition holding the Debian kernel and an initramfs whose
// /init is internal/demoinit, and that prints its hostname and user-data from
// provisiond's metadata service on the serial console. Needs the Debian
// packages dosfstools, mtools, syslinux and systemd-boot-efi.
//
//	mkdemoimage -kernel-deb build/cache/linux-image-*.deb -init build/demoinit -out build/images/demo-os.raw
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/rackform/terraform-provider-baremetal/internal/osbuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkdemoimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkdemoimage", flag.ContinueOnError)
	deb := fs.String("kernel-deb", "", "Debian linux-image-*.deb to take vmlinuz and modules from")
	dir := fs.String("kernel-dir", "", "installed-kernel tree instead of -kernel-deb")
	initPath := fs.String("init", "", "static demoinit binary (CGO_ENABLED=0 go build ./internal/demoinit)")
	out := fs.String("out", "build/images/demo-os.raw", "raw disk image to write")
	appendLine := fs.String("append", "", "extra kernel command line, e.g. bm.http=http://10.99.0.1:8080")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *initPath == "" {
		return errors.New("need -init")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "mkdemoimage")
	k, err := osbuild.AgentOSConfig{KernelDeb: *deb, KernelDir: *dir, Modules: osbuild.DemoModules}.LoadKernel(ctx)
	if err != nil {
		return fmt.Errorf("load kernel: %w", err)
	}
	init, err := os.ReadFile(*initPath)
	if err != nil {
		return err
	}
	return osbuild.BuildDemoImage(ctx, log, osbuild.DemoImageConfig{Kernel: k, Init: init, Append: *appendLine, Out: *out})
}
