// Command terraform-provider-floor serves the benchmarks' floor provider
// (package benchfloor) as Terraform runs plugins; nothing ships it.
package main

import (
	"context"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/rackform/terraform-provider-baremetal/internal/pluginlog"
	"github.com/rackform/terraform-provider-baremetal/provider/internal/benchfloor"
)

func main() {
	// Logging as the baremetal provider's: off when the CLI shows none.
	pluginlog.Quiet("floor")
	err := providerserver.Serve(context.Background(), benchfloor.New, providerserver.ServeOpts{
		Address:         benchfloor.Address,
		ProtocolVersion: 6,
	})
	if err != nil {
		log.Fatal(err)
	}
}
