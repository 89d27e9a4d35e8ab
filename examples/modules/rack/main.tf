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

resource "baremetal_hardware" "server" {
  for_each = var.servers

  hostname = each.key
  interfaces = [{
    mac          = each.value.mac
    ip           = each.value.address
    gateway      = each.value.gateway
    name_servers = each.value.name_servers
  }]
  arch  = each.value.arch
  uefi  = each.value.uefi
  disks = each.value.disks

  bmc = {
    driver   = each.value.bmc.driver
    address  = each.value.bmc.address
    port     = each.value.bmc.port
    username = each.value.bmc.username
    password = var.bmc_passwords[each.key]
    verify   = each.value.bmc.verify
  }

  labels   = each.value.labels
  metadata = each.value.metadata
}

resource "baremetal_machine" "server" {
  for_each = var.servers

  hardware_id = baremetal_hardware.server[each.key].id
  template_id = baremetal_template.this.id
  # null, not {}, when there are none: the provider refuses an empty map
  # (provisiond stores none, so {} would show as a change on every plan).
  parameters = length(merge(var.parameters, lookup(var.server_parameters, each.key, {}))) > 0 ? merge(var.parameters, lookup(var.server_parameters, each.key, {})) : null
  user_data  = var.user_data
  ssh_keys   = var.ssh_keys
  wipe       = var.wipe
  wait_for   = var.wait_for

  timeouts {
    create = var.timeouts.create
    update = var.timeouts.update
    delete = var.timeouts.delete
  }
}
