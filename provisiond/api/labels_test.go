package api

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
)

// TestListHardwareLabels: ListHardware returns the hardware that carries
// every asked label with its value; a label asked with an empty value
// matches only hardware that has that label.
func TestListHardwareLabels(t *testing.T) {
	ctx := context.Background()
	admin := NewAdmin(teststore.Open(t), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	for i, labels := range []map[string]string{
		{"rack": "r1", "role": "web"},
		{"rack": "r1", "role": "db", "spare": ""},
		{"rack": "r2", "role": "web"},
		nil,
	} {
		id := string(rune('a' + i))
		h := &pb.Hardware{Id: id, Interfaces: []*pb.Interface{{Mac: "52:54:00:00:00:0" + string(rune('1'+i))}}, Labels: labels}
		if _, err := admin.CreateHardware(ctx, &pb.CreateHardwareRequest{Hardware: h}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		labels map[string]string
		want   []string
	}{
		{nil, []string{"a", "b", "c", "d"}},
		{map[string]string{"rack": "r1"}, []string{"a", "b"}},
		{map[string]string{"rack": "r1", "role": "web"}, []string{"a"}},
		{map[string]string{"role": "web"}, []string{"a", "c"}},
		{map[string]string{"spare": ""}, []string{"b"}},
		{map[string]string{"rack": "r3"}, nil},
	} {
		resp, err := admin.ListHardware(ctx, &pb.ListHardwareRequest{Labels: tc.labels})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, h := range resp.GetHardware() {
			got = append(got, h.GetId())
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("labels %v: got %v, want %v", tc.labels, got, tc.want)
		}
	}
}
