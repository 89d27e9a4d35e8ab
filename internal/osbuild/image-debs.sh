#!/usr/bin/env bash
# image-debs.sh IMAGE.raw.zst OUTDIR PACKAGE...
#
# Downloads into OUTDIR the .debs that the Debian image lacks for PACKAGE...
# and their dependencies, and nothing it already has: apt resolves them
# against the image's own dpkg status file (read with debugfs from the root
# file system, partition 3; no loop device, no mount) with this host's apt
# lists. TestE2EPackage installs provisiond's .deb on a booted copy of the
# image, which has no network: `apt-get install ./provisiond.deb OUTDIR/*.deb`
# is then the offline `apt install ./provisiond.deb` (apt 2.6 refuses local
# .debs with --no-download: "Pathname to install is not absolute").
#
# Same image (its .sha256) and package list as the stamp: nothing to do.
# Needs zstd, sgdisk, debugfs, apt-get; root (apt's download sandbox user).
set -euo pipefail

image=${1:?usage: image-debs.sh IMAGE.raw.zst OUTDIR PACKAGE...}
out=${2:?usage: image-debs.sh IMAGE.raw.zst OUTDIR PACKAGE...}
shift 2
out=$(realpath -m "$out") # apt takes a relative Dir:: path below /var/cache/apt
[ $# -gt 0 ] || { echo "image-debs: no package named" >&2; exit 2; }
for t in zstd sgdisk debugfs apt-get; do
	command -v "$t" >/dev/null || { echo "image-debs: $t missing (make deps)" >&2; exit 1; }
done
[ -f "$image" ] && [ -f "$image.sha256" ] || { echo "image-debs: $image (and .sha256) missing: make debian-image" >&2; exit 1; }

stamp=$( { cat "$0" "$image.sha256"; echo "$*"; } | sha256sum | cut -c1-16)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ]; then
	echo "image-debs: $out is up to date (stamp $stamp)"
	exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
zstd -dq "$image" -o "$work/disk.raw"
first=$(sgdisk -i 3 "$work/disk.raw" | awk '/First sector/ {print $3}')
[ -n "$first" ] || { echo "image-debs: $image has no partition 3 (the root)" >&2; exit 1; }
debugfs -R 'cat /var/lib/dpkg/status' "$work/disk.raw?offset=$((first * 512))" >"$work/status" 2>"$work/debugfs.err" ||
	{ cat "$work/debugfs.err" >&2; exit 1; }
grep -q '^Package: dpkg$' "$work/status" || { echo "image-debs: no dpkg status read from $image" >&2; exit 1; }

rm -rf "$out.tmp"
mkdir -p "$out.tmp/partial"
download() {
	apt-get install --download-only -y -qq --no-install-recommends \
		-o Dir::State::status="$work/status" -o Dir::Cache::archives="$out.tmp" \
		-o Debug::NoLocking=1 "$@"
}
# Stale host lists name versions the mirror no longer has: update once.
download "$@" || { apt-get update -qq && download "$@"; }
rmdir "$out.tmp/partial" 2>/dev/null || rm -rf "$out.tmp/partial"
rm -f "$out.tmp/lock"
echo "$stamp" >"$out.tmp/stamp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "image-debs: $(ls "$out"/*.deb | wc -l) packages in $out: $(cd "$out" && ls *.deb | tr '\n' ' ')"
