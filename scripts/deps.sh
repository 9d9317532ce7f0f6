#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs, only those missing: nothing is run
# through apt-get when everything is present. Quiet unless something fails.
# Usage: scripts/deps.sh [--clang] [--fuzz] [--valgrind] [--static] [--mpi] [--debian]
# (also clang, for the clang build; clang and its runtimes, libFuzzer among them, for the
# fuzz build; valgrind; cppcheck and clang-tidy for the static checks; Open MPI for
# libexecutor_mpi; what building and checking the Debian packages takes)
# As root; elsewhere through sudo when it is available.
set -euo pipefail

pkgs=(build-essential cmake pkg-config
      liburcu-dev libck-dev libcmocka-dev
      libevent-dev libsystemd-dev libuv1-dev wrk curl
      libglib2.0-dev libtbb-dev libcsv-dev gnuplot-nox python3 python3-dev python3-pytest
      man-db systemd strace
      libpcre2-dev liblua5.4-dev)
for arg in "$@"; do
    case $arg in
    --clang) pkgs+=(clang) ;;
    --fuzz) pkgs+=(clang libclang-rt-dev) ;;
    --valgrind) pkgs+=(valgrind) ;;
    --static) pkgs+=(cppcheck clang-tidy) ;;
    --mpi) pkgs+=(libopenmpi-dev openmpi-bin) ;;
    --debian) pkgs+=(debhelper dh-python dpkg-dev lintian mmdebstrap git libopenmpi-dev python3-dev) ;;
    -h | --help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "deps.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if ! command -v dpkg-query >/dev/null; then
    echo "deps.sh: not a Debian system; make sure these (or their equivalents) are installed: ${pkgs[*]}" >&2
    exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "deps.sh: missing packages (${missing[*]}) and not root; install them as root" >&2
    exit 1
fi

log=$(mktemp "${TMPDIR:-/tmp}/executor-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq &&
       "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "deps.sh: apt-get failed" >&2
    exit 1
fi
