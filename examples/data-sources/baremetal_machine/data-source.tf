data "baremetal_machine" "web1" {
  hardware_id = "3f2c9b1e7a0d4c55b6e1a2f9d8c7b6a5"
}

output "web1_state" {
  value = data.baremetal_machine.web1.state
}
