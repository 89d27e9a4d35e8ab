#!/bin/sh
# kernel-deb.sh CACHE_DIR: download (once) the Debian kernel package that
# linux-image-amd64 currently depends on into CACHE_DIR and print its path.
# Needs only apt's package lists (apt-get update), no root and no install.
# Set KERNEL_PACKAGE to pin another versioned package, e.g.
# KERNEL_PACKAGE=linux-image-6.1.0-56-amd64.
set -eu
cache=${1:?usage: kernel-deb.sh CACHE_DIR}
mkdir -p "$cache"
pkg=${KERNEL_PACKAGE:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
[ -n "$pkg" ] || { echo "kernel-deb.sh: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
# The newest candidate version of that package, as apt-get download picks it.
ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2; exit}')
deb=$(ls "$cache/${pkg}_$(echo "$ver" | sed 's/:/%3a/')_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	(cd "$cache" && apt-get download -q "$pkg" >&2)
	deb=$(ls "$cache/${pkg}_"*.deb | sort | tail -n1)
fi
echo "$deb"
