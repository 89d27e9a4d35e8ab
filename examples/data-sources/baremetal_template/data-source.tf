# Exactly one of id or name.
data "baremetal_template" "ubuntu" {
  name = "ubuntu-24.04"
}

output "ubuntu_actions" {
  value = flatten([for t in data.baremetal_template.ubuntu.tasks : t.actions])
}
