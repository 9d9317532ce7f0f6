#!/usr/bin/env bash
# A brand-new Debian 12 (bookworm) root, made with mmdebstrap from the machine's apt
# sources, to install and try packages in as a new system would; then commands run in
# it (a chroot in mount and pid namespaces of their own: the mounts and every process
# started there end with the command).
#
# Usage:
#   scripts/fresh-root.sh create DIR [PACKAGE...]  make the root in DIR (which must not
#                                                  exist), with apt and PACKAGEs
#   scripts/fresh-root.sh run DIR COMMAND [ARG...] run COMMAND in it, as root
#   scripts/fresh-root.sh remove DIR               delete it
# As root (mmdebstrap's root mode; chroot, mount).
#
# Environment:
#   EXEC_ROOT_SOURCES  the apt sources to make it from (default: the machine's Debian
#                      sources, /etc/apt/sources.list.d/debian.sources, else
#                      /etc/apt/sources.list); a .sources file (deb822) or a .list file
#   EXEC_APT_CACHE     a directory that keeps the downloaded packages between roots
#                      (default: none): the root is new, the downloads need not be
set -euo pipefail

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 2; }
die() { echo "fresh-root.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
[ "$(id -u)" -eq 0 ] || die "must run as root"

sources() {
    local s=${EXEC_ROOT_SOURCES:-}
    if [ -z "$s" ]; then
        for s in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list ""; do
            [ -n "$s" ] && [ -s "$s" ] && break
        done
    fi
    [ -n "$s" ] && [ -s "$s" ] || die "no apt sources: set EXEC_ROOT_SOURCES to a .sources or .list file"
    printf '%s' "$s"
}

case $cmd in
create)
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (Debian: apt-get install mmdebstrap)"
    [ ! -e "$dir" ] || die "$dir exists: a fresh root goes where nothing is"
    include=$(
        IFS=,
        echo "$*"
    )
    hooks=()
    if [ -n "${EXEC_APT_CACHE:-}" ]; then
        mkdir -p "$EXEC_APT_CACHE"
        cache=$(cd "$EXEC_APT_CACHE" && pwd)
        hooks=(--skip=essential/unlink
            --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives"
            --setup-hook="cp -n '$cache'/*.deb \"\$1\"/var/cache/apt/archives/ 2>/dev/null || true"
            --customize-hook="cp -n \"\$1\"/var/cache/apt/archives/*.deb '$cache'/ 2>/dev/null || true")
    fi
    mmdebstrap --quiet --mode=root --variant=apt --format=directory \
        ${include:+--include="$include"} "${hooks[@]}" \
        bookworm "$dir" "$(sources)"
    ;;
run)
    [ -d "$dir/etc/apt" ] || die "$dir is not a root made by 'create'"
    [ $# -ge 1 ] || usage
    root=$(cd "$dir" && pwd)
    cache=
    if [ -n "${EXEC_APT_CACHE:-}" ]; then
        mkdir -p "$EXEC_APT_CACHE"
        cache=$(cd "$EXEC_APT_CACHE" && pwd)
    fi
    # In namespaces of its own: the mounts go when the command ends, and so does every
    # process it started (pid 1 of the namespace is the shell below). Inside a chroot,
    # where / is no mount point, the mounts cannot be made private: they keep the
    # propagation they have, and the shell unmounts them itself at the end.
    prop=private
    unshare --mount --propagation private true 2>/dev/null || prop=unchanged
    exec unshare --mount --pid --fork --propagation "$prop" /bin/sh -c '
        set -e
        root=$1 cache=$2 prop=$3
        shift 3
        if [ "$prop" != private ]; then
            trap "for m in var/cache/apt/archives etc/resolv.conf sys dev proc; do
                umount -l \"\$root/\$m\" 2>/dev/null || true; done" EXIT
        fi
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --rbind -o ro /sys "$root/sys" 2>/dev/null || true
        [ -f /etc/resolv.conf ] && touch "$root/etc/resolv.conf" &&
            mount --bind -o ro /etc/resolv.conf "$root/etc/resolv.conf"
        [ -z "$cache" ] || mount --bind "$cache" "$root/var/cache/apt/archives"
        [ "$prop" = private ] || { chroot "$root" /usr/bin/env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; exit; }
        exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
    ' fresh-root "$root" "$cache" "$prop" "$@"
    ;;
remove)
    [ -d "$dir" ] || exit 0
    [ -d "$dir/etc/apt" ] || die "$dir is not a root made by 'create'"
    # A bind mount left by a killed run would take the host's files with it.
    if grep -q " $(cd "$dir" && pwd)/" /proc/self/mounts; then
        die "something is still mounted under $dir"
    fi
    rm -rf --one-file-system "$dir"
    ;;
*) usage ;;
esac
