# Templates are imported by id.
terraform import baremetal_template.ubuntu 9a8b7c6d5e4f30211f2e3d4c5b6a7980
