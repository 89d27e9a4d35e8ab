#!/bin/bash
# debian-image.sh: build a bootable Debian 12 (bookworm) disk image with
# debootstrap: GPT, BIOS boot partition + ESP (vfat) + ext4 root, GRUB for
# legacy BIOS and UEFI (removable path), the Debian kernel, systemd,
# cloud-init and openssh-server. See internal/osbuild/README.md.
#
#   debian-image.sh OUT.raw.zst
#
# Environment: DEBIAN_MIRROR (default deb.debian.org), DEBIAN_SUITE
# (bookworm), CACHE_DIR (debootstrap tarball and stamps), WORK_DIR (scratch,
# deleted afterwards), METADATA_URL (the default NoCloud seed URL written
# into the image), ROOT_FREE_MIB (free space left on the root file system).
#
# Needs root (debootstrap and chroot), debootstrap, sgdisk, mkfs.ext4,
# mkfs.vfat, mcopy, grub-mkimage with grub-pc-bin and grub-efi-amd64-bin,
# zstd. The host's own file systems are never touched: the partitions are
# built as files (mkfs.ext4 -d, mkfs.vfat + mcopy) and copied into the disk
# file at their offsets; no loop device, no mount outside the chroot.
set -euo pipefail

out=${1:?usage: debian-image.sh OUT.raw.zst}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
cache=${CACHE_DIR:-build/cache}
work=${WORK_DIR:-build/debian-image.work}
metadata_url=${METADATA_URL:-http://169.254.169.254/nocloud/}
root_free_mib=${ROOT_FREE_MIB:-160}
here=$(cd "$(dirname "$0")" && pwd)

# What goes in besides --variant=minbase. No recommends.
packages=(
	linux-image-amd64 initramfs-tools
	systemd systemd-sysv systemd-resolved udev dbus
	cloud-init cloud-guest-utils openssh-server sudo
	iproute2 netbase isc-dhcp-client
	# debootstrap does not resolve virtual packages: python3-cryptography
	# needs python3-cffi-backend-api-{min,max}, provided by this one.
	python3-cffi-backend
)

if [ "$(id -u)" != 0 ]; then
	echo "debian-image: debootstrap needs root" >&2
	exit 1
fi
for t in debootstrap sgdisk mkfs.ext4 mkfs.vfat mcopy grub-mkimage zstd sha256sum; do
	command -v "$t" >/dev/null || { echo "debian-image: $t missing (make deps)" >&2; exit 1; }
done
for d in /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi; do
	[ -d "$d" ] || { echo "debian-image: $d missing (grub-pc-bin, grub-efi-amd64-bin)" >&2; exit 1; }
done

# The stamp: this script and the files it copies in, the package list, the
# mirror and suite, and the cloud-init defaults. Same stamp and the output is there: nothing to do.
mkdir -p "$cache" "$(dirname "$out")"
stamp=$( { cat "$0" "$here"/debian-image/*; echo "${packages[*]}" "$mirror" "$suite" "$metadata_url" "$root_free_mib"; } | sha256sum | cut -c1-16)
if [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; then
	echo "debian-image: $out is up to date (stamp $stamp)"
	exit 0
fi
start=$(date +%s)

# The .debs, downloaded once per package list and mirror.
include=$(IFS=,; echo "${packages[*]}")
debs_key=$(echo "$include" "$mirror" "$suite" | sha256sum | cut -c1-16)
tarball=$cache/debootstrap-$suite-$debs_key.tgz
if [ ! -f "$tarball" ]; then
	rm -rf "$work"
	mkdir -p "$work"
	debootstrap --variant=minbase --include="$include" \
		--make-tarball="$tarball.tmp" "$suite" "$work/tarball-root" "$mirror"
	mv "$tarball.tmp" "$tarball"
fi

rm -rf "$work"
mkdir -p "$work"
root=$work/root
cleanup() {
	[ -f "$root/debootstrap/debootstrap.log" ] && cp "$root/debootstrap/debootstrap.log" "$cache/debootstrap-failed.log"
	for m in dev/pts dev proc sys; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
	done
	rm -rf "$work"
}
trap cleanup EXIT

debootstrap --variant=minbase --include="$include" --unpack-tarball="$(realpath "$tarball")" \
	"$suite" "$root" "$mirror"

uuid() { cat /proc/sys/kernel/random/uuid; }
root_uuid=$(uuid)
esp_serial=$(printf '%08X' $((RANDOM * 65536 + RANDOM)))
esp_uuid=${esp_serial:0:4}-${esp_serial:4:4}
cmdline="console=tty0 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 net.ifnames=0"

# ---- configuration inside the root
echo debian > "$root/etc/hostname"
cat > "$root/etc/hosts" <<EOF
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
EOF
cat > "$root/etc/fstab" <<EOF
UUID=$root_uuid	/	ext4	errors=remount-ro	0	1
UUID=$esp_uuid	/boot/efi	vfat	umask=0077,nofail	0	2
EOF
mkdir -p "$root/boot/efi"
cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
# No recommends and no docs for later installs either.
cat > "$root/etc/apt/apt.conf.d/90-small" <<EOF
APT::Install-Recommends "false";
EOF
cat > "$root/etc/dpkg/dpkg.cfg.d/90-nodoc" <<EOF
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
# The kernel keeps /vmlinuz and /initrd.img pointing at the newest kernel;
# grub.cfg boots those, so kernel upgrades need no GRUB tools in the image.
cat > "$root/etc/kernel-img.conf" <<EOF
do_symlinks = yes
EOF

# cloud-init: NoCloud over HTTP from provisiond (see README).
install -m 0644 "$here/debian-image/90-provisiond.cfg" "$root/etc/cloud/cloud.cfg.d/90-provisiond.cfg"
sed -i "s|@METADATA_URL@|$metadata_url|" "$root/etc/cloud/cloud.cfg.d/90-provisiond.cfg"

# Networking: cloud-init writes systemd-networkd files; until it has run
# (or when it is disabled), networkd DHCPs every ethernet NIC.
cat > "$root/etc/systemd/network/99-dhcp-fallback.network" <<EOF
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=yes
EOF

# ---- inside the chroot: services, kernel symlinks, initramfs
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount -t devpts devpts "$root/dev/pts"
chroot "$root" /bin/sh -euc '
	export DEBIAN_FRONTEND=noninteractive LC_ALL=C
	systemctl enable systemd-networkd systemd-resolved serial-getty@ttyS0 >/dev/null 2>&1
	systemctl enable cloud-init-local cloud-init cloud-config cloud-final >/dev/null 2>&1 || true
	ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
	kver=$(ls /lib/modules | sort -V | tail -n 1)
	# Drivers a server does not boot with: sound, video capture, wireless,
	# bluetooth, staging. Installed again by a kernel upgrade.
	for d in sound drivers/media drivers/net/wireless net/bluetooth drivers/bluetooth drivers/staging drivers/gpu; do
		rm -rf /lib/modules/$kver/kernel/$d
	done
	depmod "$kver"
	linux-update-symlinks install "$kver" /boot/vmlinuz-$kver >/dev/null 2>&1 || true
	update-initramfs -c -k "$kver" >/dev/null 2>&1 || update-initramfs -u -k "$kver"
	# The host name and SSH host keys are per machine: cloud-init makes them.
	rm -f /etc/ssh/ssh_host_*
	: > /etc/machine-id
	rm -f /var/lib/dbus/machine-id
	apt-get clean
	rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*
	find /usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
	rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/*/LC_MESSAGES/*.mo
	find / -xdev -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
'
for m in dev/pts dev proc sys; do umount "$root/$m"; done
[ -e "$root/vmlinuz" ] || ln -s "$(cd "$root" && ls boot/vmlinuz-* | sort -V | tail -n 1)" "$root/vmlinuz"
[ -e "$root/initrd.img" ] || ln -s "$(cd "$root" && ls boot/initrd.img-* | sort -V | tail -n 1)" "$root/initrd.img"

# ---- GRUB: one grub.cfg on the root file system, two core images
mkdir -p "$root/boot/grub"
cat > "$root/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
menuentry 'Debian GNU/Linux 12' {
	search --no-floppy --fs-uuid --set=root $root_uuid
	linux /vmlinuz root=UUID=$root_uuid ro $cmdline
	initrd /initrd.img
}
EOF
cat > "$work/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
EOF
grub_mods="part_gpt ext2 fat search search_fs_uuid normal configfile linux echo serial terminal test"
grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub biosdisk $grub_mods
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$work/early.cfg" -p /boot/grub $grub_mods efi_gop

# ---- file systems as files
used_mib=$(du -sxm "$root" | cut -f1)
root_mib=$((used_mib * 110 / 100 + root_free_mib))
mkfs.ext4 -q -F -L debian-root -U "$root_uuid" -d "$root" -E root_owner=0:0 -O ^metadata_csum_seed "$work/root.ext4" "${root_mib}M"
esp_mib=64
mkfs.vfat -F 32 -n EFI -i "$esp_serial" -C "$work/esp.vfat" $((esp_mib * 1024)) >/dev/null
mmd -i "$work/esp.vfat" ::/EFI ::/EFI/BOOT
mcopy -i "$work/esp.vfat" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

# ---- the disk: 1 MiB gap, BIOS boot 1 MiB, ESP, root (last, so growpart can grow it)
disk=$work/disk.raw
total_mib=$((1 + 1 + esp_mib + root_mib + 1))
truncate -s "${total_mib}M" "$disk"
sgdisk -q -Z "$disk" >/dev/null 2>&1 || true
sgdisk \
	-n 1:2048:+1M -t 1:EF02 -c 1:bios \
	-n 2:0:+${esp_mib}M -t 2:EF00 -c 2:esp \
	-n 3:0:0 -t 3:8304 -c 3:root \
	"$disk" >/dev/null 2>&1
start_of() { sgdisk -i "$1" "$disk" | awk '/First sector/ {print $3}'; }
bios_lba=$(start_of 1)
dd if="$work/esp.vfat" of="$disk" bs=512 seek="$(start_of 2)" conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$disk" bs=512 seek="$(start_of 3)" conv=notrunc,sparse status=none

# GRUB for BIOS, as grub-bios-setup does it for a GPT disk: boot.img's code
# in sector 0 (the protective MBR's table and signature kept), pointing at
# core.img in the BIOS boot partition; core.img's first sector (diskboot)
# lists the sectors that follow it.
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -le 2048 ] || { echo "debian-image: core.img too big" >&2; exit 1; }
le64() { printf '%016x' "$1" | sed 's/\(..\)/\1 /g' | awk '{for(i=8;i>0;i--) printf "\\x%s",$i}'; }
le16() { printf '%04x' "$1" | sed 's/\(..\)/\1 /g' | awk '{printf "\\x%s\\x%s",$2,$1}'; }
cp /usr/lib/grub/i386-pc/boot.img "$work/boot.img"
printf "$(le64 "$bios_lba")" | dd of="$work/boot.img" bs=1 seek=$((0x5c)) conv=notrunc status=none
# Hard disk, not floppy: the drive check at 0x66 stays as GRUB builds it
# (grub-bios-setup nops it only for BIOSes that pass a wrong drive number).
dd if="$work/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
printf "$(le64 $((bios_lba + 1)))$(le16 $((core_sectors - 1)))" |
	dd of="$work/core.img" bs=1 seek=$((0x1f4)) conv=notrunc status=none
dd if="$work/core.img" of="$disk" bs=512 seek="$bios_lba" conv=notrunc status=none

sgdisk -v "$disk" >/dev/null
raw_bytes=$(stat -c %s "$disk")
zstd -q -T0 -10 -f "$disk" -o "$out.tmp"
mv "$out.tmp" "$out"
# image2disk verifies the sha256 of the bytes it downloads: the compressed file.
(cd "$(dirname "$out")" && sha256sum "$(basename "$out")") > "$out.sha256"
echo "$stamp" > "$out.stamp"
end=$(date +%s)
printf 'debian-image: %s: raw %d MiB, zstd %d MiB, root %d MiB (%d MiB used), %ds\n' \
	"$out" $((raw_bytes / 1048576)) $(( $(stat -c %s "$out") / 1048576 )) "$root_mib" "$used_mib" $((end - start)) |
	tee "$out.buildinfo"
