package api

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCreateTemplateRefusesUnboundedRender: issue 13's attack and its
// variants fail CreateTemplate (and ValidateTemplate) at once with
// InvalidArgument naming the limit, through internal/template.Parse, the
// provider's plan-time check.
func TestCreateTemplateRefusesUnboundedRender(t *testing.T) {
	st := teststore.Open(t)
	a := NewAdmin(st, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	tests := map[string]struct{ fragment, want string }{
		"issue 13":         {`{{ $n := 200000000 }}{{ range $n }}{{ end }}`, "range over $n: more than the limit of 100000 iterations"},
		"nested":           {`{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}`, "more than the limit of 100000 iterations in all"},
		"printf width":     {`{{ printf "%0999999999d" 1 }}`, "is more than the limit of 4096"},
		"recursive define": {`{{ define "r" }}{{ template "r" }}{{ end }}{{ template "r" }}`, "recursion is not supported"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			content := "version: \"0.1\"\nname: t\nglobal_timeout: 60\n" + tc.fragment + "\ntasks:\n  - name: a\n    actions:\n      - name: one\n        image: exec\n        timeout: 10\n        command: [true]\n"
			start := time.Now()
			_, err := a.CreateTemplate(context.Background(), &pb.CreateTemplateRequest{Template: &pb.Template{Name: "t", Content: content}})
			t.Logf("refused in %s: %v", time.Since(start), err)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CreateTemplate = %v, want InvalidArgument containing %q", err, tc.want)
			}
			if _, err := a.ValidateTemplate(context.Background(), &pb.ValidateTemplateRequest{Content: content}); status.Code(err) != codes.InvalidArgument {
				t.Errorf("ValidateTemplate = %v, want InvalidArgument", err)
			}
		})
	}
	all, err := store.Read(context.Background(), st, func(tx *store.Tx) ([]store.Template, error) { return tx.ListTemplates() })
	if err != nil || len(all) != 0 {
		t.Errorf("templates stored: %v, %v; want none", all, err)
	}
}
