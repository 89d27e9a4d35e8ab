#!/bin/sh
# grub-arm64.sh CACHE_DIR OUT: build OUT, a GRUB arm64 UEFI network boot
# loader, from Debian's grub-efi-arm64-bin package (downloaded once into
# CACHE_DIR; needs dpkg --add-architecture arm64) and this machine's
# grub-mkimage (grub-common). Debian ships no arm64 iPXE, so arm64 UEFI PXE
# clients get this instead: the firmware loads it over TFTP; its embedded
# config reads provisiond's boot-config URL from DHCP option 17, the root
# path (http://HOST:PORT/grub/MAC, which provisiond sends to arm64 UEFI
# clients; EDK2 passes on only options it asked for, so not a private one)
# and runs that config over HTTP: it loads the arm64 agent OS, or exits,
# and so does GRUB, to the firmware's next boot option (the local disk). Same inputs give the same bytes (grub-mkimage embeds no
# time).
set -eu
cache=${1:?usage: grub-arm64.sh CACHE_DIR OUT}
out=${2:?usage: grub-arm64.sh CACHE_DIR OUT}
pkg=grub-efi-arm64-bin
mkdir -p "$cache"
ver=$(apt-cache policy "$pkg:arm64" | awk '/Candidate:/ {print $2; exit}')
[ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "grub-arm64.sh: no candidate for $pkg:arm64 (dpkg --add-architecture arm64; apt-get update)" >&2; exit 1; }
deb=$(ls "$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/')_arm64.deb" 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	(cd "$cache" && apt-get download -q "$pkg:arm64" >&2)
	deb=$(ls "$cache/${pkg}_"*_arm64.deb | sort | tail -n1)
fi
tree="${deb%.deb}.tree"
if [ ! -d "$tree" ] || [ "$tree" -ot "$deb" ]; then
	rm -rf "$tree.tmp"
	mkdir -p "$tree.tmp"
	dpkg-deb -x "$deb" "$tree.tmp"
	rm -rf "$tree"
	mv "$tree.tmp" "$tree"
fi
mkdir -p "$(dirname "$out")"
cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
# GRUB's embedded config runs in its rescue parser: plain commands only.
cat >"$cfg" <<'CFG'
echo provisiond: GRUB arm64 netboot on $net_default_mac
net_get_dhcp_option pd_url $net_default_interface 17 string
regexp --set=1:pd_host --set=2:pd_path "^http://([^/]+)(/.*)" "$pd_url"
echo provisiond: boot config $pd_url
configfile (http,$pd_host)$pd_path
echo provisiond: back from the boot config; leaving GRUB for the next boot option
exit
CFG
grub-mkimage -d "$tree/usr/lib/grub/arm64-efi" -O arm64-efi -o "$out.tmp" -p '(tftp)/grub' -c "$cfg" \
	efinet net tftp http linux normal configfile echo regexp sleep reboot halt test gzio
mv "$out.tmp" "$out"
echo "$out"
