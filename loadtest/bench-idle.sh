#!/usr/bin/env bash
# bench-idle.sh — what idle connections cost: ringpost's resident memory
# with N idle SMTP connections (after EHLO), then with N idle IMAP sessions
# (logged in, INBOX selected), against the goal of 10,000 of each in
# 300 MB in total.
#
#   loadtest/bench-idle.sh                  # 10000 SMTP, then 10000 IMAP
#   CONNECTIONS=2000 loadtest/bench-idle.sh
#
# Environment (all optional):
#   CONNECTIONS=10000   idle connections of each kind
#   SKIP_BUILD=1        use the release binary as it is
#   BUDGET_MB=300       the goal for both kinds together
#
# How: `ringpost serve` on a fresh data dir (relay off; per-IP and
# per-shard connection limits raised so one client address may hold them
# all) with one account. Its RSS (VmRSS of /proc/PID/status) is read after
# a warm-up (100 connections of each kind opened and closed, so allocator
# arenas and caches exist), then while loadtest/idle-clients.py holds N
# SMTP connections, then after they are closed, then while it holds N
# IMAP sessions. Each figure is the RSS rise over the level before it,
# divided by N. The client runs as a separate process; only the server's
# memory is counted. Kernel socket buffers are not in RSS and are not
# counted (they are the same for every server).
#
# Everything binds 127.0.0.1; every wait is bounded; an EXIT trap stops
# what was started and deletes the temp dir. Exit status: 0 if every
# connection was held, else 1 (the figures are printed either way).

set -euo pipefail

CONNECTIONS=${CONNECTIONS:-10000}
BUDGET_MB=${BUDGET_MB:-300}
SKIP_RINGPOST=""

LOG_TAG=bench-idle
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-idle.XXXXXX")
RINGPOST_PID=""
HOLDER_PID=""
cleanup() {
    stop_holder
    stop_ringpost
}
trap on_exit EXIT

# rss_kib: the server's resident set, KiB.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$RINGPOST_PID/status"
}

# hold PROTOCOL N [ARGS...]: starts idle-clients.py holding N connections and
# waits until it says they are all up (bounded). Its stdin is a FIFO we keep
# open; closing it ends the holder.
hold() {
    local protocol=$1 n=$2
    shift 2
    rm -f "$WORK/hold.in" "$WORK/hold.out"
    mkfifo "$WORK/hold.in"
    python3 loadtest/idle-clients.py "$ADDR" "$n" "$protocol" "$@" \
        <"$WORK/hold.in" >"$WORK/hold.out" 2>"$WORK/hold.err" &
    HOLDER_PID=$!
    exec 7>"$WORK/hold.in"
    local deadline=$((SECONDS + 600))
    until grep -q '^ready' "$WORK/hold.out" 2>/dev/null; do
        alive "$HOLDER_PID" || die "idle-clients.py ($protocol) failed: $(cat "$WORK/hold.err")"
        ((SECONDS < deadline)) || die "idle-clients.py ($protocol) did not finish connecting in 600 s"
        sleep 0.2
    done
}

# stop_holder: closes the holder's stdin (it closes its connections and
# exits) and waits for it.
stop_holder() {
    [[ -n $HOLDER_PID ]] || return 0
    exec 7>&- || true
    wait_gone "$HOLDER_PID" 60 || kill -KILL "$HOLDER_PID" 2>/dev/null || true
    wait "$HOLDER_PID" 2>/dev/null || true
    HOLDER_PID=""
}

# settle: lets the server notice closed connections and free their memory.
settle() { sleep 3; }

# Each connection is a file descriptor in the server and in the holder
# (separate processes, each with this limit).
ulimit -n $((CONNECTIONS + 1024)) 2>/dev/null ||
    die "cannot raise the open-file limit to $((CONNECTIONS + 1024)) (hard limit: $(ulimit -Hn))"

[[ -n ${SKIP_BUILD:-} ]] || build_release
# The first lines go into start_mail_server's [smtp] table.
start_mail_server idle@ours.test "max_connections_per_shard = $((CONNECTIONS + 100))
[limits]
max_connections_per_ip = 0
connections_per_minute_per_ip = 0
[imap]
max_connections_per_shard = $((CONNECTIONS + 100))
max_sessions_per_account = $((CONNECTIONS + 100))"
SMTP_ADDR=$(awk '$1 == "smtp" {print $2; exit}' "$WORK/ringpost.out")
[[ -n $SMTP_ADDR ]] || die "ringpost printed no smtp address"

# Warm-up: a few of each kind, opened and closed.
ADDR=$SMTP_ADDR hold smtp 100
stop_holder
ADDR=$RP_IMAP hold imap 100 idle@ours.test secret
stop_holder
settle

base=$(rss_kib)
log "baseline RSS: $((base / 1024)) MiB"
ADDR=$SMTP_ADDR hold smtp "$CONNECTIONS"
with_smtp=$(rss_kib)
stop_holder
settle
after_smtp=$(rss_kib)
ADDR=$RP_IMAP hold imap "$CONNECTIONS" idle@ours.test secret
with_imap=$(rss_kib)
stop_holder

smtp_each=$(awk -v a="$with_smtp" -v b="$base" -v n="$CONNECTIONS" 'BEGIN {printf "%.1f", (a - b) / n}')
imap_each=$(awk -v a="$with_imap" -v b="$after_smtp" -v n="$CONNECTIONS" 'BEGIN {printf "%.1f", (a - b) / n}')
total_mb=$(awk -v s="$smtp_each" -v i="$imap_each" -v n="$CONNECTIONS" -v b="$base" \
    'BEGIN {printf "%.0f", (b + (s + i) * n) / 1024}')
ratio=$(awk -v t="$total_mb" -v g="$BUDGET_MB" 'BEGIN {printf "%.2f", t / g}')

printf '\n%-28s %12s\n' "" "KiB"
printf '%-28s %12s\n' "baseline RSS" "$base"
printf '%-28s %12s   %s KiB each\n' "with $CONNECTIONS idle SMTP" "$with_smtp" "$smtp_each"
printf '%-28s %12s\n' "after closing them" "$after_smtp"
printf '%-28s %12s   %s KiB each\n' "with $CONNECTIONS idle IMAP" "$with_imap" "$imap_each"
printf '\nbaseline + %s SMTP + %s IMAP: %s MB; goal %s MB; ratio %s (<= 1 meets it)\n' \
    "$CONNECTIONS" "$CONNECTIONS" "$total_mb" "$BUDGET_MB" "$ratio"
