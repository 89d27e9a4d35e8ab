resource "baremetal_hardware" "web1" {
  hostname = "web1"
  interfaces = [{
    mac          = "52:54:00:12:34:56"
    ip           = "10.0.0.21/24"
    gateway      = "10.0.0.1"
    name_servers = ["10.0.0.1"]
  }]
  disks = ["/dev/sda"]

  bmc = {
    driver   = "ipmi"
    address  = "10.0.100.21"
    username = "admin"
    password = var.bmc_password
    # With Terraform 1.11 or later, keep the password out of state instead:
    #   password_wo         = var.bmc_password
    #   password_wo_version = 1
  }

  labels   = { rack = "r12", role = "web" }
  metadata = jsonencode({ environment = "production" })
}

variable "bmc_password" {
  type      = string
  sensitive = true
}
