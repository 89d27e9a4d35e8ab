package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
)

// Limits of the gRPC API. gRPC reads a whole message before any
// interceptor sees it, so these, not the interceptors, are what bound the
// memory a client can make the daemon hold.
const (
	// MaxFieldBytes bounds each of the large free-form fields: a
	// template's content, a machine's user_data and a hardware's metadata.
	// Nothing else in a request comes near it.
	MaxFieldBytes = 1 << 20
	// MaxMessageBytes bounds a received message: one full-size field plus
	// room for the small ones (labels, parameters, SSH keys) beside it.
	MaxMessageBytes = 2 << 20
	// MaxConcurrentStreams bounds the calls in flight on one connection.
	// The provider runs one WatchMachine stream per machine it creates on
	// a single connection, so this is the most machines one terraform
	// apply waits on at once; more queue in the client, not fail.
	MaxConcurrentStreams = 256
	// MaxConnections bounds the connections served at once; more wait in
	// the listen backlog until one closes. Each provisioning machine's
	// agent holds one, the provider one per terraform run.
	MaxConnections = 1024
	// agentPrefix is the full-method prefix of the Agent service.
	agentPrefix = "/baremetal.v1.Agent/"
	// maxBearerBytes bounds a presented bearer token: admin and agent
	// tokens are well under 100 bytes.
	maxBearerBytes = 512
)

// NewServerMetrics returns the gRPC server's metrics, registered with
// reg: grpc_server_started_total, grpc_server_handled_total (by method and
// code), the stream message counters and grpc_server_handling_seconds.
// Series appear with a method's first call (pre-creating every method and
// code would be hundreds of series).
func NewServerMetrics(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		// Admin and Agent calls take milliseconds; WatchMachine streams
		// last as long as an install.
		grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 120, 600, 3600}),
	))
	reg.MustRegister(m)
	return m
}

// ServerOptions are the gRPC server options provisiond runs with:
// authentication before a request body is read, the limits above,
// keepalive enforcement, panic recovery and, when creds is not nil, TLS.
// With metrics, every call that passes the tap is counted and timed, its
// refusals by the interceptors included. provisiond and its tests both
// build the server from this.
func ServerOptions(auth *Auth, creds credentials.TransportCredentials, log *slog.Logger, metrics *grpcprom.ServerMetrics) []grpc.ServerOption {
	log = log.With("component", "grpc")
	opts := []grpc.ServerOption{
		grpc.InTapHandle(auth.Tap),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		// A client must finish the TLS handshake and HTTP/2 preface
		// quickly, or give its connection slot back.
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Connections without calls are closed; clients reconnect
			// transparently when they next need one.
			MaxConnectionIdle: 15 * time.Minute,
			// Ping quiet connections so dead peers (a machine powered off
			// mid-install) free their slot.
			Time:    2 * time.Minute,
			Timeout: 20 * time.Second,
		}),
		// Our clients send no keepalive pings today; this admits modest
		// ones and closes connections that ping-flood.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
	}
	if metrics != nil {
		// Outermost: a call's code is the one its client sees, a recovered
		// panic's Internal and an interceptor's refusal included.
		opts = append(opts, grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor()),
			grpc.ChainStreamInterceptor(metrics.StreamServerInterceptor()))
	}
	opts = append(opts,
		// Recovery first, so that it also covers the interceptors after it.
		grpc.ChainUnaryInterceptor(recoverUnary(log), auth.Unary, limitFields),
		grpc.ChainStreamInterceptor(recoverStream(log), auth.Stream),
	)
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	return opts
}

// LimitListener bounds the connections accepted from l at once to
// MaxConnections.
func LimitListener(l net.Listener) net.Listener { return netutil.LimitListener(l, MaxConnections) }

// Tap runs when a call's headers arrive, before its body is read: admin
// calls without the admin token, and agent calls without any bearer
// token, are refused there, so they cost the daemon no memory for their
// body. It runs on the connection's reader and must not block. Agent
// tokens are checked against their workflow by the Agent service; the
// client certificate of mutual TLS by the interceptors.
func (a *Auth) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	method := info.FullMethodName
	switch {
	case strings.HasPrefix(method, adminPrefix):
		tok, ok := bearer(info.Header.Get("authorization"))
		if !ok || !TokenMatches(tok, a.tokenHash[:]) {
			a.refused.Refuse(ctx, "invalid_token", "method", method, "stage", "headers")
			return ctx, errAdminToken
		}
	case strings.HasPrefix(method, agentPrefix):
		tok, ok := bearer(info.Header.Get("authorization"))
		if !ok {
			return ctx, status.Error(codes.Unauthenticated, "agent call without a bearer token: pass the bm.token of the kernel command line as \"authorization: Bearer <token>\"")
		}
		if a.agents != nil {
			if err := a.agents.CheckAgentToken(ctx, tok); err != nil {
				a.refused.Refuse(ctx, "invalid_agent_token", "method", method, "stage", "headers")
				return ctx, status.Error(codes.Unauthenticated, "invalid agent token: it was replaced by a newer one, or its workflow is gone or ended")
			}
		}
	}
	return ctx, nil
}

// AgentTokens checks an agent token; the workflow engine implements it.
// CheckAgentToken returns an error when the token belongs to no workflow
// or no longer works. It runs on the connection's reader for every agent
// call, so it must be quick: a read transaction, no write.
type AgentTokens interface {
	CheckAgentToken(ctx context.Context, token string) error
}

// WithAgentTokens makes Tap check agent tokens too, so a junk token's
// body is never read. It returns a, for use before the server starts.
func (a *Auth) WithAgentTokens(t AgentTokens) *Auth {
	a.agents = t
	return a
}

// bearer returns the token of the first "Bearer X" value of bounded size.
func bearer(values []string) (string, bool) {
	for _, v := range values {
		if len(v) > 7 && len(v) <= 7+maxBearerBytes && strings.EqualFold(v[:7], "bearer ") {
			if tok := strings.TrimSpace(v[7:]); tok != "" {
				return tok, true
			}
		}
	}
	return "", false
}

// limitFields refuses requests whose large fields exceed MaxFieldBytes
// with a message naming the field, rather than storing them.
func limitFields(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	check := func(field, v string) error {
		if len(v) > MaxFieldBytes {
			return status.Errorf(codes.InvalidArgument, "%s: %s is %d bytes; the limit is %d (1 MiB)", info.FullMethod, field, len(v), MaxFieldBytes)
		}
		return nil
	}
	var err error
	switch r := req.(type) {
	case *pb.CreateHardwareRequest:
		err = check("hardware.metadata", r.GetHardware().GetMetadata())
	case *pb.UpdateHardwareRequest:
		err = check("hardware.metadata", r.GetHardware().GetMetadata())
	case *pb.CreateTemplateRequest:
		err = check("template.content", r.GetTemplate().GetContent())
	case *pb.UpdateTemplateRequest:
		err = check("template.content", r.GetTemplate().GetContent())
	case *pb.ValidateTemplateRequest:
		err = check("content", r.GetContent())
	case *pb.ProvisionMachineRequest:
		err = check("user_data", r.GetUserData())
	}
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// errPanic is what a client sees of a handler's panic.
var errPanic = status.Error(codes.Internal, "provisiond hit an internal error handling this call; its log has the details")

// logPanic logs a recovered panic with the method and the stack, but not
// the request nor, unless it is a runtime error, the panic's value: both
// may carry secrets (BMC passwords, user_data, tokens).
func logPanic(ctx context.Context, log *slog.Logger, method string, v any) {
	what := fmt.Sprintf("%T", v)
	if re, ok := v.(runtime.Error); ok {
		what = re.Error()
	}
	log.ErrorContext(ctx, "panic in gRPC handler; the call failed with Internal and the daemon keeps serving",
		"method", method, "panic", what, "stack", string(debug.Stack()))
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if v := recover(); v != nil {
				logPanic(ctx, log, info.FullMethod, v)
				resp, err = nil, errPanic
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if v := recover(); v != nil {
				logPanic(ss.Context(), log, info.FullMethod, v)
				err = errPanic
			}
		}()
		return handler(srv, ss)
	}
}
