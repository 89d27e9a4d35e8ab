# The rack module's variables for one server; see ../variables.tf.

variable "hostname" {
  type = string
}

variable "server" {
  type = object({
    mac          = string
    address      = optional(string)
    gateway      = optional(string)
    name_servers = optional(list(string))
    arch         = optional(string, "x86_64")
    uefi         = optional(bool, false)
    disks        = optional(list(string), ["/dev/sda"])
    labels       = optional(map(string))
    metadata     = optional(string, "{}")
    bmc = object({
      driver   = optional(string, "ipmi")
      address  = string
      port     = optional(number)
      username = string
      verify   = optional(bool, true)
    })
  })
}

variable "bmc_password" {
  type      = string
  sensitive = true
}

variable "template_id" {
  type = string
}

variable "parameters" {
  type = map(string)
}

variable "user_data" {
  type = string
}

variable "ssh_keys" {
  type = list(string)
}

variable "wipe" {
  type = string
}

variable "wait_for" {
  type = string
}

variable "timeouts" {
  type = object({
    create = string
    update = string
    delete = string
  })
}
