variable "endpoint" {
  description = "provisiond's gRPC address."
  type        = string
  default     = "10.99.0.1:7777"
}

variable "provisiond_url" {
  description = "provisiond's HTTP base URL as the servers reach it (--public-ip, --http-listen port): images and phone home."
  type        = string
  default     = "http://10.99.0.1"
}

variable "secrets_dir" {
  description = "Where the API token, provisiond's CA and the BMC password are (the lab writes them)."
  type        = string
  default     = "../../build/demo/secrets"
}

variable "image_sha256" {
  description = "SHA-256 of debian-12.raw.zst (build/images/debian-12.raw.zst.sha256); empty skips the check."
  type        = string
  default     = ""
}

variable "ssh_keys" {
  description = "SSH public keys for the default user, debian."
  type        = list(string)
}

variable "revision" {
  description = "Free text written by the user-data; changing it reinstalls every machine."
  type        = string
  default     = "1"
}

variable "servers" {
  description = "The servers (see examples/modules/rack): a BIOS one with a virtio disk, a UEFI one with an NVMe disk."
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
      disks   = ["/dev/nvme0n1"]
      bmc     = { address = "127.0.0.1", port = 9002, username = "admin" }
    }
  }
}
