#!/usr/bin/env bash
# Build the offline base image: Debian bookworm with Python 3.11 (python3, python3-venv,
# ca-certificates) from Debian's archive, with debootstrap + `docker import`. No registry needed.
#   scripts/build-base-image.sh [--force] [--tag TAG]     (default tag pushtune/base:bookworm)
# Idempotent: does nothing when the tag exists, unless --force. Needs root (debootstrap).
# DEBIAN_MIRROR overrides the archive (default http://deb.debian.org/debian).
set -euo pipefail

tag=pushtune/base:bookworm
force=0
while (($#)); do
    case "$1" in
        --force) force=1 ;;
        --tag) tag="${2:?--tag needs a value}"; shift ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "build-base-image: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "build-base-image: $tag exists (use --force to rebuild)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "build-base-image: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 1; }

rootfs="$(mktemp -d /tmp/pushtune-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
started=$SECONDS
echo "build-base-image: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# Keep the image small: no package lists, caches or docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
echo "deb $mirror bookworm main" >"$rootfs/etc/apt/sources.list"

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "pushtune base: debootstrap bookworm minbase + python3" \
    - "$tag" >/dev/null
python_version="$(docker run --rm "$tag" python3 --version)"
echo "build-base-image: built $tag ($python_version) in $((SECONDS - started)) s"
