# The demo rack: `make demo` starts a lab (QEMU servers behind ipmi_sim BMCs
# and provisiond, in a network namespace) and applies this configuration
# with the terraform wrapper it writes to build/demo/terraform.
terraform {
  required_providers {
    baremetal = {
      source = "rackform/baremetal"
    }
  }
}

provider "baremetal" {
  endpoint = var.endpoint
  token    = trimspace(file("${var.secrets_dir}/token"))
  ca_cert  = file("${var.secrets_dir}/ca.pem")
}

module "rack" {
  source = "../modules/rack"

  servers       = var.servers
  bmc_passwords = { for name in keys(var.servers) : name => trimspace(file("${var.secrets_dir}/bmc-password")) }

  template = {
    name    = "demo-os"
    content = file("${path.module}/../templates/demo-os.yaml")
  }
  parameters = {
    image    = "demo-os.raw"
    revision = var.revision
  }
  server_parameters = { for name, rev in var.server_revisions : name => { revision = rev } }
  user_data         = <<-EOT
    #cloud-config
    # Installed by terraform-provider-baremetal, revision ${var.revision}.
  EOT

  timeouts = {
    create = "20m"
    delete = "15m"
  }
}
