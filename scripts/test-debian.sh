#!/usr/bin/env bash
# The Debian packages, as a user gets them: builds them from a fresh clone of the
# repository's last commit (dpkg-buildpackage -us -uc -b), runs lintian on them (any
# error or warning fails: the overrides in debian/ say why each one left is fine),
# installs them with apt-get in a brand-new Debian 12 root (scripts/fresh-root.sh; with
# a compiler, CMake, man-db and systemd) and checks them there (tests/debian/in-root.sh:
# an outside program against -dev with pkg-config and CMake, executor-map on a CSV file,
# man -l on each page, systemd-analyze verify on the units, executor-serve under a
# stand-in for systemd, what the maintainer scripts do on upgrade and removal). Prints
# each step's time.
#
# Uncommitted changes are not in the clone: commit first (the script says so).
#
# Environment:
#   EXEC_DEBIAN_WORK  where the clone, the packages and the root go (default:
#                     build/debian; emptied first)
#   EXEC_APT_CACHE    the downloaded packages, kept between runs (default:
#                     build/debian-apt-cache)
#   EXEC_SKIP_DEPS=1  do not run scripts/deps.sh --debian
# As root (the fresh root needs chroot and mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=${EXEC_DEBIAN_WORK:-build/debian}
export EXEC_APT_CACHE=${EXEC_APT_CACHE:-$repo/build/debian-apt-cache}
t_start=$(date +%s)
t_step=$t_start

say() { printf 'test-debian.sh: %s\n' "$*"; }
fail() {
    say "FAILED: $*" >&2
    exit 1
}
# Says a step is done, with its time.
done_step() {
    local now
    now=$(date +%s)
    say "$* ($((now - t_step)) s)"
    t_step=$now
}
quiet() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        return 1
    fi
}

[ "$(id -u)" -eq 0 ] || fail "run as root (the fresh root needs chroot and mounts)"
if [ "${EXEC_SKIP_DEPS:-0}" != 1 ]; then
    bash scripts/deps.sh --debian --mpi || fail "scripts/deps.sh --debian could not install the packages"
fi
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    say "warning: uncommitted changes are not tested: the clone has the last commit, $(git rev-parse --short HEAD)"

root=$work/root
if [ -d "$root" ]; then
    bash scripts/fresh-root.sh remove "$root" || fail "cannot remove the old root $root"
fi
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
root=$work/root

# --- Build, from a fresh clone -------------------------------------------------
git clone --quiet --no-local "$repo" "$work/src" || fail "git clone"
quiet "$work/build.log" sh -c "cd '$work/src' && dpkg-buildpackage -us -uc -b" ||
    fail "dpkg-buildpackage (log: $work/build.log)"
debs=("$work"/*.deb)
done_step "built ${#debs[@]} packages from a fresh clone of $(git rev-parse --short HEAD)"

# --- lintian ---------------------------------------------------------------------
if ! lintian --fail-on error,warning -I -E --show-overrides "$work"/*.changes >"$work/lintian.log" 2>&1; then
    grep -v 'root privileges' "$work/lintian.log" >&2
    fail "lintian (log: $work/lintian.log)"
fi
done_step "lintian: no error, no warning ($(grep -c '^[IP]:' "$work/lintian.log" || true) info and pedantic notes, $(grep -c '^O:' "$work/lintian.log" || true) overridden)"

# --- A brand-new Debian 12 root, and the packages in it -------------------------
quiet "$work/root.log" bash scripts/fresh-root.sh create "$root" \
    gcc libc6-dev pkg-config cmake make binutils man-db systemd ||
    fail "scripts/fresh-root.sh create (log: $work/root.log)"
done_step "a fresh Debian 12 root ($(du -sh --one-file-system "$root" | cut -f1))"

check=$root/tmp/check
mkdir -p "$check/debs" "$check/consumer" "$check/consumer-mpi"
cp "${debs[@]}" "$check/debs/"
src=$work/src # (the clone's copies: the commit under test)
cp "$src"/.ci/consumer/consumer.c "$src"/.ci/consumer/CMakeLists.txt "$check/consumer/"
cp "$src"/.ci/consumer/mpi/consumer_mpi.c "$src"/.ci/consumer/mpi/CMakeLists.txt "$check/consumer-mpi/"
cp "$src"/tests/sd_check.c "$src"/tests/debian/in-root.sh "$check/"
bash scripts/fresh-root.sh run "$root" sh /tmp/check/in-root.sh || fail "the packages in the fresh root"
done_step "installed with apt-get and checked in the fresh root"

bash scripts/fresh-root.sh remove "$root"
say "all passed in $(($(date +%s) - t_start)) s"
