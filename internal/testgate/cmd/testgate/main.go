// Command testgate reads `go test -json` on stdin, passes readable output
// through and fails the run when a test failed, a package did not build,
// or a test skipped that is not on the allowlist of skips by design.
//
//	go test -json ./... | testgate -allow .ci/skip-allowlist
//
// Exit status: 0 when the run passes, 1 when it does not, 2 on a usage or
// I/O error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rackform/terraform-provider-baremetal/internal/testgate"
)

func main() {
	ok, err := run(os.Args[1:], os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testgate: %v\n", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) (bool, error) {
	fs := flag.NewFlagSet("testgate", flag.ContinueOnError)
	allowPath := fs.String("allow", "", "allowlist of tests that skip by design (`package TestName  # why` lines); none: no skip allowed")
	verbose := fs.Bool("v", false, "pass every output line through as it arrives, as go test -v does")
	if err := fs.Parse(args); err != nil {
		return false, fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		return false, errors.New("no arguments wanted: pipe `go test -json` into stdin")
	}
	var allow *testgate.Allowlist
	name := "no allowlist: every skip fails"
	if *allowPath != "" {
		f, err := os.Open(*allowPath)
		if err != nil {
			return false, fmt.Errorf("open allowlist: %w", err)
		}
		allow, err = testgate.ParseAllowlist(f, *allowPath)
		_ = f.Close() // read-only: nothing to lose
		if err != nil {
			return false, err
		}
		name = *allowPath
	}
	res, err := testgate.Run(stdin, stdout, testgate.Options{Verbose: *verbose, Allow: allow})
	if err != nil {
		return false, err
	}
	if err := res.Report(stdout, allow, name); err != nil {
		return false, err
	}
	return res.OK(), nil
}
