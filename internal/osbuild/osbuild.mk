# Agent OS and demo OS image targets. The top GNUmakefile includes this file:
#   include internal/osbuild/osbuild.mk
# Needs GO and the Debian tools dpkg-deb and apt-get (download only, no root),
# grub-mkimage (grub-common) for the arm64 GRUB loader;
# demo-image also needs dosfstools, mtools, syslinux and systemd-boot-efi.

BUILD_DIR     ?= build
KERNEL_CACHE  ?= $(BUILD_DIR)/cache
# Set KERNEL_DEB=path/to/linux-image-*.deb or KERNEL_DIR=tree (bring your own
# kernel, see internal/osbuild/README.md) to skip the apt download.
KERNEL_DEB    ?=
KERNEL_DIR    ?=
# BUSYBOX=path/to/static/busybox skips the busybox-static download;
# FIRMWARE_DIR=dir ships firmware blobs as lib/firmware; AGENT_OS_FLAGS adds
# more mkagentos flags (e.g. -extra-modules mlx4_en,qla2xxx -compress gzip).
BUSYBOX       ?=
FIRMWARE_DIR  ?=
AGENT_OS_FLAGS ?=
OSBUILD_GO    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w'
KERNEL_SOURCE  = $(if $(KERNEL_DIR),-kernel-dir $(KERNEL_DIR),-kernel-deb $(or $(KERNEL_DEB),$$(internal/osbuild/kernel-deb.sh $(KERNEL_CACHE))))
# The arm64 agent OS (build/agent-os/arm64/) takes Debian's arm64 packages
# (dpkg --add-architecture arm64, which `make deps` does); KERNEL_DEB_ARM64
# and BUSYBOX_ARM64 bring your own as above.
KERNEL_DEB_ARM64 ?=
BUSYBOX_ARM64    ?=

.PHONY: agent-os
agent-os: agent-os-amd64 agent-os-arm64 ## Build the agent OS of both architectures: build/agent-os/ (amd64) and build/agent-os/arm64/.

.PHONY: agent-os-amd64
agent-os-amd64: ## Build build/agent-os/{vmlinuz,initramfs} (Debian kernel + modules, busybox-static, static agent as /init), reproducibly.
	@mkdir -p $(BUILD_DIR)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o $(BUILD_DIR)/agent ./agent
	$(OSBUILD_GO) -o $(BUILD_DIR)/mkagentos ./internal/osbuild/cmd/mkagentos
	$(BUILD_DIR)/mkagentos $(KERNEL_SOURCE) -init $(BUILD_DIR)/agent -out $(BUILD_DIR)/agent-os \
		-busybox $(or $(BUSYBOX),$$(internal/osbuild/busybox-deb.sh $(KERNEL_CACHE))) \
		$(if $(FIRMWARE_DIR),-firmware-dir $(FIRMWARE_DIR)) $(AGENT_OS_FLAGS)

.PHONY: agent-os-arm64
agent-os-arm64: ## Build build/agent-os/arm64/{vmlinuz,initramfs} (Debian arm64 kernel and busybox-static, GOARCH=arm64 agent) and its GRUB netboot loader grubnetaa64.efi.
	@mkdir -p $(BUILD_DIR)
	CGO_ENABLED=0 GOARCH=arm64 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o $(BUILD_DIR)/agent-arm64 ./agent
	$(OSBUILD_GO) -o $(BUILD_DIR)/mkagentos ./internal/osbuild/cmd/mkagentos
	$(BUILD_DIR)/mkagentos -arch arm64 -kernel-deb $(or $(KERNEL_DEB_ARM64),$$(internal/osbuild/kernel-deb.sh $(KERNEL_CACHE) arm64)) \
		-init $(BUILD_DIR)/agent-arm64 -out $(BUILD_DIR)/agent-os/arm64 \
		-busybox $(or $(BUSYBOX_ARM64),$$(internal/osbuild/busybox-deb.sh $(KERNEL_CACHE) arm64)) $(AGENT_OS_FLAGS)
	internal/osbuild/grub-arm64.sh $(KERNEL_CACHE) $(BUILD_DIR)/agent-os/arm64/grubnetaa64.efi

.PHONY: demo-image
demo-image: ## Build build/images/demo-os.raw, the small OS the demo installs (BIOS and UEFI; prints hostname and user-data).
	@mkdir -p $(BUILD_DIR)
	$(OSBUILD_GO) -o $(BUILD_DIR)/demoinit ./internal/demoinit
	$(OSBUILD_GO) -o $(BUILD_DIR)/mkdemoimage ./internal/osbuild/cmd/mkdemoimage
	$(BUILD_DIR)/mkdemoimage $(KERNEL_SOURCE) -init $(BUILD_DIR)/demoinit -out $(BUILD_DIR)/images/demo-os.raw
