package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// adminPrefix is the full-method prefix of the Admin service. Agent RPCs
// carry a per-workflow token that the Agent service checks itself; health
// checks are open.
const adminPrefix = "/baremetal.v1.Admin/"

// Auth guards the Admin service with a bearer token and, when mutual TLS is
// configured, a verified client certificate.
type Auth struct {
	tokenHash  [32]byte
	requireMTL bool
	log        *slog.Logger
	refused    *Refusals
	agents     AgentTokens // nil: Tap checks only that agent calls carry a token
}

// NewAuth returns the guard for the admin token. With requireClientCert,
// admin calls must also present a client certificate that verified
// against the configured CA.
// Refusals are counted in reg (nil: not counted) and logged sampled.
func NewAuth(token string, requireClientCert bool, log *slog.Logger, reg prometheus.Registerer) *Auth {
	log = log.With("component", "auth")
	return &Auth{tokenHash: sha256.Sum256([]byte(token)), requireMTL: requireClientCert, log: log, refused: NewRefusals(log, reg, "admin")}
}

// BearerToken returns the token of an "authorization: Bearer X" header.
func BearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	return bearer(md.Get("authorization"))
}

// errAdminToken is the refusal of an admin call without the right token.
var errAdminToken = status.Error(codes.Unauthenticated, "missing or invalid bearer token: set the provider's token (BAREMETAL_TOKEN) to the content of provisiond's --token-file")

// TokenMatches compares a presented token to a stored SHA-256 in constant time.
func TokenMatches(presented string, hash []byte) bool {
	sum := sha256.Sum256([]byte(presented))
	return len(hash) == len(sum) && subtle.ConstantTimeCompare(sum[:], hash) == 1
}

func (a *Auth) check(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, adminPrefix) {
		return nil
	}
	tok, ok := BearerToken(ctx)
	if !ok || !TokenMatches(tok, a.tokenHash[:]) {
		p, _ := peer.FromContext(ctx)
		addr := ""
		if p != nil {
			addr = p.Addr.String()
		}
		a.refused.Refuse(ctx, "invalid_token", "method", method, "peer", addr)
		return errAdminToken
	}
	if a.requireMTL {
		p, _ := peer.FromContext(ctx)
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if p == nil || !ok || len(info.State.VerifiedChains) == 0 {
			a.refused.Refuse(ctx, "no_client_cert", "method", method)
			return status.Error(codes.Unauthenticated, "a client certificate signed by provisiond's --tls-client-ca is required")
		}
	}
	return nil
}

// Unary is the unary server interceptor.
func (a *Auth) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor.
func (a *Auth) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}
