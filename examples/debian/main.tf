# Debian 12 on real-shaped servers, installed the way Tinkerbell users write
# it: examples/templates/debian-hub.yaml as is (image2disk of the cloud image
# with its sha256, writefile of cloud-init's datasource, cexec in the
# chroot, kexec into the installed kernel). cloud-init then sets the host
# name, installs the SSH key, runs the user-data below, grows the root and
# phones home; terraform apply returns once it has (wait_for = "os_ready").
#
# The image is `make debian-image` (build/images/debian-12.raw.zst, served by
# provisiond under /images/); the e2e test (e2e/debian_test.go) applies this
# configuration in the lab. On your own rack set servers, endpoint and the
# secrets, and image_sha256 to the content of debian-12.raw.zst.sha256.
terraform {
  required_providers {
    baremetal = {
      source = "rackform/baremetal"
    }
  }
}

provider "baremetal" {
  endpoint = var.endpoint
  token    = trimspace(file("${var.secrets_dir}/token"))
  ca_cert  = file("${var.secrets_dir}/ca.pem")
}

module "rack" {
  source = "../modules/rack"

  servers       = var.servers
  bmc_passwords = { for name in keys(var.servers) : name => trimspace(file("${var.secrets_dir}/bmc-password")) }

  template = {
    name    = "debian-hub"
    content = file("${path.module}/../templates/debian-hub.yaml")
  }
  parameters = {
    image_url    = "${var.provisiond_url}/images/debian-12.raw.zst"
    image_sha256 = var.image_sha256 # of the .zst: what image2disk downloads
    # The image: p1 BIOS boot, p2 ESP, p3 ext4 root holding /boot, with
    # Debian's /vmlinuz and /initrd.img links to the current kernel.
    root_partition = "3"
    kernel_path    = "/vmlinuz"
    initrd_path    = "/initrd.img"
  }
  ssh_keys  = var.ssh_keys
  user_data = <<-EOT
    #cloud-config
    write_files:
      - path: /var/lib/baremetal/installed-by
        content: "terraform, revision ${var.revision}\n"
    phone_home:
      url: ${var.provisiond_url}/phone-home/$INSTANCE_ID
      post: [instance_id, hostname, fqdn]
      tries: 10
  EOT
  wait_for  = "os_ready"

  timeouts = {
    create = "25m"
    delete = "15m"
  }
}
