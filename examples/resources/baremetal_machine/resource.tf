resource "baremetal_machine" "web1" {
  hardware_id = baremetal_hardware.web1.id
  template_id = baremetal_template.ubuntu.id

  parameters = {
    image_url = "http://provisiond.example.net:8080/images/ubuntu-24.04.raw.gz"
  }
  # Secrets the template reads as {{ .Params.NAME }} too, never shown in plans.
  sensitive_parameters = {
    root_password_hash = var.root_password_hash
  }
  user_data = file("${path.module}/cloud-init.yaml")
  ssh_keys  = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIoidCV/73QIZBSqVAvlX7zvIZg8tOFJHDUjGpScR1Oc ops@example.net"]

  wipe  = "quick"
  power = "on"

  # Wait until the installed OS phones home (cloud-init's phone_home to
  # http://PROVISIOND:8080/phone-home/$INSTANCE_ID in cloud-init.yaml), not
  # only until the install succeeded. Unset: "os_ready" when the user data
  # or the template mention /phone-home, else "installed".
  wait_for = "os_ready"

  timeouts {
    create = "45m"
    delete = "20m"
  }
}

variable "root_password_hash" {
  type      = string
  sensitive = true
}

# With Terraform 1.11 or later, user data that holds secrets can stay out
# of state: user_data_wo = file(...) with user_data_wo_version = 1 in place
# of user_data; bump the version to reinstall with new user data.

# A machine that reinstalls in place: a change of its image (or template,
# user data, SSH keys) runs the install again on the same machine, with no
# destroy and no wipe boot first. With preserve_data = false (the default)
# the install's first action wipes the disks quick; true keeps what they
# hold, for templates that install over it. Its hardware is managed by
# another configuration: a data source finds it.
data "baremetal_hardware" "ci_runner" {
  hostname = "ci-runner-1"
}

resource "baremetal_machine" "ci_runner" {
  hardware_id = data.baremetal_hardware.ci_runner.id
  template_id = baremetal_template.ubuntu.id
  parameters = {
    image_url = "http://provisiond.example.net:8080/images/ubuntu-24.04.raw.gz"
  }
  reinstall = {
    enabled       = true
    preserve_data = false
  }
  timeouts {
    update = "45m" # bounds a reinstall
  }
}

output "web1_ip" {
  value = baremetal_machine.web1.ip
}
