# Debian 12 cloud image target. The top GNUmakefile includes this file:
#   include internal/osbuild/debian-image.mk
# Needs root (debootstrap) and the Debian packages debootstrap, gdisk,
# e2fsprogs, dosfstools, mtools, grub-pc-bin, grub-efi-amd64-bin, zstd
# (all in DEB_PACKAGES). See internal/osbuild/README.md.

BUILD_DIR      ?= build
DEBIAN_MIRROR  ?= http://deb.debian.org/debian
DEBIAN_SUITE   ?= bookworm
# The NoCloud seed URL written into the image as the default (an install
# template normally overwrites it with provisiond's own address).
DEBIAN_METADATA_URL ?= http://169.254.169.254/nocloud/
DEBIAN_IMAGE   := $(BUILD_DIR)/images/debian-12.raw.zst

.PHONY: debian-image
debian-image: ## Build build/images/debian-12.raw.zst (+ .sha256 of the .zst): Debian 12, GRUB BIOS+UEFI, cloud-init (root; cached).
	DEBIAN_MIRROR=$(DEBIAN_MIRROR) DEBIAN_SUITE=$(DEBIAN_SUITE) METADATA_URL=$(DEBIAN_METADATA_URL) \
	CACHE_DIR=$(BUILD_DIR)/cache WORK_DIR=$(BUILD_DIR)/debian-image.work \
		internal/osbuild/debian-image.sh $(DEBIAN_IMAGE)

# The packages provisiond's .deb depends on (packaging/debian/control.in)
# that the image lacks, with their dependencies: TestE2EPackage installs
# the .deb on a booted copy of the image, which has no network.
DEBIAN_IMAGE_DEBS := $(BUILD_DIR)/images/debian-12-debs
PROVISIOND_DEPENDS = $(shell sed -n 's/^Depends: //p' packaging/debian/control.in | tr -d ,)

.PHONY: debian-image-debs
debian-image-debs: debian-image ## Download into build/images/debian-12-debs the .debs the package needs and the Debian image lacks (root; cached).
	internal/osbuild/image-debs.sh $(DEBIAN_IMAGE) $(DEBIAN_IMAGE_DEBS) $(PROVISIOND_DEPENDS)
