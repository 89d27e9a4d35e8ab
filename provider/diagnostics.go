package provider

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// addAPIError turns an error of a provisiond call into a diagnostic: the
// summary says what was being done, the detail what happened, what to do
// and the underlying error.
func addAPIError(diags *diag.Diagnostics, c *apiClient, summary string, err error) {
	diags.AddError(summary, apiErrorDetail(c, err))
}

func apiErrorDetail(c *apiClient, err error) string {
	endpoint := "provisiond"
	if c != nil && c.endpoint != "" {
		endpoint = "provisiond at " + c.endpoint
	}
	st, _ := status.FromError(err)
	var what string
	switch {
	case errors.Is(err, context.DeadlineExceeded) || st.Code() == codes.DeadlineExceeded:
		what = "The operation did not finish within its timeout. Raise the resource's timeouts, or look at provisiond's log for what it waits on."
	case errors.Is(err, context.Canceled) || st.Code() == codes.Canceled:
		what = "The operation was interrupted (Ctrl-C or Terraform stopping)."
	case st.Code() == codes.Unavailable:
		what = endpoint + " is not reachable or went away during the call. Check that it runs and that the network and TLS settings are right; nothing was assumed about the resource."
	case st.Code() == codes.Unauthenticated:
		what = endpoint + " refused the credentials: set the provider's token (or BAREMETAL_TOKEN) to the content of provisiond's --token-file, and client_cert/client_key when it requires mutual TLS."
	case st.Code() == codes.PermissionDenied:
		what = endpoint + " denied the call."
	case st.Code() == codes.InvalidArgument:
		what = endpoint + " rejected the request as invalid: fix the configuration."
	case st.Code() == codes.NotFound:
		what = "The object does not exist in " + endpoint + "."
	case st.Code() == codes.AlreadyExists:
		what = "An object with the same identity (id, MAC, IP or name) already exists in " + endpoint + ": import it, or choose another."
	case st.Code() == codes.FailedPrecondition:
		what = "The object is in use or in a state that does not allow this."
	case st.Code() == codes.Unimplemented:
		what = endpoint + " does not support this call: it is older than the provider, or the service behind it is not configured."
	default:
		what = endpoint + " answered with an error."
	}
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = fmt.Sprintf("%s (%s)", s.Message(), s.Code())
	}
	return what + "\n\nError: " + msg
}

// isNotFound reports whether err is provisiond's NotFound.
func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// clientFrom checks the provider data handed to Configure.
func clientFrom(data any, diags *diag.Diagnostics) *apiClient {
	if data == nil {
		return nil // the provider is not configured yet (validate, or unknown config)
	}
	c, ok := data.(*apiClient)
	if !ok {
		diags.AddError("Unexpected provider data", fmt.Sprintf("Expected *apiClient, got %T. This is a bug in the provider.", data))
		return nil
	}
	return c
}

// notConfigured is the diagnostic of a call made before Configure had a client.
func notConfigured(diags *diag.Diagnostics) {
	diags.AddError("Provider not configured",
		"The baremetal provider has no connection to provisiond: its configuration was unknown when Terraform configured it. Give endpoint and token values known at plan time.")
}

// isFailedPrecondition reports whether provisiond refused because the
// object is in use.
func isFailedPrecondition(err error) bool { return status.Code(err) == codes.FailedPrecondition }
