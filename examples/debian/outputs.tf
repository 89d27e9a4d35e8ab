output "machines" {
  description = "Each machine's address, state and install time."
  value       = module.rack.machines
}
