#!/usr/bin/env bash
# bench-deep-queue.sh — a deep queue: does ringpost slow down when a million
# deferred entries wait in its queue, and how long does a restart with them
# take?
#
#   loadtest/bench-deep-queue.sh                 # 1,000,000 deferred entries
#   ENTRIES=200000 loadtest/bench-deep-queue.sh
#
# Environment (all optional):
#   ENTRIES=1000000   messages queued for a destination that refuses every
#                     connection (one queue entry each), deferred for a day
#   PROBE=20000       messages of each accept probe
#   SIZE=1024         message size, bytes
#   CONNECTIONS=50    blaster connections
#   SKIP_BUILD=1      use the release binaries as they are
#   LOG_DIR=          copy ringpost's log (RUST_LOG=info), the config and the
#                     blaster reports here; otherwise they go with the temp dir
#
# What happens, on one `ringpost serve` with a fresh RocksDB store:
# 1. accept probe on the empty queue: PROBE messages to probe.test (routed to
#    a ringpost-blast sink, so they leave the queue again): msg/s;
# 2. fill: ENTRIES messages to deep.test, routed to a closed port; every
#    attempt fails and is deferred for 86,400 s (the scheduler keeps
#    relay.max_queued_per_shard entries per shard in memory, the rest wait in
#    the store); wait until the relay's deferrals stop growing;
# 3. accept probe with the deep queue: the same load; ratio to step 1 (goal
#    >= 0.90);
# 4. memory: RSS with the deep queue minus RSS after step 1, per entry held in
#    memory (ringpost_relay_queue_entries; this includes RocksDB's memtables
#    and caches), and the scheduler's own: after two restarts on the same
#    store, one holding half as many entries in memory
#    (relay.max_queued_per_shard halved), the RSS difference over the
#    difference in entries held — what one more entry costs, with RocksDB's
#    caches (full in both) and everything else fixed taken out (goal <= 200
#    bytes);
# 5. `ringpost queue stats` with the deep queue: wall time (goal < 1 s);
# 6. restart: SIGTERM (time to stop), start again on the same store (time to
#    the SMTP listener), one message to probe.test sent as soon as it listens:
#    time from the start command until the sink has it (goal < 10 s).
#
# Everything binds 127.0.0.1; every wait is bounded; an EXIT trap stops what
# was started and deletes the temp dir. Exit status: 0 if every step ran,
# else 1.

set -euo pipefail

ENTRIES=${ENTRIES:-1000000}
PROBE=${PROBE:-20000}
SIZE=${SIZE:-1024}
CONNECTIONS=${CONNECTIONS:-50}
SKIP_RINGPOST=""

LOG_TAG=bench-deep-queue
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-deep.XXXXXX")
RINGPOST_PID=""
SINK_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    stop_ringpost
    stop_sink
    if [[ -n ${LOG_DIR:-} ]]; then
        mkdir -p "$LOG_DIR"
        cp "$WORK"/*.log "$WORK"/*.json "$WORK"/*.toml "$WORK"/*.out "$LOG_DIR"/ 2>/dev/null || true
    fi
}
trap on_exit EXIT

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN {printf "%.2f", a - b}'; }

# start_sink [ARGS...]: a fresh sink; sets SINK_PID and SINK_ADDR.
start_sink() {
    "$BLAST" sink --listen 127.0.0.1:0 --json "$@" >"$WORK/sink.out" 2>"$WORK/sink.err" &
    SINK_PID=$!
    # shellcheck disable=SC2016  # an awk program
    await_output SINK_ADDR "$WORK/sink.out" '$1 == "listening" {print $3; exit}' "$SINK_PID" 300 ||
        die "the sink did not start: $(cat "$WORK/sink.err")"
}

# start_server [ARGS...]: ringpost on $WORK/data, routes to the sink and to
# a closed port; sets RINGPOST_PID, SMTP_ADDR, METRICS_URL and T_START.
start_server() {
    cat >"$WORK/ringpost.toml" <<EOF
hostname = "relay.example.test"
data_dir = "$WORK/data"

[smtp]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[relay]
max_queued_per_shard = ${QUEUED_PER_SHARD:-200000}
retry_initial_secs = 86400
retry_max_secs = 86400
max_lifetime_secs = 604800
connect_timeout_secs = 2

[relay.routes]
"deep.test" = "127.0.0.1:$DEAD_PORT"
"probe.test" = "$SINK_ADDR"
EOF
    if [[ -f $WORK/ringpost.log ]]; then mv "$WORK/ringpost.log" "$WORK/ringpost-before-restart.log"; fi
    T_START=$(now)
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$RINGPOST" serve --config "$WORK/ringpost.toml" \
        --ephemeral-ports 127.0.0.1 "$@" >"$WORK/ringpost.log" 2>&1 &
    RINGPOST_PID=$!
    # shellcheck disable=SC2016  # an awk program
    await_output SMTP_ADDR "$WORK/ringpost.log" '$1 == "smtp" {print $2; exit}' "$RINGPOST_PID" 1200 ||
        die "ringpost did not start: $(tail -5 "$WORK/ringpost.log")"
    METRICS_URL=$(awk '$1 == "metrics" {print $2; exit}' "$WORK/ringpost.log")
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$RINGPOST_PID/status"; }

# await_schedule N: waits (bounded) until the relay holds at least 99% of N
# entries in memory, lets it settle, then sets RSS_NOW and LOADED.
await_schedule() {
    local n=$1 deadline=$((SECONDS + 300))
    while (($(metric ringpost_relay_queue_entries) < n * 99 / 100)); do
        ((SECONDS < deadline)) || die "the schedule did not reload $n entries in 300 s"
        sleep 1
    done
    sleep 2
    RSS_NOW=$(rss_kib)
    LOADED=$(metric ringpost_relay_queue_entries)
}

# metric NAME: the sum of NAME's samples.
metric() {
    curl -s --max-time 10 "$METRICS_URL" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'
}

# blast LABEL N DOMAIN: N messages to DOMAIN; prints msg/s.
blast() {
    local label=$1 n=$2 domain=$3
    "$BLAST" send --to-addr "$SMTP_ADDR" --messages "$n" --connections "$CONNECTIONS" \
        --size "$SIZE" --rcpt-domain "$domain" --progress off --json \
        >"$WORK/$label.json" 2>"$WORK/$label.err" || die "$label: the blaster failed: $(tail -3 "$WORK/$label.err")"
    json_num msg_per_s "$WORK/$label.json"
}

command -v curl >/dev/null || ensure_package curl curl
[[ -n ${SKIP_BUILD:-} ]] || build_release
# Below the ephemeral range (32768+): a connection to a port in it can
# meet itself (a TCP simultaneous open) and hang in the greeting.
DEAD_PORT=""
for _ in $(seq 100); do
    p=$((10000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        DEAD_PORT=$p
        break
    fi
done
[[ -n $DEAD_PORT ]] || die "no closed port found below 30000"

start_sink
start_server
log "ringpost up in $(since "$T_START") s; sink $SINK_ADDR; nothing listens on 127.0.0.1:$DEAD_PORT"

# 1. the empty queue
empty_rate=$(blast probe-empty "$PROBE" probe.test)
sleep 2
empty_rss=$(rss_kib)
log "accept, empty queue: $empty_rate msg/s; RSS $((empty_rss / 1024)) MiB"

# 2. fill
t_fill=$(now)
fill_rate=$(blast fill "$ENTRIES" deep.test)
log "filled $ENTRIES in $(since "$t_fill") s ($fill_rate msg/s); waiting for the deferrals to settle"
last=-1
deadline=$((SECONDS + 1200))
while :; do
    deferred=$(metric ringpost_relay_recipients_total)
    [[ $deferred == "$last" ]] && break
    last=$deferred
    ((SECONDS < deadline)) || die "the relay did not settle in 1200 s"
    sleep 5
done
in_memory=$(metric ringpost_relay_queue_entries)
log "settled: $in_memory entries in memory; relay recipients counted $deferred"

# 3. accept with the deep queue
deep_rate=$(blast probe-deep "$PROBE" probe.test)
sleep 2
deep_rss=$(rss_kib)

# 4., 5.
t_stats=$(now)
"$RINGPOST" queue stats --data-dir "$WORK/data" >"$WORK/stats.out" 2>"$WORK/stats.err" ||
    die "queue stats failed: $(cat "$WORK/stats.err")"
stats_secs=$(since "$t_stats")
queued=$(awk '$1 == "(all)" {print $2; exit}' "$WORK/stats.out")

# 6. restart
t_stop=$(now)
stop_ringpost
stop_secs=$(since "$t_stop")
# The scheduler's own memory: the same store holding half as many in memory.
QUEUED_PER_SHARD=100000 start_server
await_schedule $((in_memory / 2))
half_rss=$RSS_NOW
half_loaded=$LOADED
stop_ringpost
stop_sink
start_sink --exit-after 1
start_server
listen_secs=$(since "$T_START")
"$BLAST" send --to-addr "$SMTP_ADDR" --messages 1 --connections 1 --rcpt-domain probe.test \
    --progress off --json >"$WORK/first.json" 2>"$WORK/first.err" || die "the first message after the restart was refused"
wait_gone "$SINK_PID" 600 || die "the first message after the restart did not arrive in 600 s"
first_secs=$(since "$T_START")
SINK_PID=""
# (The first message took the place of one deferred entry, then left.)
await_schedule "$in_memory"
relay_rss=$RSS_NOW
loaded=$LOADED

ratio=$(awk -v d="$deep_rate" -v e="$empty_rate" 'BEGIN {printf "%.2f", d / e}')
per_entry=$(awk -v a="$deep_rss" -v b="$empty_rss" -v n="$in_memory" 'BEGIN {printf "%.0f", (a - b) * 1024 / (n > 0 ? n : 1)}')
# Meaningful only when the queue is deeper than memory holds (ENTRIES over
# 2 x 200,000 with two shards): else both restarts hold the same.
schedule_entry=$(awk -v a="$relay_rss" -v b="$half_rss" -v n="$loaded" -v h="$half_loaded" \
    'BEGIN {if (n - h < n / 4) print "n/a"; else printf "%.0f", (a - b) * 1024 / (n - h)}')

printf '\nqueue: %s entries in the store (queue stats), %s held in memory\n' "${queued:-?}" "$in_memory"
printf '%-44s %14s   %s\n' "" "measured" "goal"
printf '%-44s %14s\n' "accept, empty queue, msg/s" "$empty_rate"
printf '%-44s %14s\n' "accept, deep queue, msg/s" "$deep_rate"
printf '%-44s %14s   %s\n' "ratio deep / empty" "$ratio" ">= 0.90"
printf '%-44s %14s\n' "RSS growth per entry in memory, bytes" "$per_entry"
printf '%-44s %14s   %s\n' "scheduler memory per entry, bytes" "$schedule_entry" "<= 200"
printf '%-44s %14s   %s\n' "queue stats, s" "$stats_secs" "< 1"
printf '%-44s %14s\n' "SIGTERM to exit, s" "$stop_secs"
printf '%-44s %14s\n' "restart to SMTP listening, s" "$listen_secs"
printf '%-44s %14s   %s\n' "restart to first delivery, s" "$first_secs" "< 10"
