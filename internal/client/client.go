// Package client is the Go client of provisiond's Admin API, used by the
// Terraform provider and the tests.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Config says how to reach provisiond.
type Config struct {
	// Endpoint is host:port of provisiond's gRPC listener; a scheme
	// "https://" or "grpcs://" asks for TLS, "http://" or "grpc://" for
	// plain text. Without a scheme, TLS is used when any TLS field is set.
	Endpoint string
	// Token is the admin bearer token.
	Token string
	// CACert is a PEM bundle that signs provisiond's certificate; empty
	// means the system roots.
	CACert string
	// ClientCert and ClientKey (PEM) for mutual TLS.
	ClientCert, ClientKey string
	// Insecure skips verification of provisiond's certificate.
	Insecure bool
	// ConnectTimeout bounds the first connection; zero means 10 seconds.
	ConnectTimeout time.Duration
	// Dial, when set, makes the connection instead of a plain TCP dial
	// (the lab dials into a network namespace with it).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Client holds one connection to provisiond.
type Client struct {
	pb.AdminClient
	conn *grpc.ClientConn
	addr string
}

// tokenCreds puts the bearer token on every call.
type tokenCreds struct {
	token  string
	secure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }

// TLSConfig builds the client TLS configuration from cfg; nil means plain text.
func TLSConfig(cfg Config) (*tls.Config, string, error) {
	addr, useTLS := cfg.Endpoint, cfg.CACert != "" || cfg.ClientCert != "" || cfg.Insecure
	for _, p := range []struct {
		prefix string
		tls    bool
	}{{"https://", true}, {"grpcs://", true}, {"http://", false}, {"grpc://", false}} {
		if strings.HasPrefix(addr, p.prefix) {
			addr, useTLS = strings.TrimSuffix(strings.TrimPrefix(addr, p.prefix), "/"), p.tls
		}
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, "", fmt.Errorf("endpoint %q: want host:port (e.g. provisiond.example:7777): %v", cfg.Endpoint, err)
	}
	if !useTLS {
		return nil, addr, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.Insecure} //nolint:gosec // the user asked for it
	if cfg.CACert != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(cfg.CACert)) {
			return nil, "", errors.New("ca_cert: no PEM certificate found")
		}
		tc.RootCAs = pool
	}
	if cfg.ClientCert != "" || cfg.ClientKey != "" {
		pair, err := tls.X509KeyPair([]byte(cfg.ClientCert), []byte(cfg.ClientKey))
		if err != nil {
			return nil, "", fmt.Errorf("client_cert/client_key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, addr, nil
}

// New connects to provisiond and waits until the connection is up, so a
// wrong endpoint or a TLS problem is reported now, by name.
func New(ctx context.Context, cfg Config) (*Client, error) {
	tc, addr, err := TLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))}
	if tc != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(cfg.Dial))
	}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: cfg.Token, secure: tc != nil}))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to provisiond at %s: %w", addr, err)
	}
	timeout := cfg.ConnectTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			break
		}
		if s == connectivity.TransientFailure {
			// Ask once with a real call: its error names the cause (refused,
			// TLS). Checked before waiting: once in TRANSIENT_FAILURE, grpc
			// may not change state again before the deadline.
			_, err := pb.NewAdminClient(conn).ListTemplates(wctx, &pb.ListTemplatesRequest{}, grpc.WaitForReady(false))
			if err != nil && status.Code(err) == codes.Unavailable {
				_ = conn.Close() // never usable; the dial error is the news
				return nil, fmt.Errorf("connect to provisiond at %s (tls=%t): %s", addr, tc != nil, status.Convert(err).Message())
			}
			break // it answered (perhaps with an error of its own): reachable
		}
		if !conn.WaitForStateChange(wctx, s) {
			_ = conn.Close() // as above
			return nil, fmt.Errorf("connect to provisiond at %s: not reachable within %s (last state %s): check the endpoint, that provisiond runs, and whether it expects TLS (tls=%t)", addr, timeout, s, tc != nil)
		}
	}
	return &Client{AdminClient: pb.NewAdminClient(conn), conn: conn, addr: addr}, nil
}

// Addr is the address the client talks to.
func (c *Client) Addr() string { return c.addr }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
