package client

import "strings"

// Problem is what went wrong when New could not reach provisiond, for
// callers to explain in their own terms (the provider names its
// attributes, provisiond ctl its flags).
type Problem int

// Problems New's errors tell apart.
const (
	ProblemOther    Problem = iota
	ProblemTLS              // the certificate did not verify, or one side speaks TLS and the other not
	ProblemRefused          // nothing listens at the endpoint
	ProblemNoHost           // the endpoint's host name does not resolve
	ProblemTimeout          // no answer in time
	ProblemEndpoint         // the endpoint is malformed
)

// Diagnose classifies an error of New.
func Diagnose(err error) Problem {
	low := strings.ToLower(err.Error())
	switch {
	case strings.Contains(low, "certificate") || strings.Contains(low, "x509") ||
		strings.Contains(low, "tls") && strings.Contains(low, "handshake") ||
		strings.Contains(low, "first record does not look like a tls handshake"):
		return ProblemTLS
	case strings.Contains(low, "connection refused"):
		return ProblemRefused
	case strings.Contains(low, "no such host") || strings.Contains(low, "lookup"):
		return ProblemNoHost
	case strings.Contains(low, "not reachable within"):
		return ProblemTimeout
	case strings.Contains(low, "endpoint"):
		return ProblemEndpoint
	}
	return ProblemOther
}
