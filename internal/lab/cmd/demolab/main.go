// Command demolab runs the lab of `make demo`: a rack of QEMU servers behind
// ipmi_sim BMCs and provisiond, in a network namespace of its own, kept up
// in the background until `make demo-clean`.
//
//	demolab up -dir build/demo [-servers 3] ...   start the lab, return when it serves
//	demolab status -dir build/demo                 table of the machines
//	demolab down -dir build/demo                   stop everything, delete the namespace
//
// `up` starts `demolab serve` in a session of its own (it outlives make),
// which builds the rack, writes DIR/terraform (terraform run inside the
// namespace, installing the provider from DIR/plugins) and waits for
// SIGTERM to tear it all down.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/lab"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demolab up|serve|status|down -dir DIR [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up", "serve":
		err = upOrServe(os.Args[1], os.Args[2:])
	case "status":
		err = status(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want up, serve, status or down", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demolab:", err)
		os.Exit(1)
	}
}

type options struct {
	dir, provisiond, provider, terraform, agentOS, images, tfvars string
	servers                                                       int
}

func parse(cmd string, args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("demolab "+cmd, flag.ContinueOnError)
	fs.StringVar(&o.dir, "dir", "build/demo", "the lab's directory")
	fs.IntVar(&o.servers, "servers", 3, "number of servers (even ones boot UEFI when OVMF is installed)")
	fs.StringVar(&o.provisiond, "provisiond", "build/provisiond", "provisiond binary")
	fs.StringVar(&o.provider, "provider", "build/terraform-provider-baremetal", "provider binary")
	fs.StringVar(&o.terraform, "terraform", "bin/terraform", "terraform binary")
	fs.StringVar(&o.agentOS, "agent-os", "build/agent-os", "agent OS directory (make agent-os)")
	fs.StringVar(&o.images, "images", "build/images", "images directory (make demo-image)")
	fs.StringVar(&o.tfvars, "tfvars", "examples/demo/lab.auto.tfvars.json", "where to write the lab's servers for terraform")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, p := range []*string{&o.tfvars, &o.dir, &o.provisiond, &o.provider, &o.terraform, &o.agentOS, &o.images} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return o, err
		}
		*p = abs
	}
	return o, nil
}

func upOrServe(cmd string, args []string) error {
	o, err := parse(cmd, args)
	if err != nil {
		return err
	}
	if cmd == "serve" {
		return serve(o)
	}
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, tap devices): run `sudo make demo`")
	}
	if pid, ok := running(o.dir); ok {
		return fmt.Errorf("a lab is already up (pid %d): `make demo-clean` stops it", pid)
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(o.dir, "ready"))
	logf, err := os.Create(filepath.Join(o.dir, "lab.log"))
	if err != nil {
		return err
	}
	// The lab writes through its own descriptor and outlives this process:
	// closing ours loses nothing.
	defer func() { _ = logf.Close() }()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	c := exec.Command(self, append([]string{"serve"}, args...)...)
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives make and the terminal
	if err := c.Start(); err != nil {
		return fmt.Errorf("start the lab: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.After(2 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(o.dir, "ready")); err == nil {
			b, _ := os.ReadFile(filepath.Join(o.dir, "ready"))
			fmt.Print(string(b))
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the lab did not start (%v):\n%s", err, lab.ReadLog(logf.Name()))
		case <-deadline:
			return fmt.Errorf("the lab did not start within 2 minutes; see %s", logf.Name())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func serve(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	_, uefiErr := os.Stat(lab.OVMFCode)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	rack, err := lab.StartRack(sctx, lab.RackConfig{
		Dir: o.dir, NSPrefix: "demo", Servers: o.servers, UEFI: uefiErr == nil, DiskMiB: 256,
		Provisiond: o.provisiond, AgentOSDir: o.agentOS, ImagesDir: o.images,
	})
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if err := rack.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demolab: teardown:", err)
		}
		// Some were never written if the lab failed half way; any other
		// failure leaves a stale file that a person should hear about.
		for _, p := range []string{filepath.Join(o.dir, "pid"), filepath.Join(o.dir, "ready"), filepath.Join(o.dir, "netns"), o.tfvars} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintln(os.Stderr, "demolab: teardown:", err)
			}
		}
		fmt.Println("lab down")
	}()
	rc, err := lab.InstallProvider(o.provider, o.dir, "0.0.1")
	if err != nil {
		return err
	}
	wrapper := fmt.Sprintf(`#!/bin/sh
# Written by demolab: terraform inside the demo lab's network namespace, with
# the provider built from this tree. Stops working after make demo-clean.
export TF_CLI_CONFIG_FILE=%s CHECKPOINT_DISABLE=1
exec ip netns exec %s %s "$@"
`, rc, rack.NS.Name, o.terraform)
	if err := os.WriteFile(filepath.Join(o.dir, "terraform"), []byte(wrapper), 0o755); err != nil {
		return err
	}
	// The lab's servers and secrets for examples/demo, loaded by terraform
	// without any flag, so `terraform destroy` works as typed.
	vars, err := json.MarshalIndent(map[string]any{"servers": rack.TerraformServers(), "secrets_dir": filepath.Join(o.dir, "secrets")}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.tfvars, vars, 0o644); err != nil {
		return err
	}
	for name, v := range map[string]string{"pid": strconv.Itoa(os.Getpid()), "netns": rack.NS.Name} {
		if err := os.WriteFile(filepath.Join(o.dir, name), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "lab up: namespace %s, provisiond at %s (log %s)\n", rack.NS.Name, lab.RackGRPC, rack.Daemon.Log)
	for _, s := range rack.Servers {
		fmt.Fprintf(&b, "  %-8s %-5s mac %s  address %-15s  BMC 127.0.0.1:%d  console %s\n", s.Name, firmware(s), s.MAC, s.Address, s.BMC.Port, s.BMC.VM.SerialPath())
	}
	if err := os.WriteFile(filepath.Join(o.dir, "ready"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	<-ctx.Done()
	return nil
}

func firmware(s *lab.Server) string {
	if s.BMC.VM.Firmware == lab.UEFI {
		return "UEFI"
	}
	return "BIOS"
}

// running returns the pid of the lab's serve process if it lives.
func running(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == nil
}

func down(args []string) error {
	o, err := parse("down", args)
	if err != nil {
		return err
	}
	pid, ok := running(o.dir)
	if !ok {
		fmt.Println("no lab running")
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop the lab (pid %d): %w", pid, err)
	}
	for i := 0; i < 300; i++ {
		if syscall.Kill(pid, 0) != nil {
			fmt.Println("lab down")
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the lab (pid %d) did not stop within 30 s; see %s", pid, filepath.Join(o.dir, "lab.log"))
}

// status prints each machine provisiond knows, with its install time.
func status(args []string) error {
	o, err := parse("status", args)
	if err != nil {
		return err
	}
	if _, ok := running(o.dir); !ok {
		return errors.New("no lab running: `make demo` starts one")
	}
	nsName, err := os.ReadFile(filepath.Join(o.dir, "netns"))
	if err != nil {
		return err
	}
	ns := &lab.NetNS{Name: strings.TrimSpace(string(nsName))}
	token, err := os.ReadFile(filepath.Join(o.dir, "secrets", "token"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(o.dir, "secrets", "ca.pem"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{
		Endpoint: lab.RackGRPC, Token: strings.TrimSpace(string(token)), CACert: string(ca),
		Dial: func(ctx context.Context, addr string) (net.Conn, error) { return ns.Dial(ctx, "tcp", addr) },
	})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }() // the listing is printed or failed by then
	return printMachines(ctx, c, os.Stdout)
}

func printMachines(ctx context.Context, c *client.Client, out io.Writer) error {
	hw, err := c.ListHardware(ctx, &pb.ListHardwareRequest{})
	if err != nil {
		return err
	}
	list := hw.GetHardware()
	sort.Slice(list, func(i, j int) bool { return list[i].GetHostname() < list[j].GetHostname() })
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if _, err := fmt.Fprintln(tw, "HOST\tSTATE\tADDRESS\tFIRMWARE\tINSTALL TIME\tWORKFLOW"); err != nil {
		return err
	}
	for _, h := range list {
		addr := ""
		if ifs := h.GetInterfaces(); len(ifs) > 0 {
			addr = ifs[0].GetIp()
		}
		fw := "BIOS"
		if h.GetUefi() {
			fw = "UEFI"
		}
		state, took, wf := "no machine", "", ""
		m, err := c.GetMachine(ctx, &pb.GetMachineRequest{HardwareId: h.GetId()})
		if err == nil {
			w := m.GetWorkflow()
			state = strings.ToLower(strings.TrimPrefix(w.GetState().String(), "STATE_"))
			wf = w.GetId()
			if w.GetFinishedAt() != nil && w.GetCreatedAt() != nil {
				took = w.GetFinishedAt().AsTime().Sub(w.GetCreatedAt().AsTime()).Round(100 * time.Millisecond).String()
			}
		}
		if _, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.GetHostname(), state, addr, fw, took, wf); err != nil {
			return err
		}
	}
	return tw.Flush()
}
