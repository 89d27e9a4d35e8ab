# Hardware can be imported by its id ...
terraform import baremetal_hardware.web1 3f2c9b1e7a0d4c55b6e1a2f9d8c7b6a5

# ... or by the MAC address of one of its interfaces.
terraform import baremetal_hardware.web1 52:54:00:12:34:56
