# One server of the rack: its hardware and its machine. The rack module
# makes one instance of this module per server, so each machine refers to
# its own hardware alone; a reference into a resource with for_each or
# count (baremetal_hardware.server[each.key]) makes Terraform evaluate
# every instance of it for every machine, and a plan of a big rack then
# takes time that grows with the square of its size.

terraform {
  required_providers {
    baremetal = {
      source = "rackform/baremetal"
    }
  }
}

resource "baremetal_hardware" "this" {
  hostname = var.hostname
  interfaces = [{
    mac          = var.server.mac
    ip           = var.server.address
    gateway      = var.server.gateway
    name_servers = var.server.name_servers
  }]
  arch  = var.server.arch
  uefi  = var.server.uefi
  disks = var.server.disks

  bmc = {
    driver   = var.server.bmc.driver
    address  = var.server.bmc.address
    port     = var.server.bmc.port
    username = var.server.bmc.username
    password = var.bmc_password
    verify   = var.server.bmc.verify
  }

  labels   = var.server.labels
  metadata = var.server.metadata
}

resource "baremetal_machine" "this" {
  hardware_id = baremetal_hardware.this.id
  template_id = var.template_id
  # null, not {}, when there are none: the provider refuses an empty map
  # (provisiond stores none, so {} would show as a change on every plan).
  parameters = length(var.parameters) > 0 ? var.parameters : null
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
