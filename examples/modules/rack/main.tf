terraform {
  required_providers {
    baremetal = {
      source = "rackform/baremetal"
    }
  }
}

resource "baremetal_template" "this" {
  name    = var.template.name
  content = var.template.content
}

# One instance of ./server per server: see there why not for_each over
# the two resources here.
module "server" {
  source   = "./server"
  for_each = var.servers

  hostname     = each.key
  server       = each.value
  bmc_password = var.bmc_passwords[each.key]
  template_id  = baremetal_template.this.id
  parameters   = merge(var.parameters, lookup(var.server_parameters, each.key, {}))
  user_data    = var.user_data
  ssh_keys     = var.ssh_keys
  wipe         = var.wipe
  wait_for     = var.wait_for
  timeouts     = var.timeouts
}
