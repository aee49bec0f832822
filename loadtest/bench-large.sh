#!/usr/bin/env bash
# bench-large.sh — large messages: how much of the disk's fsynced write
# bandwidth does durable accept of 100 KB messages reach?
#
#   loadtest/bench-large.sh
#   MESSAGES=5000 SIZE=262144 loadtest/bench-large.sh
#
# Environment (all optional):
#   MESSAGES=10000     messages in the blast (1 GB at 100 KB)
#   SIZE=102400        message size, bytes
#   CONNECTIONS=50     pipelined connections
#   DD_MB=1024         MiB written by each disk probe
#   SKIP_BUILD=1       use the release binaries as they are
#
# In one run, on the filesystem the store lives on:
# 1. the disk: `dd if=/dev/zero bs=1M count=DD_MB conv=fdatasync` (one
#    sequential file, fsynced at its end), timed;
# 2. ringpost: `ringpost serve --no-relay` on a fresh store, every 250
#    after the group commit's fsync, and ringpost-blast sends MESSAGES x
#    SIZE over CONNECTIONS: body bytes per second. Bodies go to segment
#    files, written once (`store.segment_min_kb`, at most the message size);
# 3. the same with `segment_min_kb = 0`: every body through RocksDB's WAL,
#    and again into a blob file at the memtable's flush (written twice);
# 4. the disk again (it is also probed between 2 and 3): the ratio uses the
#    median of the three probes, so a disk that changed speed shows.
# Printed: the figures, accept / disk (issue 15's goal: >= 0.75) and the
# gain of segments over the WAL path.

set -euo pipefail

MESSAGES=${MESSAGES:-10000}
SIZE=${SIZE:-102400}
CONNECTIONS=${CONNECTIONS:-50}
DD_MB=${DD_MB:-1024}
SKIP_RINGPOST=""

LOG_TAG=bench-large
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-large.XXXXXX")
RINGPOST_PID=""
cleanup() { stop_ringpost; }
trap on_exit EXIT

[[ -n ${SKIP_BUILD:-} ]] || build_release
[[ -x $RINGPOST && -x $BLAST ]] || die "missing $RINGPOST or $BLAST"

# disk_mb_s: MB/s (10^6 bytes) of one fsynced sequential write of DD_MB MiB.
disk_mb_s() {
    local start end
    start=$(date +%s.%N)
    dd if=/dev/zero of="$WORK/dd.bin" bs=1M count="$DD_MB" conv=fdatasync status=none
    end=$(date +%s.%N)
    rm -f "$WORK/dd.bin"
    awk -v b=$((DD_MB * 1048576)) -v s="$start" -v e="$end" 'BEGIN {printf "%.1f", b / (e - s) / 1e6}'
}

FS_TYPE=$(df -PT "$WORK" | awk 'NR==2 {print $2}')
log "data on $FS_TYPE ($WORK); $(nproc) CPUs; $MESSAGES x $SIZE B over $CONNECTIONS connections"
disk_before=$(disk_mb_s)
log "disk, fsynced sequential write: $disk_before MB/s"

# accept_mb_s LABEL SEGMENT_MIN_KB: sets ACCEPTED to the MB/s of message
# bytes durably accepted
# by ringpost on a fresh store, bodies of SEGMENT_MIN_KB and more in
# segment files (0: every body through RocksDB's WAL and memtable).
accept_mb_s() {
    local label=$1 data="$WORK/data-$1" port rate ok
    mkdir -p "$data"
    printf '[store]\nsegment_min_kb = %s\n' "$2" >"$WORK/$label.toml"
    port=$(free_port)
    "$RINGPOST" serve --config "$WORK/$label.toml" --no-relay --data-dir "$data" \
        --ephemeral-ports 127.0.0.1 --smtp "127.0.0.1:$port" --metrics "127.0.0.1:$(free_port)" \
        >"$WORK/$label.log" 2>&1 &
    RINGPOST_PID=$!
    wait_port "$port" 60 "$RINGPOST_PID" || die "ringpost did not start: $(tail -5 "$WORK/$label.log")"
    "$BLAST" send --to-addr "127.0.0.1:$port" --messages "$MESSAGES" --connections "$CONNECTIONS" \
        --size "$SIZE" --pipelining on --json >"$WORK/$label.json"
    stop_ringpost
    rm -rf "$data"
    rate=$(json_num msg_per_s "$WORK/$label.json")
    ok=$(json_num messages_ok "$WORK/$label.json")
    [[ $ok == "$MESSAGES" ]] || die "$label: only $ok of $MESSAGES acknowledged: $(cat "$WORK/$label.json")"
    log "$label: $rate msg/s"
    ACCEPTED=$(awk -v r="$rate" -v s="$SIZE" 'BEGIN {printf "%.1f", r * s / 1e6}')
}

accept_mb_s segments "$((SIZE / 1024 < 64 ? SIZE / 1024 : 64))"
accept=$ACCEPTED
disk_between=$(disk_mb_s)
log "disk between: $disk_between MB/s"
accept_mb_s rocksdb-only 0
accept_wal=$ACCEPTED

disk_after=$(disk_mb_s)
log "disk again: $disk_after MB/s"
# The median of the three probes: this disk's speed moves a lot, and one
# odd probe should not decide the ratio.
disk=$(printf '%s\n' "$disk_before" "$disk_between" "$disk_after" | sort -g | sed -n 2p)
ratio=$(awk -v a="$accept" -v d="$disk" 'BEGIN {printf "%.2f", a / d}')

printf '\n%-46s %12s\n' "" "measured"
printf '%-46s %12s\n' "durable accept, MB/s, bodies in segments" "$accept"
printf '%-46s %12s\n' "durable accept, MB/s, bodies through the WAL" "$accept_wal"
printf '%-46s %12s\n' "disk, fsynced sequential write, MB/s (median)" "$disk"
printf '%-46s %12s   %s\n' "accept / disk" "$ratio" ">= 0.75"
printf '%-46s %12s\n' "segments / through the WAL" "$(awk -v a="$accept" -v b="$accept_wal" 'BEGIN {printf "%.2f", a / b}')"
