terraform {
  required_providers {
    baremetal = {
      source = "rackform/baremetal"
    }
  }
}

# Every setting can also come from the environment: BAREMETAL_ENDPOINT,
# BAREMETAL_TOKEN, BAREMETAL_CA_CERT, BAREMETAL_CLIENT_CERT,
# BAREMETAL_CLIENT_KEY and BAREMETAL_INSECURE.
provider "baremetal" {
  endpoint = "provisiond.example.net:7777"
  token    = var.provisiond_token
  ca_cert  = file("${path.module}/provisiond-ca.pem")
}

variable "provisiond_token" {
  type      = string
  sensitive = true
}
