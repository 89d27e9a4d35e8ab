output "machines" {
  description = "Each machine's address, state, install time and workflow, keyed by host name."
  value       = { for name, s in module.server : name => s.machine }
}

output "template_id" {
  description = "The id of the rack's template."
  value       = baremetal_template.this.id
}
