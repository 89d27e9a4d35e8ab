package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"github.com/rackform/terraform-provider-baremetal/provisiond/workflow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusError(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("doing a thing: %w", err) }
	tests := map[string]struct {
		err          error
		admin, agent codes.Code
	}{
		"unauthenticated":       {wrap(workflow.ErrUnauthenticated), codes.Unauthenticated, codes.Unauthenticated},
		"permission":            {wrap(workflow.ErrPermission), codes.PermissionDenied, codes.PermissionDenied},
		"not ready":             {wrap(workflow.ErrNotReady), codes.FailedPrecondition, codes.FailedPrecondition},
		"engine invalid":        {wrap(workflow.ErrInvalid), codes.InvalidArgument, codes.InvalidArgument},
		"adapter invalid":       {wrap(invalid("bad %s", "field")), codes.InvalidArgument, codes.InvalidArgument},
		"not found":             {wrap(store.ErrNotFound), codes.NotFound, codes.NotFound},
		"conflict":              {wrap(store.ErrConflict), codes.AlreadyExists, codes.Aborted},
		"in use":                {wrap(store.ErrInUse), codes.FailedPrecondition, codes.FailedPrecondition},
		"canceled":              {wrap(context.Canceled), codes.Canceled, codes.Canceled},
		"deadline":              {wrap(context.DeadlineExceeded), codes.DeadlineExceeded, codes.DeadlineExceeded},
		"anything else":         {errors.New("disk on fire"), codes.Internal, codes.Internal},
		"agent live (no code)":  {wrap(workflow.ErrAgentLive), codes.Internal, codes.Internal},
		"invalid before stored": {fmt.Errorf("render: %w: %w", workflow.ErrInvalid, store.ErrNotFound), codes.InvalidArgument, codes.InvalidArgument},
		"a status passes":       {status.Error(codes.Unavailable, "bmc down"), codes.Unavailable, codes.Unavailable},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, c := range []struct {
				s    api
				want codes.Code
			}{{adminAPI, tc.admin}, {agentAPI, tc.agent}} {
				got := statusError(c.s, "get thing", tc.err)
				if status.Code(got) != c.want {
					t.Errorf("api %d: code %v, want %v (%v)", c.s, status.Code(got), c.want, got)
				}
				if _, isStatus := status.FromError(tc.err); !isStatus {
					if want := "get thing: " + tc.err.Error(); status.Convert(got).Message() != want {
						t.Errorf("api %d: message %q, want %q", c.s, status.Convert(got).Message(), want)
					}
				}
			}
		})
	}
	if statusError(adminAPI, "x", nil) != nil || statusError(agentAPI, "x", nil) != nil {
		t.Error("statusError(nil) != nil")
	}
}
