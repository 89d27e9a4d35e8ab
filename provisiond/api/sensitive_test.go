package api

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

// TestSensitiveParametersNotReturned: a machine's secret parameters are
// rendered into its workflow but never handed back by the Admin API.
func TestSensitiveParametersNotReturned(t *testing.T) {
	params := map[string]string{"image": "v1", "root_password": "s3cret"}
	m := store.Machine{HardwareID: "n1", Parameters: params, SensitiveKeys: []string{"root_password"}}
	w := store.Workflow{ID: "wf", HardwareID: "n1", Parameters: params, SensitiveKeys: []string{"root_password"}}
	out := MachineToPB(m, &w)
	want := map[string]string{"image": "v1"}
	if diff := cmp.Diff(want, out.GetParameters()); diff != "" {
		t.Errorf("machine parameters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, out.GetWorkflow().GetParameters()); diff != "" {
		t.Errorf("workflow parameters (-want +got):\n%s", diff)
	}
	if params["root_password"] != "s3cret" {
		t.Error("the stored parameters were changed")
	}
}
