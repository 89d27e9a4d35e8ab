package bmc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/bmclib/v2/providers/ipmitool"
	"github.com/bmc-toolbox/bmclib/v2/providers/redfish"
	"github.com/stmcginnis/gofish/common"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// session is one open connection to one BMC. Calls on a session are
// serialised by the Manager; a session is closed after each operation.
type session interface {
	// powerState reads the power state; raw is what the provider said.
	powerState(ctx context.Context) (state PowerState, raw string, err error)
	// setPower performs action as is (the Manager decides what to send).
	setPower(ctx context.Context, action PowerAction) error
	// setBootDevice sets the next boot device.
	setBootDevice(ctx context.Context, dev BootDevice, persistent, efi bool) error
	// provider names the bmclib provider that answered.
	provider() string
	close(ctx context.Context)
}

// opener opens sessions with the BMC of a hardware record.
type opener interface {
	open(ctx context.Context, hw store.Hardware, timeout time.Duration) (session, error)
}

// bmclibDriver talks to a BMC through one bmclib provider.
type bmclibDriver struct {
	name     string // our driver name: ipmi or redfish
	provider string // bmclib provider name: ipmitool or gofish
	opts     *Options
}

func newBMCLibDriver(name string, opts *Options) *bmclibDriver {
	d := &bmclibDriver{name: name, opts: opts}
	switch name {
	case DriverIPMI:
		d.provider = ipmitool.ProviderName
	case DriverRedfish:
		d.provider = redfish.ProviderName
	}
	return d
}

// hostForProvider formats an address the way each bmclib provider joins it
// with the port: an IPv6 literal needs brackets.
func hostForProvider(addr string) string {
	if strings.Contains(addr, ":") && !strings.HasPrefix(addr, "[") {
		return "[" + addr + "]"
	}
	return addr
}

func (d *bmclibDriver) open(ctx context.Context, hw store.Hardware, timeout time.Duration) (session, error) {
	port := strconv.Itoa(bmcPort(hw.BMC))
	opts := []bmclib.Option{bmclib.WithPerProviderTimeout(timeout)}
	switch d.name {
	case DriverIPMI:
		opts = append(opts, bmclib.WithIpmitoolPort(port))
		if d.opts.IPMICipherSuite != "" {
			opts = append(opts, bmclib.WithIpmitoolCipherSuite(d.opts.IPMICipherSuite))
		}
		if d.opts.IpmitoolPath != "" {
			opts = append(opts, bmclib.WithIpmitoolPath(d.opts.IpmitoolPath))
		}
	case DriverRedfish:
		opts = append(opts, bmclib.WithRedfishPort(port), bmclib.WithHTTPClient(d.httpClient(hw.BMC, timeout)))
	}
	// NewClient registers every provider bmclib knows (no I/O); keep only
	// ours, permanently: bmclib's one-time For() filter is consumed by its
	// own timeout computation.
	c := bmclib.NewClient(hostForProvider(hw.BMC.Address), hw.BMC.Username, hw.BMC.Password, opts...)
	c.Registry.Drivers = c.Registry.For(d.provider)
	if len(c.Registry.Drivers) == 0 {
		if d.name == DriverIPMI {
			return nil, fmt.Errorf("%w: bmclib provider %s is not available (is ipmitool installed and on PATH?)", ErrInvalid, d.provider)
		}
		return nil, fmt.Errorf("%w: bmclib provider %s is not available", ErrInvalid, d.provider)
	}
	if err := c.Open(ctx); err != nil {
		return nil, fmt.Errorf("open session: %w", flatten(err))
	}
	return &bmclibSession{c: c, name: d.provider}, nil
}

// httpClient builds the Redfish HTTP client: TLS verification on (system
// roots, or Options.RedfishRootCAs) unless the hardware says insecure_tls.
// bmclib clones the transport, so it must be an *http.Transport.
func (d *bmclibDriver) httpClient(b store.BMC, timeout time.Duration) *http.Client {
	jar, _ := cookiejar.New(nil) // never fails without options
	return &http.Client{
		Timeout: timeout,
		Jar:     jar,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				MinVersion:         tls.VersionTLS12,
				RootCAs:            d.opts.RedfishRootCAs,
				InsecureSkipVerify: b.InsecureTLS, //nolint:gosec // the operator asked for it per hardware
			},
			DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			DisableKeepAlives:     true,
		},
	}
}

type bmclibSession struct {
	c    *bmclib.Client
	name string
}

func (s *bmclibSession) provider() string { return s.name }

func (s *bmclibSession) powerState(ctx context.Context) (PowerState, string, error) {
	raw, err := s.c.GetPowerState(ctx)
	if err != nil {
		return PowerUnknown, raw, fmt.Errorf("get power state: %w", flatten(err))
	}
	return NormalizePowerState(raw), strings.TrimSpace(raw), nil
}

// powerSetter is bmclib's provider interface for power actions.
type powerSetter interface {
	PowerSet(ctx context.Context, state string) (ok bool, err error)
}

func (s *bmclibSession) setPower(ctx context.Context, a PowerAction) error {
	// Call the provider itself: bmclib's Client turns the provider's "ok"
	// into an error, and the Redfish provider answers ok=false for a
	// graceful shutdown the BMC accepted. An error is what tells failure.
	for _, d := range s.c.Registry.Drivers {
		if p, ok := d.DriverInterface.(powerSetter); ok {
			if _, err := p.PowerSet(ctx, string(a)); err != nil {
				return fmt.Errorf("set power %s: provider %s: %w", a, d.Name, flatten(err))
			}
			return nil
		}
	}
	return fmt.Errorf("set power %s: provider %s cannot set power", a, s.name)
}

func (s *bmclibSession) setBootDevice(ctx context.Context, dev BootDevice, persistent, efi bool) error {
	if _, err := s.c.SetBootDevice(ctx, string(dev), persistent, efi); err != nil {
		return fmt.Errorf("set boot device %s: %w", dev, flatten(err))
	}
	return nil
}

func (s *bmclibSession) close(ctx context.Context) { _ = s.c.Close(ctx) }

// bmcPort is the configured port or the driver's well-known one.
func bmcPort(b store.BMC) int {
	if b.Port > 0 {
		return b.Port
	}
	if b.Driver == DriverRedfish {
		return 443
	}
	return 623
}

// ipmiAnsweredWithin: ipmitool (-N 5) waits 5 s before its first
// retransmission, so a session error that comes back faster than that was
// an answer from the BMC (a rejected login or no common cipher suite), not
// a lost packet.
const ipmiAnsweredWithin = 5 * time.Second

// isAuthError reports whether err says the BMC refused the credentials.
// Redfish: HTTP 401 or 403 from the session service. IPMI: ipmitool only
// prints "RAKP 2 HMAC is invalid" with -v, which bmclib does not pass; a
// quick "Unable to establish IPMI v2 / RMCP+ session" is the BMC refusing
// the session (wrong user or password, or no usable cipher suite). Either
// way retrying cannot help and risks locking the account.
func isAuthError(driver string, err error, elapsed time.Duration) bool {
	var ce *common.Error
	if errors.As(err, &ce) && (ce.HTTPReturnedStatusCode == http.StatusUnauthorized || ce.HTTPReturnedStatusCode == http.StatusForbidden) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"RAKP 2 HMAC is invalid", "unauthorized name", "invalid password", "401: ", "403: "} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return driver == DriverIPMI && elapsed < ipmiAnsweredWithin &&
		strings.Contains(msg, "Unable to establish IPMI v2 / RMCP+ session")
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) ||
		strings.Contains(err.Error(), "Client.Timeout exceeded")
}

// flatten puts bmclib's multi-line multierror text on one line (for logs
// and API errors) and keeps the error chain.
func flatten(err error) error {
	msg := err.Error()
	if !strings.Contains(msg, "\n") {
		return err
	}
	var parts []string
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "* "))
		if line == "" || strings.HasSuffix(line, "errors occurred:") || strings.HasSuffix(line, "error occurred:") ||
			line == "no Opener implementations found" {
			continue
		}
		parts = append(parts, line)
	}
	return &rewrapped{msg: strings.Join(parts, "; "), err: err}
}
