#!/usr/bin/env bash
# test-setup.sh — feeds scripts/setup.sh --check the machines that matter and
# checks what it says is missing. `make test` runs it.
#
#   scripts/test-setup.sh [SETUP_SCRIPT]   (default: scripts/setup.sh)
#
# Each case is a fixture tree under a temp dir (SETUP_ROOT) and a PATH with
# stand-ins for llvm-config, c++ and python3, so the real machine's state does
# not leak in.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
setup=${1:-$here/setup.sh}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# A stand-in shared object: ELF magic and, for a real libclang, the C API.
fake_so() { # FILE [SYMBOL]
    mkdir -p "$(dirname "$1")"
    printf '\177ELF\002\001\001\000 %s\n' "${2:-_ZN5clang7Builtin}" >"$1"
}

# make_bin DIR NAME EXIT: a command that exits with EXIT (and, for llvm-config,
# prints the prefix of LLVM 14).
make_bin() {
    mkdir -p "$1"
    if [[ $2 == llvm-config ]]; then
        printf '#!/bin/sh\necho /usr/lib/llvm-14\n' >"$1/$2"
    else
        printf '#!/bin/sh\nexit %s\n' "$3" >"$1/$2"
    fi
    chmod +x "$1/$2"
}

# check NAME EXPECTED [MODE]: run the check on $work/NAME and compare.
check() {
    local name=$1 expected=$2 mode=${3:-} got
    # shellcheck disable=SC2086
    got=$(env -i HOME="$HOME" PATH="$work/$name/bin:/usr/bin:/bin" SETUP_ROOT="$work/$name/root" \
        DKIM_PYTHON="$work/$name/bin/python3" \
        bash "$setup" --check $mode | tr '\n' ' ' | sed 's/ $//')
    if [[ $got == "$expected" ]]; then
        echo "ok    $name: missing [$got]"
    else
        echo "FAIL  $name: expected [$expected], got [$got]"
        failures=$((failures + 1))
    fi
}

# A machine with working c++ and python3 stand-ins (the cases below vary libclang).
base() { make_bin "$work/$1/bin" c++ 0; make_bin "$work/$1/bin" python3 0; make_bin "$work/$1/bin" llvm-config 0; }

# Debian's stock image: libLLVM and libclang-cpp, no libclang.
base stock
fake_so "$work/stock/root/usr/lib/llvm-14/lib/libclang-cpp.so.14"
fake_so "$work/stock/root/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"
fake_so "$work/stock/root/usr/lib/llvm-14/lib/libLLVM-14.so.1"
check stock "libclang-dev"

# After `apt-get install libclang-dev`: libclang-14.so.1 and its libclang.so link.
base installed
fake_so "$work/installed/root/usr/lib/llvm-14/lib/libclang-cpp.so.14"
fake_so "$work/installed/root/usr/lib/llvm-14/lib/libclang-14.so.1" clang_createIndex
ln -s libclang-14.so.1 "$work/installed/root/usr/lib/llvm-14/lib/libclang.so"
check installed ""

# Only the runtime package (libclang1-14), found through the multiarch dir.
base runtime-only
fake_so "$work/runtime-only/root/usr/lib/x86_64-linux-gnu/libclang-14.so.1" clang_createIndex
check runtime-only ""

# A dangling libclang.so link (the library it named was removed).
base dangling
mkdir -p "$work/dangling/root/usr/lib/llvm-14/lib"
ln -s libclang-14.so.1 "$work/dangling/root/usr/lib/llvm-14/lib/libclang.so"
check dangling "libclang-dev"

# A file named like libclang that is not a shared object (a text stub).
base not-elf
mkdir -p "$work/not-elf/root/usr/lib/llvm-14/lib"
echo 'clang_createIndex' >"$work/not-elf/root/usr/lib/llvm-14/lib/libclang.so"
check not-elf "libclang-dev"

# A `c++` on PATH that cannot compile (a broken alternative), and no python3.
mkdir -p "$work/no-tools/bin"
make_bin "$work/no-tools/bin" c++ 1
make_bin "$work/no-tools/bin" python3 1
fake_so "$work/no-tools/root/usr/lib/llvm-14/lib/libclang-14.so.1" clang_createIndex
# /usr/bin stays on PATH for coreutils, so the stand-ins must shadow the real ones.
check no-tools "g++ python3"

# Test tools: swaks and openssl must run; stand-ins that fail count as missing.
base test-tools
fake_so "$work/test-tools/root/usr/lib/llvm-14/lib/libclang-14.so.1" clang_createIndex
make_bin "$work/test-tools/bin" swaks 1
make_bin "$work/test-tools/bin" openssl 0
make_bin "$work/test-tools/bin" promtool 1
make_bin "$work/test-tools/bin" sieve-connect 1
check test-tools "swaks libnet-ssleay-perl sieve-connect prometheus" test
# dkimpy is looked for with the system's python3: one that fails lacks it.
base dkim-missing
fake_so "$work/dkim-missing/root/usr/lib/llvm-14/lib/libclang-14.so.1" clang_createIndex
make_bin "$work/dkim-missing/bin" swaks 0
make_bin "$work/dkim-missing/bin" openssl 0
make_bin "$work/dkim-missing/bin" promtool 0
make_bin "$work/dkim-missing/bin" sieve-connect 0
printf '#!/bin/sh\n[ "$1" = -c ] && case "$2" in *dkim*) exit 1;; esac\nexit 0\n' >"$work/dkim-missing/bin/python3"
chmod +x "$work/dkim-missing/bin/python3"
printf '#!/bin/sh\n[ "$1" = --support ] && echo "=== TLS supported"\nexit 0\n' >"$work/dkim-missing/bin/swaks"
check dkim-missing "python3-dkim" test
# The run set-up does not ask for them.
check test-tools ""

# swaks without Net::SSLeay (installed without recommends): no TLS.
base swaks-no-tls
fake_so "$work/swaks-no-tls/root/usr/lib/llvm-14/lib/libclang-14.so.1" clang_createIndex
make_bin "$work/swaks-no-tls/bin" openssl 0
make_bin "$work/swaks-no-tls/bin" promtool 0
make_bin "$work/swaks-no-tls/bin" sieve-connect 0
printf '#!/bin/sh\n[ "$1" = --support ] && echo "*** TLS not available: requires Net::SSLeay"\nexit 0\n' \
    >"$work/swaks-no-tls/bin/swaks"
chmod +x "$work/swaks-no-tls/bin/swaks"
check swaks-no-tls "libnet-ssleay-perl" test
printf '#!/bin/sh\n[ "$1" = --support ] && echo "=== TLS supported"\nexit 0\n' \
    >"$work/swaks-no-tls/bin/swaks"
check swaks-no-tls "" test

if ((failures > 0)); then
    echo "setup detection: $failures case(s) failed"
    exit 1
fi
echo "setup detection: all cases pass"
