variable "servers" {
  description = "The rack's servers, keyed by host name: boot NIC, address, disks and BMC."
  type = map(object({
    mac          = string
    address      = optional(string) # CIDR, e.g. 10.0.0.21/24; null: the site's DHCP server assigns it (provisiond in proxy mode)
    gateway      = optional(string)
    name_servers = optional(list(string))
    arch         = optional(string, "x86_64")
    uefi         = optional(bool, false)
    disks        = optional(list(string), ["/dev/sda"])
    labels       = optional(map(string))
    metadata     = optional(string, "{}") # JSON served by the metadata service
    bmc = object({
      driver   = optional(string, "ipmi")
      address  = string
      port     = optional(number)
      username = string
      verify   = optional(bool, true)
    })
  }))
}

variable "bmc_passwords" {
  description = "BMC passwords keyed like servers. Kept apart from servers because Terraform cannot for_each over a sensitive value."
  type        = map(string)
  sensitive   = true
}

variable "template" {
  description = "The workflow template every server of the rack is installed with."
  type = object({
    name    = string
    content = string
  })
}

variable "parameters" {
  description = "Template parameters for every machine; changing them reinstalls."
  type        = map(string)
  default     = {}
}

variable "server_parameters" {
  description = "Per-server template parameters keyed like servers, merged over parameters."
  type        = map(map(string))
  default     = {}
}

variable "user_data" {
  description = "User-data served to every machine by the metadata service."
  type        = string
  default     = null
}

variable "ssh_keys" {
  description = "SSH public keys served to every machine (null: none)."
  type        = list(string)
  default     = null
}

variable "wipe" {
  description = "How destroy wipes the disks: none, quick, zero or discard."
  type        = string
  default     = "quick"
}

variable "wait_for" {
  description = "What create waits for: installed, or os_ready (the installed OS phoned home). Null: the provider's default (os_ready when user_data or the template mention /phone-home)."
  type        = string
  default     = null
}

variable "timeouts" {
  description = "How long a machine may take to install, change and reclaim."
  type = object({
    create = optional(string, "60m")
    update = optional(string, "10m")
    delete = optional(string, "30m")
  })
  default = {}
}
