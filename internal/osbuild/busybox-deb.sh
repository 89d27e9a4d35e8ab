#!/bin/sh
# busybox-deb.sh CACHE_DIR [ARCH]: download (once) Debian's busybox-static
# package of ARCH (a Debian architecture, default amd64) into CACHE_DIR,
# extract its static bin/busybox beside it and print that binary's path.
# Needs only apt's package lists (apt-get update), no root and no install;
# a foreign ARCH needs dpkg --add-architecture ARCH first.
# BUSYBOX_PACKAGE names another package of the same layout.
set -eu
cache=${1:?usage: busybox-deb.sh CACHE_DIR [ARCH]}
arch=${2:-amd64}
mkdir -p "$cache"
pkg=${BUSYBOX_PACKAGE:-busybox-static}
ver=$(apt-cache policy "$pkg:$arch" | awk '/Candidate:/ {print $2; exit}')
[ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "busybox-deb.sh: no candidate for $pkg:$arch (run apt-get update; for a foreign ARCH, dpkg --add-architecture $arch first)" >&2; exit 1; }
deb=$(ls "$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/')_$arch.deb" 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	(cd "$cache" && apt-get download -q "$pkg:$arch" >&2)
	deb=$(ls "$cache/${pkg}_"*"_$arch.deb" | sort | tail -n1)
fi
bin="${deb%.deb}.busybox"
if [ ! -x "$bin" ] || [ "$bin" -ot "$deb" ]; then
	dpkg-deb --fsys-tarfile "$deb" | tar -xO ./bin/busybox >"$bin.tmp"
	chmod 0755 "$bin.tmp"
	mv "$bin.tmp" "$bin"
fi
echo "$bin"
