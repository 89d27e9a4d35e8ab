// Package ctl is `provisiond ctl`: a command-line client of provisiond's
// Admin API that lists hardware, machines, templates, workflows and
// events, follows a workflow live and drives power. It reads the same
// settings as the Terraform provider (BAREMETAL_ENDPOINT, BAREMETAL_TOKEN,
// BAREMETAL_CA_CERT, BAREMETAL_CLIENT_CERT, BAREMETAL_CLIENT_KEY,
// BAREMETAL_INSECURE), so one shell setup serves both; flags override them.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const usage = `Usage: provisiond ctl [flags] COMMAND [ARGS]

Commands:
  hardware [ID]                     list hardware (--label: only those carrying
                                    the labels), or show one
  machines [ID]                     list machines, or show one with its actions
  templates [ID]                    list templates, or show one with its content
  workflows HARDWARE_ID             list the workflows of a hardware, oldest first
  events HARDWARE_ID|WORKFLOW_ID    print a workflow's events (a hardware's
                                    current or latest workflow); --follow waits
                                    for new ones and exits when the workflow
                                    ends, non-zero unless it succeeded
  power HARDWARE_ID [on|off|soft-off|cycle|reset]
                                    show the power state (--refresh asks the
                                    BMC now), or change it

Flags (anywhere on the line):
  --endpoint HOST:PORT   provisiond's gRPC address [BAREMETAL_ENDPOINT]; a
                         scheme https:// or grpcs:// asks for TLS, http:// or
                         grpc:// for plain text
  --token-file FILE      file holding the admin token [BAREMETAL_TOKEN holds
                         the token itself]
  --ca-cert FILE         CA that signed provisiond's certificate [BAREMETAL_CA_CERT
                         holds the PEM itself]
  --client-cert FILE     client certificate for mutual TLS [BAREMETAL_CLIENT_CERT]
  --client-key FILE      its key [BAREMETAL_CLIENT_KEY]
  --insecure             TLS without verifying provisiond [BAREMETAL_INSECURE]
  --timeout DURATION     how long to wait for the connection (default 10s)
  -o, --output FORMAT    table (default) or json
  -f, --follow           events: follow the workflow until it ends
  -l, --label KEY=VALUE  hardware: list only hardware carrying this label with
                         this value (repeat for several: all must match)
  --show-user-data       machines ID: print the user-data (it may hold secrets)
  --refresh              power: ask the BMC rather than print the last seen state
`

// options are the parsed flags.
type options struct {
	endpoint, tokenFile, caCert, clientCert, clientKey string
	insecure                                           bool
	timeout                                            time.Duration
	output                                             string
	follow, showUserData, refresh                      bool
	labels                                             labelFlag
	set                                                map[string]bool
}

// labelFlag collects --label KEY=VALUE flags.
type labelFlag map[string]string

func (l labelFlag) String() string { return sortedMap(l) }

func (l labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: want KEY=VALUE", s)
	}
	if old, dup := l[k]; dup && old != v {
		return fmt.Errorf("label %s given twice, as %q and %q", k, old, v)
	}
	l[k] = v
	return nil
}

// parse reads flags and positional arguments in any order.
func parse(args []string, stderr io.Writer) (*options, []string, error) {
	o := &options{set: map[string]bool{}, labels: labelFlag{}}
	fs := flag.NewFlagSet("provisiond ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.endpoint, "endpoint", "", "")
	fs.StringVar(&o.tokenFile, "token-file", "", "")
	fs.StringVar(&o.caCert, "ca-cert", "", "")
	fs.StringVar(&o.clientCert, "client-cert", "", "")
	fs.StringVar(&o.clientKey, "client-key", "", "")
	fs.BoolVar(&o.insecure, "insecure", false, "")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "")
	fs.StringVar(&o.output, "o", "table", "")
	fs.StringVar(&o.output, "output", "table", "")
	fs.BoolVar(&o.follow, "f", false, "")
	fs.BoolVar(&o.follow, "follow", false, "")
	fs.BoolVar(&o.showUserData, "show-user-data", false, "")
	fs.BoolVar(&o.refresh, "refresh", false, "")
	fs.Var(o.labels, "l", "")
	fs.Var(o.labels, "label", "")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				_, _ = io.WriteString(stderr, usage)
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("%w (see provisiond ctl --help)", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if o.output != "table" && o.output != "json" {
		return nil, nil, fmt.Errorf("-o %q: want table or json", o.output)
	}
	return o, pos, nil
}

// Run runs `provisiond ctl` with args (those after "ctl"), reading the
// environment through getenv. Tables and JSON go to stdout; the error, if
// any, is for the caller to print.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, pos, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		_, _ = io.WriteString(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := pos[0], pos[1:]
	if cmd == "help" {
		_, _ = io.WriteString(stdout, usage)
		return nil
	}
	run, ok := commands[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q: want hardware, machines, templates, workflows, events or power (see provisiond ctl --help)", cmd)
	}
	if err := run.check(rest); err != nil {
		return fmt.Errorf("%s: %w (see provisiond ctl --help)", cmd, err)
	}
	cfg, err := clientConfig(o, getenv)
	if err != nil {
		return err
	}
	c, err := client.New(ctx, cfg)
	if err != nil {
		return connectError(cfg, err)
	}
	defer func() { _ = c.Close() }() // read-only use: nothing to lose on close
	e := &env{c: c, o: o, out: stdout, errw: stderr}
	if err := run.do(e, ctx, rest); err != nil {
		return callError(c.Addr(), err)
	}
	return nil
}

// command is one subcommand: check validates its arguments before any
// connection is made.
type command struct {
	check func(args []string) error
	do    func(e *env, ctx context.Context, args []string) error
}

func maxArgs(n int, what string) func([]string) error {
	return func(args []string) error {
		if len(args) > n {
			return fmt.Errorf("takes at most %s, got %q", what, args)
		}
		return nil
	}
}

func oneArg(what string) func([]string) error {
	return func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("takes %s", what)
		}
		return nil
	}
}

var commands = map[string]command{
	"hardware":  {maxArgs(1, "one hardware id"), (*env).hardware},
	"machines":  {maxArgs(1, "one hardware id"), (*env).machines},
	"templates": {maxArgs(1, "one template id"), (*env).templates},
	"workflows": {oneArg("one hardware id"), (*env).workflows},
	"events":    {oneArg("one hardware id or workflow id"), (*env).events},
	"power": {func(args []string) error {
		if len(args) == 0 || len(args) > 2 {
			return errors.New("takes HARDWARE_ID and optionally on, off, soft-off, cycle or reset")
		}
		if len(args) == 2 {
			if _, ok := powerActions[args[1]]; !ok {
				return fmt.Errorf("power action %q: want on, off, soft-off, cycle or reset", args[1])
			}
		}
		return nil
	}, (*env).power},
}

// clientConfig takes each setting from its flag, else from the provider's
// environment variable. Flags name files; the variables hold the values
// themselves, as the provider reads them.
func clientConfig(o *options, getenv func(string) string) (client.Config, error) {
	cfg := client.Config{Endpoint: o.endpoint, ConnectTimeout: o.timeout}
	if cfg.Endpoint == "" {
		cfg.Endpoint = getenv("BAREMETAL_ENDPOINT")
	}
	if cfg.Endpoint == "" {
		return cfg, errors.New("no endpoint: pass --endpoint HOST:PORT or set BAREMETAL_ENDPOINT to provisiond's --grpc-listen address")
	}
	var err error
	if o.tokenFile != "" {
		if cfg.Token, err = readFile(o.tokenFile, "--token-file"); err != nil {
			return cfg, err
		}
	} else {
		cfg.Token = strings.TrimSpace(getenv("BAREMETAL_TOKEN"))
	}
	if cfg.Token == "" {
		return cfg, errors.New("no token: pass --token-file FILE, or set BAREMETAL_TOKEN to the content of provisiond's --token-file")
	}
	for _, s := range []struct {
		dst        *string
		flag, file string
		env        string
	}{
		{&cfg.CACert, "--ca-cert", o.caCert, "BAREMETAL_CA_CERT"},
		{&cfg.ClientCert, "--client-cert", o.clientCert, "BAREMETAL_CLIENT_CERT"},
		{&cfg.ClientKey, "--client-key", o.clientKey, "BAREMETAL_CLIENT_KEY"},
	} {
		if s.file != "" {
			if *s.dst, err = readFile(s.file, s.flag); err != nil {
				return cfg, err
			}
			continue
		}
		v := getenv(s.env)
		if v != "" && !strings.Contains(v, "-----BEGIN") {
			// A path is the likely mistake; the provider would fail on it too.
			return cfg, fmt.Errorf("%s holds no PEM block: like the provider, it takes the PEM itself (export %s=\"$(cat FILE)\"), or pass %s FILE", s.env, s.env, s.flag)
		}
		*s.dst = v
	}
	if o.set["insecure"] {
		cfg.Insecure = o.insecure
	} else if v := getenv("BAREMETAL_INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("BAREMETAL_INSECURE must be true or false, got %q", v)
		}
		cfg.Insecure = b
	}
	return cfg, nil
}

// readFile reads a settings file, trimmed for the token.
func readFile(path, flagName string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	s := string(raw)
	if flagName == "--token-file" {
		s = strings.TrimSpace(s)
	}
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s %s is empty", flagName, path)
	}
	return s, nil
}

// connectError explains a failed connection and what to check.
func connectError(cfg client.Config, err error) error {
	hint := map[client.Problem]string{
		client.ProblemTLS: "TLS problem: provisiond's certificate did not verify, or one side speaks TLS and the other does not. " +
			"Check --ca-cert (BAREMETAL_CA_CERT: the CA that signed provisiond's --tls-cert), that the endpoint's host name is in the certificate, " +
			"--client-cert/--client-key when provisiond runs with --tls-client-ca, and an http:// endpoint if provisiond has no TLS",
		client.ProblemRefused:  "nothing listens there: check that provisiond runs and that --endpoint (BAREMETAL_ENDPOINT) names its --grpc-listen address",
		client.ProblemNoHost:   "the endpoint's host name does not resolve",
		client.ProblemTimeout:  "provisiond did not answer in time: check the endpoint, firewalls, and whether provisiond expects TLS (--ca-cert) or plain text (an http:// endpoint)",
		client.ProblemEndpoint: "the endpoint is malformed",
		client.ProblemOther:    "check --endpoint and the TLS settings",
	}[client.Diagnose(err)]
	return fmt.Errorf("cannot reach provisiond at %s: %s\n  %v", cfg.Endpoint, hint, err)
}

// callError explains an error of an Admin call.
func callError(addr string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unauthenticated:
		return fmt.Errorf("provisiond at %s refused the credentials: the token (--token-file or BAREMETAL_TOKEN) must be the content of provisiond's --token-file, "+
			"and with --tls-client-ca a client certificate is needed (--client-cert/--client-key)\n  %s", addr, st.Message())
	case codes.PermissionDenied:
		return fmt.Errorf("provisiond at %s denied the call: check the client certificate (--client-cert/--client-key)\n  %s", addr, st.Message())
	case codes.Unavailable:
		return fmt.Errorf("provisiond at %s went away during the call: check that it still runs\n  %s", addr, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%s (list what exists with provisiond ctl hardware, machines or templates)", st.Message())
	}
	return errors.New(st.Message())
}
