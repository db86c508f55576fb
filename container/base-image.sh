#!/usr/bin/env bash
# Builds the local base image (no container registry needed): a minimal Debian bookworm root file
# system made with debootstrap from Debian's package archive, with Python 3.11 (the version of
# development and CI) and CA certificates, imported into the engine as one layer.
#
#   DOCKER_HOST=unix:///... container/base-image.sh TAG     (as root; DOCKER: the client binary)
#
# Security updates are applied, apt's lists and caches removed. The result has no compiler.
set -euo pipefail
TAG=${1:?usage: base-image.sh TAG}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DOCKER=${DOCKER:-docker}

if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/srseg-rootfs.XXXXXX")
rootfs=$work/rootfs
cleanup() {
  # debootstrap mounts /proc (and maybe more) inside the root file system: unmount before removing
  grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# python3.11 without Debian's venv/ensurepip: the image's pip comes from the lock, like the rest
debootstrap --variant=minbase --include=python3.11,ca-certificates \
  bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }

cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
SOURCES
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get upgrade -y -qq >/dev/null && apt-get clean'
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/tmp/* "$rootfs/etc/resolv.conf"
: >"$rootfs/etc/resolv.conf"

grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
tar --numeric-owner --one-file-system -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap bookworm minbase + python3.11 ($(date -u +%Y-%m-%d))" \
  - "$TAG" >/dev/null
echo "$TAG"
