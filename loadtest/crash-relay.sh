#!/usr/bin/env bash
# crash-relay.sh — kill the relay with SIGKILL in the middle of a blast,
# restart it on the same store, and check that every message it answered 250
# still reaches the next hop:
#
#   ringpost-blast send --ack-log --> ringpost (smarthost) --> ringpost-blast sink --id-log
#
#   loadtest/crash-relay.sh                        # 100000 msgs, 50 connections, SIGKILL after 3 s
#   KILL_AFTER=5 SINK_TEMPFAIL=10 loadtest/crash-relay.sh
#
# Environment (all optional):
#   MESSAGES=100000  messages the blaster tries to send (it stops by itself
#                    soon after the server dies)
#   CONNECTIONS=50   blaster connections
#   SIZE=2048        message size in bytes
#   DOMAINS=100      ringpost-blast --domains
#   KILL_AFTER=3     seconds after the blast starts before ringpost gets SIGKILL
#   SINK_TEMPFAIL=0  sink --tempfail-data PCT
#   STALL=15         after the restart, stop waiting when nothing new has
#                    reached the sink for this many seconds
#   RECOVER_TIMEOUT=600  at most this long after the restart
#   SKIP_BUILD=1     use the release binaries as they are
#   LOG_DIR=         copy the logs (both ringpost runs' output with
#                    RUST_LOG=info, blaster and sink output) here
#
# Afterwards: acked = X-Blast-Seqs the blaster got a 2xx for (ack log);
# received = unique seqs in the sink's id log; duplicates = id log lines
# minus unique seqs (delivered twice: expected in small numbers after a
# crash, at-least-once); lost = acked seqs missing at the sink. Loopback
# only; bounded waits; an EXIT trap stops what was started and deletes the
# temp dir. Exit status 0 = nothing lost, 1 = mail lost or something failed.
set -euo pipefail

MESSAGES=${MESSAGES:-100000}
CONNECTIONS=${CONNECTIONS:-50}
SIZE=${SIZE:-2048}
DOMAINS=${DOMAINS:-100}
KILL_AFTER=${KILL_AFTER:-3}
SINK_TEMPFAIL=${SINK_TEMPFAIL:-0}
STALL=${STALL:-15}
RECOVER_TIMEOUT=${RECOVER_TIMEOUT:-600}
SKIP_BUILD=${SKIP_BUILD:-}
LOG_DIR=${LOG_DIR:-}

LOG_TAG=crash-relay
# log, alive, await_output, on_exit, seq-log helpers; ROOT, RINGPOST, BLAST
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-crash-relay.XXXXXX")
SERVER=""
SINK=""
BLASTER=""

# stop PID: SIGTERM, bounded wait, SIGKILL.
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 300); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "process $pid ignored SIGTERM for 30 s (tried ${i}x); SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Run by on_exit, before the temp dir is deleted.
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if [[ -n $BLASTER ]]; then kill -KILL "$BLASTER" 2>/dev/null || true; fi
    if [[ -n $SERVER ]]; then kill -KILL "$SERVER" 2>/dev/null || true; fi
    if [[ -n $SINK ]]; then stop "$SINK"; fi
    if [[ -n $LOG_DIR ]]; then
        mkdir -p "$LOG_DIR"
        cp "$WORK"/*.log "$WORK"/*.out "$WORK"/*.err "$WORK"/*.json "$WORK"/*.toml "$LOG_DIR"/ 2>/dev/null || true
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -n $SKIP_BUILD ]] || cargo build --release -q -p ringpost -p ringpost-loadtest

missing() { comm -23 <(acked_seqs "$WORK/acks") <(sink_seqs "$WORK/ids") | wc -l; }

# --- the sink ------------------------------------------------------------------
"$BLAST" sink --listen 127.0.0.1:0 --tempfail-data "$SINK_TEMPFAIL" --seed 1 \
    --id-log "$WORK/ids" --json >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK=$!
# shellcheck disable=SC2016  # an awk program
await_output SINK_ADDR "$WORK/sink.out" '$1 == "listening" {print $3; exit}' "$SINK" 300 ||
    { log "the sink did not start:"; cat "$WORK/sink.err" >&2; exit 1; }

cat >"$WORK/ringpost.toml" <<EOF
hostname = "relay.example.test"
data_dir = "$WORK/data"

[smtp]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[relay]
smarthost = "$SINK_ADDR"
retry_initial_secs = 1
retry_max_secs = 2
EOF

# start_server N: ringpost run N on the shared store; sets SERVER and ADDR.
start_server() {
    local n=$1
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$RINGPOST" serve --config "$WORK/ringpost.toml" --ephemeral-ports 127.0.0.1 \
        >"$WORK/server$n.log" 2>&1 &
    SERVER=$!
    # shellcheck disable=SC2016  # an awk program
    if await_output ADDR "$WORK/server$n.log" '$1 == "smtp" {print $2}' "$SERVER" 600; then
        return 0
    fi
    log "ringpost (run $n) did not start:"
    tail -n 30 "$WORK/server$n.log" >&2 || true
    return 1
}

# --- blast, kill -----------------------------------------------------------------
start_server 1
log "sink on $SINK_ADDR; ringpost on $ADDR; blasting $MESSAGES x $SIZE B over $CONNECTIONS connections to $DOMAINS domains; SIGKILL after ${KILL_AFTER}s"
"$BLAST" send --to-addr "$ADDR" --messages "$MESSAGES" --connections "$CONNECTIONS" \
    --size "$SIZE" --domains "$DOMAINS" --pipelining on --ack-log "$WORK/acks" --json \
    >"$WORK/blast.json" 2>"$WORK/blast.err" &
BLASTER=$!
sleep "$KILL_AFTER"
if ! alive "$BLASTER"; then
    log "warning: the blast ended before the kill; raise MESSAGES or lower KILL_AFTER"
fi
AT_KILL=$(lines_of "$WORK/ids")
kill -KILL "$SERVER"
wait "$SERVER" 2>/dev/null || true
SERVER=""
# The blaster counts the refused connections and ends by itself (about a
# second after the server is gone); bounded anyway.
for _ in $(seq 600); do
    alive "$BLASTER" || break
    sleep 0.1
done
if alive "$BLASTER"; then
    log "the blaster did not end within 60 s of the kill; killing it"
    kill -KILL "$BLASTER" 2>/dev/null || true
fi
wait "$BLASTER" 2>/dev/null || true
BLASTER=""
ACKED=$(acked_seqs "$WORK/acks" | wc -l)
log "killed; acked $ACKED, at the sink when killed: $AT_KILL lines, missing now: $(missing)"

# --- restart, wait for the rest ------------------------------------------------------
start_server 2
log "restarted on the same store ($ADDR); waiting until every acked message is at the sink (stall limit ${STALL}s)"
t0=$SECONDS
last=-1
last_change=$SECONDS
outcome=""
while :; do
    count=$(lines_of "$WORK/ids")
    if ((count != last)); then
        last=$count
        last_change=$SECONDS
        # Only worth the comparison when something arrived.
        if (($(missing) == 0)); then
            outcome="all acked messages arrived $((SECONDS - t0)) s after the restart"
            break
        fi
    fi
    if ((SECONDS - last_change >= STALL)); then
        outcome="nothing new for ${STALL}s"
        break
    fi
    if ((SECONDS - t0 > RECOVER_TIMEOUT)); then
        outcome="gave up after ${RECOVER_TIMEOUT}s"
        break
    fi
    if ! alive "$SERVER"; then
        outcome="ringpost (run 2) died"
        break
    fi
    sleep 0.2
done
log "$outcome"
# A little longer for late duplicates, then a clean stop.
sleep 2
if alive "$SERVER"; then
    stop "$SERVER"
fi
SERVER=""
stop "$SINK"
SINK=""
log "sink report: $(tail -n 1 "$WORK/sink.out")"
STATS=$(timeout 60 "$RINGPOST" spool stats --data-dir "$WORK/data" 2>&1 | tr '\n' ' ' || true)
log "spool after the clean stop: $STATS"
for n in 1 2; do
    log "ringpost run $n log: $(grep -c ' WARN ' "$WORK/server$n.log" || true) WARN, $(grep -c ' ERROR ' "$WORK/server$n.log" || true) ERROR lines; $(grep -c 'ringpost::mail: delivery' "$WORK/server$n.log" || true) recipient delivery attempts (mail log lines)"
    grep 'queue entries loaded' "$WORK/server$n.log" | cut -c1-200 >&2 || true
done

LINES=$(lines_of "$WORK/ids")
RECEIVED=$(sink_seqs "$WORK/ids" | wc -l)
DUPS=$((LINES - RECEIVED))
LOST=$(missing)
EXTRA=$(comm -13 <(acked_seqs "$WORK/acks") <(sink_seqs "$WORK/ids") | wc -l)
if ((LOST > 0)); then
    log "first lost seqs: $(comm -23 <(acked_seqs "$WORK/acks") <(sink_seqs "$WORK/ids") | head -n 10 | tr '\n' ' ')"
fi
echo "crash-relay: acked=$ACKED received_unique=$RECEIVED duplicates=$DUPS lost=$LOST received_not_acked=$EXTRA ($outcome)"
((LOST == 0))
