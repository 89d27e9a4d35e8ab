# Exactly one of id, mac or hostname.
data "baremetal_hardware" "by_mac" {
  mac = "52:54:00:12:34:56"
}

output "bmc_address" {
  value = data.baremetal_hardware.by_mac.bmc.address
}
