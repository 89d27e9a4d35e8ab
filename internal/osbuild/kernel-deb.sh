#!/bin/sh
# kernel-deb.sh CACHE_DIR [ARCH]: download (once) the Debian kernel package
# that linux-image-ARCH currently depends on into CACHE_DIR and print its
# path. ARCH is a Debian architecture, default amd64; another than the
# machine's needs it enabled (dpkg --add-architecture arm64; apt-get update).
# Needs only apt's package lists (apt-get update), no root and no install.
# Set KERNEL_PACKAGE to pin another versioned package, e.g.
# KERNEL_PACKAGE=linux-image-6.1.0-56-amd64.
set -eu
cache=${1:?usage: kernel-deb.sh CACHE_DIR [ARCH]}
arch=${2:-amd64}
mkdir -p "$cache"
pkg=${KERNEL_PACKAGE:-$(apt-cache depends "linux-image-$arch:$arch" | awk '/Depends: linux-image-[0-9]/ {sub(/:.*/, "", $2); print $2; exit}')}
[ -n "$pkg" ] || { echo "kernel-deb.sh: cannot resolve linux-image-$arch:$arch (run apt-get update; for a foreign ARCH, dpkg --add-architecture $arch first)" >&2; exit 1; }
# The newest candidate version of that package, as apt-get download picks it.
ver=$(apt-cache policy "$pkg:$arch" | awk '/Candidate:/ {print $2; exit}')
deb=$(ls "$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/')_$arch.deb" 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	(cd "$cache" && apt-get download -q "$pkg:$arch" >&2)
	deb=$(ls "$cache/${pkg}_"*"_$arch.deb" | sort | tail -n1)
fi
echo "$deb"
