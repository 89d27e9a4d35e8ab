output "machines" {
  description = "Each machine's address, state, install time and workflow, keyed by host name."
  value = {
    for name, m in baremetal_machine.server : name => {
      hardware_id    = m.hardware_id
      ip             = m.ip
      state          = m.state
      provisioned_at = m.provisioned_at
      workflow_id    = m.workflow_id
    }
  }
}

output "template_id" {
  description = "The id of the rack's template."
  value       = baremetal_template.this.id
}
