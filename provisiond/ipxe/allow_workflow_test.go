package ipxe_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rackform/terraform-provider-baremetal/internal/testkit/teststore"
	"github.com/rackform/terraform-provider-baremetal/provisiond/ipxe"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// runningTokens is a workflow engine with a workflow running for every
// hardware: it mints whenever asked, and counts.
type runningTokens struct{ minted atomic.Int32 }

func (r *runningTokens) MintAgentToken(context.Context, string) (string, string, error) {
	r.minted.Add(1)
	return "wf-1", "tok_0123456789abcdef", nil
}

// TestAllowWorkflowGatesTheAgent: netboot.allow_pxe lets a server
// netboot (DHCP hands out the boot file, /ipxe/{mac} answers), while
// netboot.allow_workflow decides whether that script boots the agent OS
// with a token or sends the server to its local disk (Tinkerbell's
// allowPXE and allowWorkflow). A server that may netboot but not run a
// workflow gets no token minted at all.
func TestAllowWorkflowGatesTheAgent(t *testing.T) {
	st := teststore.Open(t)
	macs := map[store.Netboot]string{
		{AllowPXE: true, AllowWorkflow: true}:  "52:54:00:00:01:01",
		{AllowPXE: true, AllowWorkflow: false}: "52:54:00:00:01:02",
		{AllowPXE: false, AllowWorkflow: true}: "52:54:00:00:01:03",
		{}:                                     "52:54:00:00:01:04",
	}
	err := st.Update(context.Background(), func(tx *store.Tx) error {
		for nb, mac := range macs {
			h := store.Hardware{ID: "hw-" + strings.ReplaceAll(mac[12:], ":", ""), Interfaces: []store.Interface{{MAC: mac}}, Netboot: nb}
			if err := tx.CreateHardware(h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		netboot store.Netboot
		agent   bool
	}{
		"pxe and workflow: agent OS":       {netboot: store.Netboot{AllowPXE: true, AllowWorkflow: true}, agent: true},
		"pxe without workflow: local disk": {netboot: store.Netboot{AllowPXE: true}},
		"workflow without pxe: local disk": {netboot: store.Netboot{AllowWorkflow: true}},
		"neither: local disk":              {netboot: store.Netboot{}},
	} {
		t.Run(name, func(t *testing.T) {
			tokens := &runningTokens{}
			h := ipxe.New(st, tokens, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, ipxe.Options{
				GRPCAddr: "192.0.2.1:50051", HTTPBase: "http://192.0.2.1:8080", AnySource: true, // the source check has tests of its own
			})
			mux := http.NewServeMux()
			h.Register(mux)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ipxe/"+macs[tc.netboot], nil))
			body := rec.Body.String()
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, body)
			}
			booted := strings.Contains(body, "\nkernel ")
			if booted != tc.agent {
				t.Errorf("agent OS booted = %v, want %v; script:\n%s", booted, tc.agent, body)
			}
			if strings.Contains(body, "bm.token=") != tc.agent {
				t.Errorf("token in the script = %v, want %v", !tc.agent, tc.agent)
			}
			wantMinted := int32(0)
			if tc.agent {
				wantMinted = 1
			}
			if got := tokens.minted.Load(); got != wantMinted {
				t.Errorf("tokens minted: %d, want %d", got, wantMinted)
			}
		})
	}
}
