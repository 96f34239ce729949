#!/usr/bin/env bash
# Build or reuse a root filesystem that runs a real GIMP 3 headless, and print its path.
#
# On a host whose own gimp-console-3.0 (GIMP 3.x with Python plug-in support) works, that is
# the root: prints "/". Otherwise a Debian trixie chroot with GIMP 3.0 is built with debootstrap
# under the cache folder, and kept as a zstd tarball beside it so that a rebuilt cache takes
# seconds. Idempotent and unattended (CI): needs root and network to a Debian mirror only.
#
# usage: install/gimp_root.sh [--cache DIR] [--chroot] [--rebuild]
#   --cache DIR  where the chroot and its tarball live (default $BRUSHWORK_GIMP_CACHE or
#                /var/cache/brushwork/gimp3-root)
#   --chroot     use the chroot even when the host has GIMP 3
#   --rebuild    throw the cached chroot and tarball away first
set -euo pipefail

CACHE=${BRUSHWORK_GIMP_CACHE:-/var/cache/brushwork/gimp3-root}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Python comes with gimp itself; python3-gi is what its Python plug-ins import. No pyzmq here on
# purpose: the installer's pip --target path is what makes zmq importable, as on a user's machine.
# Xvfb and xdotool let the end-to-end test open the plug-in's dialog and press its OK button.
PACKAGES=(gimp python3-gi xvfb xdotool)
DIALOG_TOOLS=(Xvfb xdotool)
# The recipe names the packages: a cache built from other ones is rebuilt instead of reused.
RECIPE="trixie-minbase-v1 ${PACKAGES[*]}"
FORCE_CHROOT=0
REBUILD=0

log() { echo "gimp_root: $*" >&2; }
die() {
    echo "gimp_root: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --cache) CACHE=${2:?--cache needs a folder}; shift 2 ;;
        --chroot) FORCE_CHROOT=1; shift ;;
        --rebuild) REBUILD=1; shift ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

ROOT=$CACHE/root
TARBALL=$CACHE/root.tar.zst
STAMP=.brushwork-gimp-root  # inside the root: the recipe it was built from

# The root works when GIMP 3 answers, its Python can import the GI bindings of GIMP and the
# dialog tools are there.
gimp_works() {  # $1: root ("/" for the host)
    local run=() tool
    [ "$1" = / ] || run=(chroot "$1" env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8)
    "${run[@]}" gimp-console-3.0 --version 2>/dev/null | grep -q 'version 3\.' &&
        "${run[@]}" python3 -c 'import gi; gi.require_version("Gimp", "3.0")' 2>/dev/null ||
        return 1
    for tool in "${DIALOG_TOOLS[@]}"; do
        "${run[@]}" sh -c "command -v $tool" >/dev/null || return 1
    done
}

recipe_matches() { [ -f "$ROOT/$STAMP" ] && [ "$(cat "$ROOT/$STAMP")" = "$RECIPE" ]; }

# Unmount whatever is still mounted below $1, deepest first; true when nothing is left.
unmount_below() {
    local m
    for m in $(awk -v r="$1/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    ! awk -v r="$1/" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/mounts
}

need_host_tool() {  # $1: command, $2: Debian package that provides it
    command -v "$1" >/dev/null && return
    [ "$(id -u)" = 0 ] || die "$1 is missing and installing it needs root"
    log "installing $2 on the host"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2; } ||
        die "could not install $2 on the host"
}

build_root() {  # $1: empty folder to build into
    local new=$1
    need_host_tool debootstrap debootstrap
    log "debootstrap trixie into $new (about a minute)"
    debootstrap --variant=minbase trixie "$new" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $CACHE/debootstrap.log"
    cat >"$new/etc/apt/sources.list" <<EOF
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb $SECURITY_MIRROR trixie-security main
EOF
    cp -L /etc/resolv.conf "$new/etc/resolv.conf" 2>/dev/null || true
    # Package scripts want /proc and /dev; GIMP itself later runs without any mount.
    mount -t proc proc "$new/proc"
    mount --bind /dev "$new/dev"
    mount --bind /dev/pts "$new/dev/pts"
    log "installing ${PACKAGES[*]} in the chroot (about a minute)"
    if ! chroot "$new" apt-get update -q >"$CACHE/apt.log" 2>&1 ||
        ! chroot "$new" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${PACKAGES[@]}" >>"$CACHE/apt.log" 2>&1; then
        unmount_below "$new" || true
        die "apt-get in the chroot failed, see $CACHE/apt.log"
    fi
    chroot "$new" apt-get clean
    unmount_below "$new" || die "could not unmount the chroot's /proc and /dev under $new"
    # Slim it: docs, man pages and package lists are never read by a headless GIMP.
    # /usr/share/locale stays a folder: GIMP refuses to start without it.
    rm -rf "$new"/var/lib/apt/lists/* "$new"/usr/share/doc/* "$new"/usr/share/man/*
    echo "$RECIPE" >"$new/$STAMP"
}

# A host with GIMP 3 but without the dialog tools gets them from its own Debian mirror.
if [ "$FORCE_CHROOT" = 0 ] && [ "$(id -u)" = 0 ] && command -v gimp-console-3.0 >/dev/null &&
    ! gimp_works /; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends xvfb xdotool >&2 ||
        log "could not add xvfb and xdotool to the host; using a chroot"
fi
if [ "$FORCE_CHROOT" = 0 ] && gimp_works /; then
    log "using the host's own $(gimp-console-3.0 --version 2>/dev/null | head -n1)"
    echo /
    exit 0
fi

[ "$(id -u)" = 0 ] || die "building the GIMP 3 chroot needs root (chroot, debootstrap)"
mkdir -p "$CACHE"
# One builder at a time; a second caller waits and then reuses the first one's work.
exec 9>"$CACHE/.lock"
flock 9

if [ "$REBUILD" = 1 ]; then
    unmount_below "$ROOT" || die "something is still mounted under $ROOT"
    rm -rf "$ROOT" "$TARBALL"
fi

if recipe_matches && gimp_works "$ROOT"; then
    echo "$ROOT"
    exit 0
fi

# Build (or extract) into a fresh folder, then swap it in, so a half-built root is never used.
unmount_below "$ROOT" || die "something is still mounted under $ROOT"
rm -rf "$ROOT" "$ROOT.new"
mkdir -p "$ROOT.new"
trap 'unmount_below "$ROOT.new" && rm -rf "$ROOT.new"' EXIT
need_host_tool zstd zstd
T0=$(date +%s)
if [ -f "$TARBALL" ] && [ "$(cat "$TARBALL.recipe" 2>/dev/null)" = "$RECIPE" ]; then
    log "extracting the cached root from $TARBALL"
    tar -I zstd -xpf "$TARBALL" -C "$ROOT.new" --numeric-owner || die "could not extract $TARBALL"
else
    build_root "$ROOT.new"
    log "saving $TARBALL"
    tar -C "$ROOT.new" --numeric-owner -I 'zstd -T0 -3' -cf "$TARBALL.tmp" . &&
        mv "$TARBALL.tmp" "$TARBALL" && echo "$RECIPE" >"$TARBALL.recipe" ||
        die "could not write $TARBALL"
fi
mv "$ROOT.new" "$ROOT"
trap - EXIT
gimp_works "$ROOT" || die "GIMP 3 does not start in $ROOT (see $CACHE/apt.log)"
log "GIMP 3 root ready in $(($(date +%s) - T0)) s"
echo "$ROOT"
