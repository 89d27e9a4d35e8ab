# Exactly one of id, mac, hostname or with_labels.
data "baremetal_hardware" "by_mac" {
  mac = "52:54:00:12:34:56"
}

output "bmc_address" {
  value = data.baremetal_hardware.by_mac.bmc.address
}

# The only hardware that carries both labels (others may carry more).
data "baremetal_hardware" "db" {
  with_labels = { rack = "r12", role = "db" }
}

output "db_ip" {
  value = data.baremetal_hardware.db.interfaces[0].ip
}
