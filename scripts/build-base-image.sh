#!/usr/bin/env bash
# Build the offline base image: Debian bookworm with Python 3.11 (python3, python3-venv,
# ca-certificates) from a Debian archive, with debootstrap + `docker import`. No registry needed.
#   scripts/build-base-image.sh [--force] [--tag TAG]     (default tag pushtune/base:bookworm)
#   scripts/build-base-image.sh --print-mirror            (the archive it would use, and exit)
# Idempotent: does nothing when the tag exists, unless --force. Needs root (debootstrap).
# The archive is the host's own: the first Debian release entry of its apt sources (sources.list,
# then sources.list.d/*.list and *.sources in name order); DEBIAN_MIRROR overrides it.
# APT_SOURCES_DIR (default /etc/apt) reads the sources from elsewhere.

# Debian's release suites (codenames and aliases): what tells the Debian archive from the other
# entries of a host's sources (security, updates, backports, third-party repositories).
DEBIAN_SUITES="buzz rex bo hamm slink potato woody sarge etch lenny squeeze wheezy jessie stretch buster
bullseye bookworm trixie forky duke sid experimental oldoldstable oldstable stable testing unstable"

# Print the first Debian archive URI of the apt sources under ${APT_SOURCES_DIR:-/etc/apt}: a
# `deb` entry (one-line format) or a `Types: deb` stanza (deb822, not `Enabled: no`) for a Debian
# release suite with the main component. Prints nothing when there is none.
apt_debian_archive() {
    local dir="${APT_SOURCES_DIR:-/etc/apt}" file
    local -a files=()
    [[ -f "$dir/sources.list" ]] && files+=("$dir/sources.list")
    for file in "$dir"/sources.list.d/*; do  # apt's order: by name, .list and .sources alike
        case "$file" in *.list|*.sources) [[ -f "$file" && -r "$file" ]] && files+=("$file") ;; esac
    done
    ((${#files[@]})) || return 0
    awk -v suites="$DEBIAN_SUITES" '
        function debian(list, components,    n, i, names, found) {
            if ((" " components " ") !~ /[ \t]main[ \t]/) return 0
            n = split(list, names, /[ \t]+/)
            for (i = 1; i <= n; i++) if (names[i] in SUITE) found = 1
            return found
        }
        function usable(uri) { return uri ~ /^(https?|ftp):\/\/[^\/]/ || uri ~ /^file:\// }
        function answer(uri) { print uri; done = 1; exit }
        function stanza(    n, uris, i) {  # a deb822 stanza, read into F
            if (tolower(F["enabled"]) != "no" && (" " F["types"] " ") ~ /[ \t]deb[ \t]/ &&
                debian(F["suites"], F["components"])) {
                n = split(F["uris"], uris, /[ \t]+/)
                for (i = 1; i <= n; i++) if (usable(uris[i])) answer(uris[i])
            }
            split("", F); last = ""
        }
        BEGIN { n = split(suites, list, /[ \t\n]+/); for (i = 1; i <= n; i++) SUITE[list[i]] = 1 }
        FNR == 1 { if (deb822) stanza(); deb822 = FILENAME ~ /\.sources$/ }
        deb822 {
            if ($0 ~ /^#/) next
            if ($0 ~ /^[ \t]*$/) { stanza(); next }
            if ($0 ~ /^[ \t]/) { if (last != "") F[last] = F[last] " " $0; next }  # a continuation
            colon = index($0, ":"); if (!colon) next
            last = tolower(substr($0, 1, colon - 1)); F[last] = substr($0, colon + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", F[last])
            next
        }
        {
            line = $0; sub(/#.*/, "", line)
            if (line !~ /^[ \t]*deb[ \t]/) next  # deb-src, comments, blank lines
            sub(/^[ \t]*deb[ \t]+/, "", line)
            if (line ~ /^\[/) { if (!sub(/^\[[^]]*\][ \t]*/, "", line)) next }  # [ options ]
            n = split(line, f, /[ \t]+/)
            components = ""; for (i = 3; i <= n; i++) components = components " " f[i]
            if (n >= 3 && usable(f[1]) && debian(f[2], components)) answer(f[1])
        }
        END { if (!done && deb822) stanza() }
    ' "${files[@]}"
}

# The archive to debootstrap from: DEBIAN_MIRROR, else the host's; a one-line error when neither.
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$DEBIAN_MIRROR"
        return 0
    fi
    local found dir="${APT_SOURCES_DIR:-/etc/apt}"
    found="$(apt_debian_archive)" || found=""
    if [[ -z "$found" ]]; then
        echo "build-base-image: no Debian archive in the apt sources ($dir/sources.list," \
             "$dir/sources.list.d/*.list, *.sources); set DEBIAN_MIRROR to one" >&2
        return 1
    fi
    printf '%s\n' "$found"
}

# Sourced (the tests): the functions above only. `return` outside a function works only there.
if (return 0 2>/dev/null); then
    return 0
fi

set -euo pipefail

tag=pushtune/base:bookworm
force=0
print_mirror=0
while (($#)); do
    case "$1" in
        --force) force=1 ;;
        --tag) tag="${2:?--tag needs a value}"; shift ;;
        --print-mirror) print_mirror=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "build-base-image: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if ((print_mirror)); then
    debian_mirror || exit 1
    exit 0
fi
if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "build-base-image: $tag exists (use --force to rebuild)"
    exit 0
fi
mirror="$(debian_mirror)" || exit 1
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
