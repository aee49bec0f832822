#!/usr/bin/env bash
# bench-scale.sh — shard scaling: durable accept with 1, 2, 4, ... shards,
# the same blaster, each run on a fresh store.
#
#   loadtest/bench-scale.sh                    # shards 1 and 2 on 2 CPUs
#   SHARDS="1 2 4 8" loadtest/bench-scale.sh   # on a 16-core machine
#
# Environment (all optional):
#   SHARDS=            shard counts to try (default: powers of two up to
#                      half the CPUs, at least "1 2")
#   MESSAGES=50000     messages per run
#   SIZE=2048          message size, bytes
#   CONNECTIONS=100    pipelined connections
#   SKIP_BUILD=1       use the release binaries as they are
#
# With at least twice as many CPUs as the largest shard count, the server is
# pinned to the first CPUs (one per shard) and the blaster to the others
# (`taskset`), so the blaster's own CPU is not part of what is measured; on
# a smaller machine both share every CPU, and the figures are what that
# machine can show. Printed: msg/s per shard count, the speed-up over one
# shard, and its fraction of linear (issue 15's goal: >= 0.8 from 1 to 8
# shards on a 16-core machine).

set -euo pipefail

MESSAGES=${MESSAGES:-50000}
SIZE=${SIZE:-2048}
CONNECTIONS=${CONNECTIONS:-100}
SKIP_RINGPOST=""
CPUS=$(nproc)
if [[ -z ${SHARDS:-} ]]; then
    SHARDS="1"
    for n in 2 4 8 16 32; do
        ((n <= CPUS / 2 || n == 2)) && SHARDS="$SHARDS $n"
    done
fi

LOG_TAG=bench-scale
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-scale.XXXXXX")
RINGPOST_PID=""
cleanup() { stop_ringpost; }
trap on_exit EXIT

[[ -n ${SKIP_BUILD:-} ]] || build_release
[[ -x $RINGPOST && -x $BLAST ]] || die "missing $RINGPOST or $BLAST"
largest=$(tr ' ' '\n' <<<"$SHARDS" | sort -n | tail -1)
PINNED=""
if ((CPUS >= 2 * largest)) && command -v taskset >/dev/null; then
    PINNED=1
fi
log "$CPUS CPUs; shards: $SHARDS; $MESSAGES x $SIZE B over $CONNECTIONS connections; pinned: ${PINNED:-no}"

# run_shards N: one run with N shards; prints msg/s.
run_shards() {
    local n=$1 port server_cpus blast_cpus
    port=$(free_port)
    rm -rf "$WORK/data"
    mkdir -p "$WORK/data"
    local server=("$RINGPOST") blast=("$BLAST")
    if [[ -n $PINNED ]]; then
        server_cpus="0-$((n - 1))"
        blast_cpus="$n-$((CPUS - 1))"
        server=(taskset -c "$server_cpus" "$RINGPOST")
        blast=(taskset -c "$blast_cpus" "$BLAST")
    fi
    "${server[@]}" serve --no-relay --shards "$n" --data-dir "$WORK/data" --ephemeral-ports 127.0.0.1 \
        --smtp "127.0.0.1:$port" --metrics "127.0.0.1:$(free_port)" >"$WORK/ringpost-$n.log" 2>&1 &
    RINGPOST_PID=$!
    wait_port "$port" 60 "$RINGPOST_PID" || die "ringpost ($n shards) did not start: $(tail -5 "$WORK/ringpost-$n.log")"
    "${blast[@]}" send --to-addr "127.0.0.1:$port" --messages "$MESSAGES" --connections "$CONNECTIONS" \
        --size "$SIZE" --pipelining on --json >"$WORK/blast-$n.json"
    stop_ringpost
    local ok
    ok=$(json_num messages_ok "$WORK/blast-$n.json")
    [[ $ok == "$MESSAGES" ]] || die "$n shards: only $ok of $MESSAGES acknowledged"
    json_num msg_per_s "$WORK/blast-$n.json"
}

declare -A RATE
for n in $SHARDS; do
    RATE[$n]=$(run_shards "$n")
    log "$n shard(s): ${RATE[$n]} msg/s"
done

base=${RATE[1]:-}
printf '\n%-8s %12s %10s %14s\n' shards "msg/s" speed-up "of linear"
for n in $SHARDS; do
    awk -v n="$n" -v r="${RATE[$n]}" -v b="$base" 'BEGIN {
        s = (b > 0) ? r / b : 0
        printf "%-8s %12.0f %9.2fx %14.2f\n", n, r, s, s / n
    }'
done
