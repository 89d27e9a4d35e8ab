// Package pluginlog sets a provider plugin's log levels from what the CLI
// that runs it will show.
package pluginlog

import (
	"os"
	"strings"
)

// Quiet turns off the plugin's terraform-plugin-log output (its own logs
// and the SDK's) when the CLI will discard it anyway. Terraform and
// OpenTofu show a plugin's log only when TF_LOG or TF_LOG_PROVIDER is set
// in their environment, which the plugin inherits; without a level
// terraform-plugin-log logs everything at TRACE, and the framework writes
// some 200 JSON lines for every resource of every plan (a line per
// attribute validator and plan modifier), which the plugin encodes and
// the CLI reads and parses only to drop them: most of a no-change plan
// of a thousand resources. A level set explicitly (TF_LOG_SDK,
// TF_LOG_PROVIDER_NAME) is kept; empty is none, as for Terraform. name is the provider's name as in
// TF_LOG_PROVIDER_NAME ("baremetal").
func Quiet(name string) {
	if os.Getenv("TF_LOG") != "" || os.Getenv("TF_LOG_PROVIDER") != "" {
		return
	}
	for _, k := range []string{"TF_LOG_SDK", "TF_LOG_PROVIDER_" + strings.ToUpper(name)} {
		if os.Getenv(k) == "" {
			_ = os.Setenv(k, "off")
		}
	}
}
