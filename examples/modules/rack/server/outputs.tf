output "machine" {
  description = "The machine: its hardware id, address, state, install time and workflow."
  value = {
    hardware_id    = baremetal_machine.this.hardware_id
    ip             = baremetal_machine.this.ip
    state          = baremetal_machine.this.state
    provisioned_at = baremetal_machine.this.provisioned_at
    workflow_id    = baremetal_machine.this.workflow_id
  }
}
