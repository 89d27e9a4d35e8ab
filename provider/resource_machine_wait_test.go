package provider

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTimedOut: provisiond can end a watch with DeadlineExceeded a moment
// before the provider's own context expires; that is a timeout too.
func TestTimedOut(t *testing.T) {
	live := context.Background()
	expired, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-expired.Done()
	for name, tc := range map[string]struct {
		ctx  context.Context
		err  error
		want bool
	}{
		"no error":                   {expired, nil, false},
		"context deadline":           {live, fmt.Errorf("watch: %w", context.DeadlineExceeded), true},
		"ctx expired, stream reset":  {expired, status.Error(codes.Canceled, "RST_STREAM"), true},
		"server's deadline first":    {live, fmt.Errorf("watch workflow x: %w", status.Error(codes.DeadlineExceeded, "stream terminated")), true},
		"another error, ctx running": {live, status.Error(codes.Unavailable, "gone"), false},
	} {
		if got := timedOut(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: timedOut = %v, want %v", name, got, tc.want)
		}
	}
}
