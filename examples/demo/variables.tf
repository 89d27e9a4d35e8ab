variable "endpoint" {
  description = "provisiond's gRPC address in the lab."
  type        = string
  default     = "10.99.0.1:7777"
}

variable "secrets_dir" {
  description = "Where the lab wrote the API token, its CA and the BMC password."
  type        = string
  default     = "../../build/demo/secrets"
}

variable "revision" {
  description = "Free text passed to the template; changing it reinstalls every machine."
  type        = string
  default     = "1"
}

variable "server_revisions" {
  description = "Per-server revisions, overriding revision: changing one reinstalls only that server."
  type        = map(string)
  default     = {}
}

variable "servers" {
  description = "The lab's servers (see internal/lab: node-N, MAC 52:54:00:b0:00:0N, BMC port 900N; even nodes boot UEFI)."
  type        = any
  default = {
    node-1 = {
      mac     = "52:54:00:b0:00:01"
      address = "10.99.0.11/24"
      gateway = "10.99.0.1"
      uefi    = false
      disks   = ["/dev/vda"]
      bmc     = { address = "127.0.0.1", port = 9001, username = "admin" }
    }
    node-2 = {
      mac     = "52:54:00:b0:00:02"
      address = "10.99.0.12/24"
      gateway = "10.99.0.1"
      uefi    = true
      disks   = ["/dev/vda"]
      bmc     = { address = "127.0.0.1", port = 9002, username = "admin" }
    }
    node-3 = {
      mac     = "52:54:00:b0:00:03"
      address = "10.99.0.13/24"
      gateway = "10.99.0.1"
      uefi    = false
      disks   = ["/dev/vda"]
      bmc     = { address = "127.0.0.1", port = 9003, username = "admin" }
    }
  }
}
