// Package cmdline reads the agent's parameters from the kernel command line
// that provisiond's iPXE script writes:
//
//	bm.grpc=HOST:PORT bm.http=http://HOST:PORT bm.hw=ID bm.workflow=ID
//	bm.token=TOKEN bm.tls=0|1 bm.ca=<base64 PEM> [BOOTIF=01-aa-bb-..] [bm.mac=aa:bb:..]
package cmdline

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Config is what the agent needs from the command line.
type Config struct {
	GRPC       string // provisiond gRPC address, HOST:PORT
	HTTP       string // provisiond HTTP base URL
	HardwareID string
	WorkflowID string
	Token      string // never log it
	TLS        bool
	CAPEM      []byte // PEM CA bundle for TLS; nil means system roots
	// BootMAC is the NIC to bring up: bm.mac, or iPXE's BOOTIF; nil means
	// the first non-loopback interface.
	BootMAC net.HardwareAddr
}

// String describes the config without the token.
func (c Config) String() string {
	return fmt.Sprintf("grpc=%s http=%s hw=%s workflow=%s tls=%t ca=%t mac=%s token=%t",
		c.GRPC, c.HTTP, c.HardwareID, c.WorkflowID, c.TLS, c.CAPEM != nil, c.BootMAC, c.Token != "")
}

// Fields splits a kernel command line into parameters the way the kernel
// does: on spaces, with double quotes grouping (and removed).
func Fields(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// Parse reads the agent's parameters from a kernel command line. Unknown
// parameters are ignored; the last of repeated ones wins.
func Parse(s string) (Config, error) {
	var c Config
	var errs []error
	for _, f := range Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "bm.grpc":
			if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
				errs = append(errs, fmt.Errorf("bm.grpc=%q: want HOST:PORT", v))
				continue
			}
			c.GRPC = v
		case "bm.http":
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("bm.http=%q: want an http(s) URL", v))
				continue
			}
			c.HTTP = strings.TrimRight(v, "/")
		case "bm.hw":
			c.HardwareID = v
		case "bm.workflow":
			c.WorkflowID = v
		case "bm.token":
			c.Token = v
		case "bm.tls":
			switch v {
			case "1", "true", "yes":
				c.TLS = true
			case "0", "false", "no", "":
				c.TLS = false
			default:
				errs = append(errs, fmt.Errorf("bm.tls=%q: want 0 or 1", v))
			}
		case "bm.ca":
			pem, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				pem, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("bm.ca: not base64: %w", err))
				continue
			}
			if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				errs = append(errs, errors.New("bm.ca: no PEM certificate in it"))
				continue
			}
			c.CAPEM = pem
		case "bm.mac":
			mac, err := net.ParseMAC(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("bm.mac=%q: %w", v, err))
				continue
			}
			c.BootMAC = mac
		case "BOOTIF":
			// iPXE/pxelinux form: 01-aa-bb-cc-dd-ee-ff (01 = Ethernet).
			if mac, err := net.ParseMAC(strings.TrimPrefix(v, "01-")); err == nil && c.BootMAC == nil {
				c.BootMAC = mac
			}
		}
	}
	if c.GRPC == "" {
		errs = append(errs, errors.New("bm.grpc is missing"))
	}
	if c.HardwareID == "" {
		errs = append(errs, errors.New("bm.hw is missing"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("bm.token is missing"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("kernel command line: %w", err)
	}
	return c, nil
}
