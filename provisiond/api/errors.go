package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errorCode is one row of errorCodes.
type errorCode struct {
	err   error
	admin codes.Code // on the Admin API
	agent codes.Code // on the Agent API
}

// errorCodes maps the sentinel errors of the store and the workflow
// engine to status codes, the only place where they become codes. Rows
// are tried in order with errors.Is and the first match wins; an error
// that matches none is Internal. The two APIs differ only on
// store.ErrConflict: to the Admin API it means the thing already exists
// (or is held), to the Agent API that the report is stale (an old attempt,
// an action that moved on), which the agent may drop.
var errorCodes = []errorCode{
	{workflow.ErrUnauthenticated, codes.Unauthenticated, codes.Unauthenticated},
	{workflow.ErrPermission, codes.PermissionDenied, codes.PermissionDenied},
	{workflow.ErrNotReady, codes.FailedPrecondition, codes.FailedPrecondition},
	{workflow.ErrInvalid, codes.InvalidArgument, codes.InvalidArgument},
	{store.ErrNotFound, codes.NotFound, codes.NotFound},
	{store.ErrConflict, codes.AlreadyExists, codes.Aborted},
	{store.ErrInUse, codes.FailedPrecondition, codes.FailedPrecondition},
	{context.Canceled, codes.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded, codes.DeadlineExceeded},
}

// api says which service an error is answered on.
type api int

const (
	adminAPI api = iota
	agentAPI
)

// code is the status code of err on service s: InvalidArgument for a
// request that the adapter itself found invalid (invalidError), else the
// first row of errorCodes that err matches, else Internal.
func code(s api, err error) codes.Code {
	var inv *invalidError
	if errors.As(err, &inv) {
		return codes.InvalidArgument
	}
	for _, row := range errorCodes {
		if errors.Is(err, row.err) {
			if s == agentAPI {
				return row.agent
			}
			return row.admin
		}
	}
	return codes.Internal
}

// statusError turns err into a status error on service s; what says what
// was being done. An error that already is a status is passed on as it is,
// unless it wraps the end of the call's context.
func statusError(s api, what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return status.Error(code(s, err), fmt.Sprintf("%s: %v", what, err))
}

// grpcError maps an error of the Admin API's core to a status.
func grpcError(what string, err error) error { return statusError(adminAPI, what, err) }
