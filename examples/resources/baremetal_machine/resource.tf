resource "baremetal_machine" "web1" {
  hardware_id = baremetal_hardware.web1.id
  template_id = baremetal_template.ubuntu.id

  parameters = {
    image_url = "http://provisiond.example.net:8080/images/ubuntu-24.04.raw.gz"
  }
  user_data = file("${path.module}/cloud-init.yaml")
  ssh_keys  = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnly ops@example.net"]

  wipe  = "quick"
  power = "on"

  timeouts {
    create = "45m"
    delete = "20m"
  }
}

output "web1_ip" {
  value = baremetal_machine.web1.ip
}
