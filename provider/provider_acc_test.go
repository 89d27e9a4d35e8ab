package provider

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

const oneTemplate = `
resource "baremetal_template" "t" {
  name    = "t"
  content = "version: \"0.1\"\nname: t\nglobal_timeout: 60\ntasks:\n  - name: a\n    actions:\n      - name: one\n        image: exec\n        timeout: 10\n        command: [\"true\"]\n"
}
`

// TestAccProviderErrors: each way of failing to reach provisiond gives a
// diagnostic that says which, never an opaque deadline.
func TestAccProviderErrors(t *testing.T) {
	requireAcc(t)
	d := startDaemon(t, nil)
	// A port that was free a moment ago: nothing listens there.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, []byte(d.PKI.OtherCACert), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		provider string
		want     string
	}{
		"wrong token": {
			provider: fmt.Sprintf("provider \"baremetal\" {\n endpoint = %q\n token = \"wrong\"\n ca_cert = file(%q)\n}\n", d.Endpoint, d.PKI.CACertFile),
			want:     `(?s)refused the credentials.*Unauthenticated`,
		},
		"unreachable": {
			provider: fmt.Sprintf("provider \"baremetal\" {\n endpoint = %q\n token = \"x\"\n ca_cert = file(%q)\n}\n", closed, d.PKI.CACertFile),
			want:     `(?s)Cannot connect to provisiond.*Nothing listens at that address`,
		},
		"untrusted certificate": {
			provider: fmt.Sprintf("provider \"baremetal\" {\n endpoint = %q\n token = %q\n ca_cert = file(%q)\n}\n", d.Endpoint, d.Token, otherCA),
			want:     `(?s)Cannot connect to provisiond.*This is a TLS problem`,
		},
		"plain text to a TLS server": {
			provider: fmt.Sprintf("provider \"baremetal\" {\n endpoint = \"http://%s\"\n token = %q\n}\n", d.Endpoint, d.Token),
			want:     `(?s)Cannot connect to provisiond`,
		},
		"no endpoint": {
			provider: "provider \"baremetal\" {\n token = \"x\"\n}\n",
			want:     `Missing provisiond endpoint`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			if name == "no endpoint" && os.Getenv("BAREMETAL_ENDPOINT") != "" {
				t.Skip("BAREMETAL_ENDPOINT is set in the environment")
			}
			resource.Test(t, resource.TestCase{
				PreCheck:                 preCheck(t),
				ProtoV6ProviderFactories: protoV6,
				Steps: []resource.TestStep{{
					Config:      hcl(tc.provider, oneTemplate),
					ExpectError: regexp.MustCompile(tc.want),
				}},
			})
		})
	}
}
