resource "baremetal_template" "ubuntu" {
  name    = "ubuntu-24.04"
  content = <<-EOT
    version: "0.1"
    name: ubuntu-24.04
    global_timeout: 1800
    tasks:
      - name: install
        worker: "{{ .Hardware.MAC }}"
        actions:
          - name: stream-image
            image: quay.io/tinkerbell/actions/image2disk:v1.0.0
            timeout: 900
            environment:
              IMG_URL: "{{ .Params.image_url }}"
              DEST_DISK: "{{ .Hardware.Disks 0 }}"
              COMPRESSED: "true"
          - name: hostname
            image: writefile
            timeout: 60
            environment:
              DEST_DISK: "{{ formatPartition (.Hardware.Disks 0) 1 }}"
              FS_TYPE: ext4
              DEST_PATH: /etc/hostname
              CONTENTS: "{{ .Hardware.Hostname }}"
  EOT
}
