# A machine is imported by its hardware id.
terraform import baremetal_machine.web1 3f2c9b1e7a0d4c55b6e1a2f9d8c7b6a5
