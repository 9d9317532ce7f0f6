#!/bin/sh
# The packages as a new Debian 12 system gets them: run inside a fresh root by
# scripts/test-debian.sh, from the directory it copied in (debs/, the outside
# programs, sd_check.c). Installs every package with apt-get, then checks what each
# one is for, and stops at the first failure.
set -eu
cd "$(dirname "$0")"
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
step() { printf '  in-root: %s\n' "$*"; }
fail() {
    printf 'in-root: FAILED: %s\n' "$*" >&2
    exit 1
}
quiet() {
    if ! "$@" >log 2>&1; then
        cat log >&2
        fail "$*"
    fi
}

# --- The packages, from nothing, with what they depend on --------------------
t0=$(date +%s)
quiet apt-get update
quiet apt-get install -y --no-install-recommends -o APT::Keep-Downloaded-Packages=true ./debs/*.deb
size=$(grep -o 'After this operation, [^.]* of additional disk space' log | sed 's/.*, //; s/ of.*//' || true)
step "apt-get install ./*.deb: $(ls debs | wc -l) packages, $size with their dependencies, $(($(date +%s) - t0)) s"

# --- libexecutor0: the SONAME and its file ------------------------------------
lib=/usr/lib/$ma/libexecutor.so.0
[ "$(readlink "$lib")" = libexecutor.so.0.1.0 ] || fail "$lib does not point to libexecutor.so.0.1.0"
objdump -p "$lib" 2>/dev/null | grep -q 'SONAME *libexecutor.so.0$' || [ ! -x /usr/bin/objdump ] ||
    fail "the SONAME of $lib is not libexecutor.so.0"
step "libexecutor0: $lib -> libexecutor.so.0.1.0"

# --- libexecutor-dev: an outside program, with pkg-config and with CMake ------
cc -std=c11 -Wall -Wextra -Werror -o pc_shared consumer/consumer.c $(pkg-config --cflags --libs executor) ||
    fail "pkg-config executor: the outside program does not build"
# (/lib is /usr/lib on a merged /usr.)
ldd ./pc_shared | grep -q "libexecutor.so.0 => \(/usr\)\{0,1\}/lib/$ma/libexecutor.so.0 " ||
    fail "pc_shared does not use the installed library"
quiet ./pc_shared
# shellcheck disable=SC2046 # (the flags are words)
cc -std=c11 -Wall -Wextra -Werror -o pc_static consumer/consumer.c \
    $(pkg-config --static --cflags --libs executor | sed 's/-lexecutor\b/-l:libexecutor.a/') ||
    fail "pkg-config --static executor: the outside program does not build"
! ldd ./pc_static | grep -q libexecutor || fail "pc_static links libexecutor.so"
quiet ./pc_static
step "pkg-config executor: the outside program built (shared, static) and ran"
quiet cmake -S consumer -B cmake-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="-Wall -Wextra -Werror"
quiet cmake --build cmake-build
quiet ./cmake-build/consumer_shared
quiet ./cmake-build/consumer_static
step "find_package(executor): executor::executor and executor::executor_static built and ran"

# --- libexecutor-mpi-dev: the same, against libexecutor_mpi -------------------
cc -std=c11 -Wall -Wextra -Werror -o mpi_pc consumer-mpi/consumer_mpi.c \
    $(pkg-config --cflags --libs executor_mpi) || fail "pkg-config executor_mpi: no build"
ldd ./mpi_pc | grep -q "libexecutor_mpi.so.0" || fail "mpi_pc does not use libexecutor_mpi"
quiet cmake -S consumer-mpi -B cmake-mpi -DCMAKE_BUILD_TYPE=Release
quiet cmake --build cmake-mpi
step "libexecutor-mpi-dev: built with pkg-config executor_mpi and find_package (not run: no mpirun here)"

# --- executor-tools: executor-map on a CSV file -------------------------------
plugins=/usr/lib/$ma/executor/plugins
share=/usr/share/executor/examples
printf 'id,text\n1,an apple and a pear\n2,"the dog, the cat"\n3,a saw\n4,nothing here\n' >in.csv
for backend in threads fork; do
    executor-map --plugin $plugins/libwordtable.so --backend $backend --ordered \
        --spec "table=$share/words.txt,column=text,id=id" in.csv >out.csv 2>log ||
        { cat log >&2; fail "executor-map --backend $backend"; }
    printf '1,fruit\n2,animal\n3,tool\n4,unknown\n' | cmp -s - out.csv ||
        { cat out.csv >&2; fail "executor-map --backend $backend: not the expected rows"; }
done
executor-map --plugin $plugins/libscratch.so --ordered --spec "table=$share/words.txt,column=text,id=id" \
    in.csv >out.csv 2>log || { cat log >&2; fail "executor-map with libscratch.so"; }
printf '1,fruit\n2,animal\n3,tool\n4,unknown\n' | cmp -s - out.csv || fail "libscratch.so: wrong rows"
step "executor-map on a CSV file: the rows expected, threads and fork, both example plugins"
case $(dpkg-query -W -f '${Depends}' executor-tools) in
*mpi*) fail "executor-tools depends on MPI: $(dpkg-query -W -f '${Depends}' executor-tools)" ;;
esac

# --- python3-libexecutor: Debian's python3 imports it -------------------------
python3 - $plugins/libwordtable.so "table=$share/words.txt,column=text,id=id" <<'PY' >log 2>&1 ||
import sys
import libexecutor as lx
# A C plugin driven from Python, as executor-map runs it.
lx.map_file(sys.argv[1], sys.argv[2], "in.csv", "py.csv", ordered=True, workers=2)
got = open("py.csv").read()
assert got == "1,fruit\n2,animal\n3,tool\n4,unknown\n", got
# A Python callable as the classifier, on forked workers.
model = {b"apple": b"fruit"}
with lx.Executor(lambda m, row: m.get(lx.csv_fields(row)[1], b"?"), model, workers=2,
                 ordered=True) as ex:
    out = list(ex.imap([b"1,apple", b"2,owl"]))
assert out == [b"fruit", b"?"], out
PY
    { cat log >&2; fail "python3-libexecutor"; }
step "python3-libexecutor: a plugin's map_file and a Python callable on forked workers, right results"

# --- The manual pages and the units, as installed -----------------------------
for page in /usr/share/man/man1/executor-map.1.gz /usr/share/man/man1/executor-serve.1.gz \
    /usr/share/man/man3/libexecutor.3.gz; do
    err=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page"
    [ -z "$err" ] || fail "man --warnings -l $page: $err"
done
step "man -l: executor-map(1), executor-serve(1), libexecutor(3) render without a warning"
out=$(cd /lib/systemd/system && systemd-analyze verify executor-serve@check.service \
    executor-serve@check.socket 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
step "systemd-analyze verify: nothing to say about executor-serve@.service and .socket"

# --- executor-serve as systemd starts it (no systemd here: sd_check plays it) --
cc -O2 -o sd_check sd_check.c || fail "sd_check does not build"
./sd_check /usr/bin/executor-serve $plugins/libwordtable.so $share/words.txt >log 2>&1 ||
    { cat log >&2; fail "executor-serve under socket activation and sd_notify"; }
step "executor-serve: $(grep -c '^sd_check: ok' log) checks of sd_check passed (READY, RELOADING, STOPPING, a restart on the held socket)"

# --- The maintainer scripts: an upgrade restarts, never stops a socket --------
# A systemctl that only writes down what it was asked, and the sign that systemd runs.
mkdir -p /run/systemd/system
printf '#!/bin/sh\necho "$*" >>/tmp/systemctl.log\n' >/usr/local/sbin/systemctl
chmod +x /usr/local/sbin/systemctl
: >/tmp/systemctl.log
quiet dpkg -i debs/executor-tools_*.deb # the same version again: an upgrade to dpkg
grep -q "try-restart executor-serve@\*.service" /tmp/systemctl.log ||
    fail "on upgrade, the instances are not restarted: $(cat /tmp/systemctl.log)"
! grep -q 'stop' /tmp/systemctl.log || fail "on upgrade, something is stopped: $(cat /tmp/systemctl.log)"
upgrade=$(tr '\n' ';' </tmp/systemctl.log)
: >/tmp/systemctl.log
quiet dpkg -r executor-tools-dbgsym executor-tools
grep -q "stop executor-serve@\*.socket executor-serve@\*.service" /tmp/systemctl.log ||
    fail "on removal, the sockets and services are not stopped: $(cat /tmp/systemctl.log)"
step "maintainer scripts: upgrade: systemctl $upgrade removal stops the sockets and services"
quiet dpkg -i debs/executor-tools_*.deb debs/executor-tools-dbgsym_*.deb
rm /usr/local/sbin/systemctl
rmdir /run/systemd/system
