# The rack module's variables for one server; see ../variables.tf.

variable "hostname" {
  type = string
}

variable "server" {
  description = "One entry of the rack's servers, its optional attributes filled in by ../variables.tf."
  type        = any
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
