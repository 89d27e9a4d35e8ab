// Package templates holds the example workflow templates, embedded so
// that provisiond runs the very file users read: Wipe is the deprovision
// workflow of `terraform destroy`.
package templates

import _ "embed"

// Wipe is wipe.yaml: the deprovision workflow provisiond runs itself.
//
//go:embed wipe.yaml
var Wipe string
