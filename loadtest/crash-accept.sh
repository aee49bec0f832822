#!/usr/bin/env bash
# crash-accept.sh — kill ringpost with SIGKILL in the middle of a blast and
# check that no message answered 250 was lost.
#
#   loadtest/crash-accept.sh                 # 100 connections, kill after 3 s
#   CONNECTIONS=50 KILL_AFTER=5 loadtest/crash-accept.sh
#
# ringpost-blast writes one line per 250 to an ack log; after the kill,
# `ringpost spool stats` (read-only, on the crashed store) must count at least
# that many messages. The server is then restarted on the same store to show
# it recovers, and stopped with SIGTERM. Loopback only; bounded waits; an EXIT
# trap cleans up. Exit status 0 = nothing lost.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-100}
SIZE=${SIZE:-2048}
KILL_AFTER=${KILL_AFTER:-3}

LOG_TAG=crash-accept
# log; ROOT, RINGPOST, BLAST
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-crash.XXXXXX")
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill -KILL "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p ringpost -p ringpost-loadtest

start_server() {
  "$RINGPOST" serve --no-relay --data-dir "$WORK/data" --ephemeral-ports 127.0.0.1 --smtp 127.0.0.1:0 --metrics 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER=$!
  for _ in $(seq 300); do
    ADDR=$(awk '$1 == "smtp" {print $2}' "$WORK/server.out" 2>/dev/null || true)
    [ -n "$ADDR" ] && return 0
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.err" >&2; return 1; }
    sleep 0.1
  done
  log "server did not start"; return 1
}

count_messages() { "$RINGPOST" spool stats --data-dir "$WORK/data" | awk '$1 == "messages" {print $2}'; }

start_server
log "ringpost on $ADDR; blasting $CONNECTIONS connections, SIGKILL after ${KILL_AFTER}s"
"$BLAST" send --to-addr "$ADDR" --connections "$CONNECTIONS" --duration 60 --size "$SIZE" \
  --pipelining on --ack-log "$WORK/acks" --json >"$WORK/blast.json" 2>"$WORK/blast.err" &
BLASTER=$!
sleep "$KILL_AFTER"
kill -KILL "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
wait "$BLASTER" || true   # it counts the refused connections and ends by itself
ACKED=$(wc -l <"$WORK/acks")
STORED=$(count_messages)
log "acknowledged with 250: $ACKED; in the store after the crash: $STORED"

start_server
AFTER=$(count_messages)
kill -TERM "$SERVER"; wait "$SERVER"; SERVER=""
log "after restart and clean stop: $AFTER"

LOST=$(( ACKED > STORED ? ACKED - STORED : 0 ))
echo "crash-accept: acked=$ACKED stored=$STORED after_restart=$AFTER lost=$LOST"
[ "$LOST" -eq 0 ] && [ "$AFTER" -ge "$ACKED" ]
