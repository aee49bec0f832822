#!/usr/bin/env bash
# bench-accept.sh — the accept benchmark: how fast does a server take mail in
# (SMTP in, durably queued, 250 out), ringpost against Postfix, same load,
# same generator (ringpost-blast), same machine, loopback only.
#
#   loadtest/bench-accept.sh                  # 50000 x 2 KB over 100 pipelined connections
#   MESSAGES=20000 CONNECTIONS=20 loadtest/bench-accept.sh
#
# Environment (all optional):
#   MESSAGES=50000      messages per server
#   CONNECTIONS=100     concurrent SMTP connections
#   SIZE=2048           message size in bytes
#   PIPELINING=on       ringpost-blast --pipelining (on|off)
#   BLAST_THREADS=      ringpost-blast --threads (default: its own, = CPUs)
#   RINGPOST_PORT= POSTFIX_PORT= METRICS_PORT=   fixed ports (default: free ones)
#   SKIP_RINGPOST=1 / SKIP_POSTFIX=1            run only one half
#   SKIP_SINK=1         skip the ceiling run into Postfix's smtp-sink
#   SKIP_SOURCE=1       skip the runs of Postfix's smtp-source (no pipelining)
#   SOURCE_SESSIONS=50  smtp-source -s: its parallel sessions
#   SOURCE_REUSE=1      smtp-source -d: a session sends its messages over one
#                       connection; 0: a new connection for each message
#   BLAST_TIMEOUT=600   seconds one blast may take before it is killed
#
# What each side does:
# * ringpost: `ringpost serve` on a fresh data dir; every 250 means the
#   message was committed (fsync) to its store.
# * Postfix 3.x: a private instance (`postfix -c DIR`, its own queue under the
#   same temp dir) that accepts, writes and fsyncs each message into its queue
#   but never delivers: an end-of-data `HOLD` action sends every message to
#   the hold queue, which the queue manager never schedules. `in_flow_delay = 0`
#   because Postfix's inflow control hands out tokens only when qmgr moves
#   mail out of `incoming`, which held mail never enters; left at 1s it would
#   throttle smtpd to a crawl. Logging goes to a file through postlogd, as on
#   a real installation. The script checks afterwards that every accepted
#   message is in the hold queue and that nothing was delivered.
#
# * the ceiling: the same blast into Postfix's `smtp-sink`, which answers
#   250 and stores nothing: durable accept / this is how close ringpost
#   comes to what the blaster can push through loopback on this machine
#   (issue 15's goal: >= 0.95). Each blast's own CPU (user + system, from
#   bash's `time`) is reported per 100,000 messages: the blaster shares the
#   CPUs with the server, so its cost is part of the ceiling. The blaster
#   sends each next envelope with the body (`--chain`, RFC 2920); a second
#   blast into the sink with `--chain off` shows what that saves.
# * Postfix's `smtp-source -d -s SOURCE_SESSIONS` (one message at a time
#   per session, no pipelining: per-command latency and system calls per
#   reply; with SOURCE_REUSE=0, no -d: a connection per message) against
#   ringpost, against Postfix, and against smtp-sink, which is
#   smtp-source's own ceiling on this machine: msg/s from wall time.
#
# Both data directories live under one mktemp dir (on $TMPDIR or /tmp), so
# both servers fsync to the same filesystem; its type is printed. Everything
# binds 127.0.0.1. Every wait is bounded; an EXIT trap stops what was started
# and deletes the temp dir. Postfix is installed with apt-get if missing
# (needs root). Exit status: 0 if both halves ran without errors, else 1.

set -euo pipefail

MESSAGES=${MESSAGES:-50000}
CONNECTIONS=${CONNECTIONS:-100}
SIZE=${SIZE:-2048}
PIPELINING=${PIPELINING:-on}
BLAST_THREADS=${BLAST_THREADS:-}
BLAST_TIMEOUT=${BLAST_TIMEOUT:-600}
SKIP_RINGPOST=${SKIP_RINGPOST:-}
SKIP_POSTFIX=${SKIP_POSTFIX:-}
SKIP_SINK=${SKIP_SINK:-}
SKIP_SOURCE=${SKIP_SOURCE:-}
SOURCE_SESSIONS=${SOURCE_SESSIONS:-50}
SOURCE_REUSE=${SOURCE_REUSE:-1}
SOURCE_ARGS=(-s "$SOURCE_SESSIONS")
[[ $SOURCE_REUSE == 0 ]] || SOURCE_ARGS=(-d "${SOURCE_ARGS[@]}")

LOG_TAG=bench-accept
# log, die, process/port/Postfix helpers, on_exit; ROOT, RINGPOST, BLAST
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-accept.XXXXXX")
# Postfix daemons run as user postfix and must traverse to their queue.
chmod 755 "$WORK"

RINGPOST_PID=""
PF_CONF=""     # set while a private Postfix instance may be running

# Run by on_exit, before the temp dir is deleted.
# shellcheck disable=SC2317  # invoked by the EXIT trap
SINK_PID=""
cleanup() {
    stop_ringpost
    stop_postfix
    if [[ -n $SINK_PID ]]; then
        stop_pid "$SINK_PID" smtp-sink
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

# blast LABEL PORT [ARGS...]: runs the load (more ringpost-blast ARGS
# after the common ones); leaves LABEL's results in R_<label>_*.
blast() {
    local label=$1 port=$2 out=$WORK/$1.json rc=0
    local args=(send --to-addr "127.0.0.1:$port" --messages "$MESSAGES"
        --connections "$CONNECTIONS" --size "$SIZE" --pipelining "$PIPELINING" --json "${@:3}")
    [[ -n $BLAST_THREADS ]] && args+=(--threads "$BLAST_THREADS")
    log "$label: ringpost-blast ${args[*]}"
    # The blaster's own CPU (user and system seconds), from bash's `time`.
    local TIMEFORMAT='%U %S'
    { time timeout "$BLAST_TIMEOUT" "$BLAST" "${args[@]}" >"$out" 2>"$WORK/$label.err" || rc=$?; } 2>"$WORK/$label.cpu"
    cat "$WORK/$label.err" >&2 || true
    if [[ ! -s $out ]]; then
        log "$label: ringpost-blast produced no report (exit $rc)"
        printf -v "R_${label}_rate" '%s' "n/a"
        printf -v "R_${label}_errors" '%s' "blast failed (exit $rc)"
        printf -v "R_${label}_ok" '%s' 0
        return 1
    fi
    cat "$out" >&2
    printf -v "R_${label}_rate" '%s' "$(json_num msg_per_s "$out")"
    printf -v "R_${label}_ok" '%s' "$(json_num messages_ok "$out")"
    local errors
    errors=$(json_errors "$out")
    [[ $errors == "{}" ]] && errors=none
    printf -v "R_${label}_errors" '%s' "$errors (failed $(json_num messages_failed "$out"))"
    local cpu
    cpu=$(awk -v ok="$(json_num messages_ok "$out")" 'NF == 2 && ok > 0 {printf "%.1f", ($1 + $2) / ok * 100000}' "$WORK/$label.cpu")
    printf -v "R_${label}_cpu" '%s' "${cpu:-n/a}"
    return "$rc"
}

# source_run LABEL PORT: Postfix's smtp-source against PORT; sets
# R_source_LABEL (msg/s from wall time).
source_run() {
    local label=$1 port=$2 start end
    log "$label: smtp-source ${SOURCE_ARGS[*]} -l $SIZE -m $MESSAGES"
    start=$(date +%s.%N)
    if ! timeout "$BLAST_TIMEOUT" smtp-source "${SOURCE_ARGS[@]}" -l "$SIZE" -m "$MESSAGES" \
        -f sender@bench.example.test -t rcpt@bench.example.test "127.0.0.1:$port" >"$WORK/source-$label.out" 2>&1; then
        log "$label: smtp-source failed: $(tail -3 "$WORK/source-$label.out")"
        printf -v "R_source_${label}" '%s' "n/a"
        return 1
    fi
    end=$(date +%s.%N)
    printf -v "R_source_${label}" '%s' "$(awk -v m="$MESSAGES" -v s="$start" -v e="$end" 'BEGIN {printf "%.1f", m / (e - s)}')"
}

# Results, filled in by blast() through printf -v.
R_ringpost_rate="n/a"; R_ringpost_errors="not run"; R_ringpost_cpu="n/a"
R_postfix_rate="n/a";  R_postfix_errors="not run";  R_postfix_ok=0; R_postfix_cpu="n/a"
R_sink_rate="n/a";     R_sink_errors="not run";     R_sink_cpu="n/a"
R_sink_unchained_rate="n/a"; R_sink_unchained_cpu="n/a"
R_source_ringpost="n/a"; R_source_postfix="n/a"; R_source_sink="n/a"
STATUS=0

# --- build ------------------------------------------------------------------
RINGPOST_BUILT=1
build_release
[[ -x $BLAST ]] || die "missing $BLAST"

FS_TYPE=$(df -PT "$WORK" | awk 'NR==2 {print $2}')
log "load: $MESSAGES x $SIZE B over $CONNECTIONS connections, pipelining $PIPELINING; data on $FS_TYPE ($WORK); $(nproc) CPUs"

# --- ringpost ----------------------------------------------------------------
start_ringpost() {
    local port=$1 mport=$2
    "$RINGPOST" serve --no-relay --data-dir "$WORK/ringpost-data" --ephemeral-ports 127.0.0.1 \
        --smtp "127.0.0.1:$port" --metrics "127.0.0.1:$mport" \
        >"$WORK/ringpost.log" 2>&1 &
    RINGPOST_PID=$!
}

run_ringpost() {
    if [[ -z $RINGPOST_BUILT ]]; then
        R_ringpost_errors="build failed"
        return 1
    fi
    local port=${RINGPOST_PORT:-$(free_port)} mport=${METRICS_PORT:-$(free_port)}
    mkdir -p "$WORK/ringpost-data"
    log "ringpost: serve on 127.0.0.1:$port (metrics :$mport), data $WORK/ringpost-data"
    start_ringpost "$port" "$mport"
    if ! wait_port "$port" 60 "$RINGPOST_PID"; then
        log "ringpost exited or did not listen within 60 s; its log:"
        tail -n 30 "$WORK/ringpost.log" >&2 || true
        stop_ringpost
        R_ringpost_errors="did not start"
        return 1
    fi
    local rc=0
    blast ringpost "$port" || rc=1
    if [[ -z $SKIP_SOURCE ]] && command -v smtp-source >/dev/null; then
        source_run ringpost "$port" || rc=1
    fi
    stop_ringpost
    log "ringpost log (tail):"
    tail -c 4000 "$WORK/ringpost.log" | tr '\r' '\n' | tail -n 5 | cut -c1-300 >&2 || true
    return "$rc"
}

# --- Postfix -----------------------------------------------------------------
write_postfix_config() {
    local pf=$1 port=$2
    # compatibility/no-local-delivery/no-DNS settings as in
    # shared/external-tools.md §2 (the common head from pf_init, the rest
    # here); the accept-only part is the HOLD line.
    pf_init "$pf" bench.example.test
    cat >>"$pf/etc/main.cf" <<EOF
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
# Accept and queue (cleanup fsyncs every queue file), never deliver: every
# message goes to the hold queue, which qmgr does not touch.
smtpd_end_of_data_restrictions = check_client_access static:HOLD
# Should anything escape the hold queue, it would go nowhere (discard port).
relayhost = [127.0.0.1]:9
# Inflow tokens come from qmgr taking mail out of incoming; held mail never
# gets there, so without this smtpd would sleep 1 s per message.
in_flow_delay = 0
# One smtpd process per connection, plus headroom.
default_process_limit = $((CONNECTIONS + 50))
EOF
    # Only the services this setup needs; none chrooted (no /etc copies).
    cat >"$pf/etc/master.cf" <<EOF
127.0.0.1:$port inet n   -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

run_postfix() {
    if ! ensure_postfix; then
        R_postfix_errors="postfix not available"
        return 1
    fi
    local pf=$WORK/postfix port=${POSTFIX_PORT:-$(free_port)}
    write_postfix_config "$pf" "$port"
    PF_CONF=$pf/etc
    log "postfix $(postconf -c "$PF_CONF" -h mail_version 2>/dev/null): private instance on 127.0.0.1:$port, queue $pf/spool"
    # `check` also creates the queue directories with the right owners.
    if ! pf_admin check >&2 || ! pf_admin start >&2; then
        log "postfix failed to start"
        R_postfix_errors="did not start"
        return 1
    fi
    if ! wait_port "$port" 60; then
        log "postfix did not listen within 60 s; maillog:"
        tail -n 30 "$pf/maillog" >&2 || true
        R_postfix_errors="did not start"
        return 1
    fi
    local rc=0
    blast postfix "$port" || rc=1
    if [[ -z $SKIP_SOURCE ]]; then
        # Its messages go to the hold queue too, and count in the check below.
        if source_run postfix "$port"; then
            R_postfix_ok=$((R_postfix_ok + MESSAGES))
        else
            rc=1
        fi
    fi
    stop_postfix
    # Verify what "accepted" meant: queued (held), not delivered.
    local held delivered
    held=$(find "$pf/spool/hold" -type f | wc -l)
    delivered=$(grep -c 'status=sent' "$pf/maillog" || true)
    log "postfix: $held messages in the hold queue, $delivered delivered"
    if [[ $held != "$R_postfix_ok" || $delivered != 0 ]]; then
        log "postfix: expected $R_postfix_ok held and 0 delivered"
        R_postfix_errors="$R_postfix_errors; queue check failed (held $held, delivered $delivered)"
        rc=1
    fi
    return "$rc"
}

# smtp-source and smtp-sink come with Postfix.
if [[ -z $SKIP_SOURCE || -z $SKIP_SINK ]]; then
    ensure_postfix || log "no Postfix: no smtp-source or smtp-sink runs"
fi
if [[ -z $SKIP_RINGPOST ]]; then
    run_ringpost || STATUS=1
fi
if [[ -z $SKIP_POSTFIX ]]; then
    # Let the first half's dirty pages reach the disk now rather than during
    # the Postfix measurement.
    timeout 120 sync || true
    run_postfix || STATUS=1
fi
if [[ -z $SKIP_SINK ]] && ensure_postfix; then
    # The ceiling: the same blast into a server that stores nothing.
    sink_port=$(free_port)
    smtp-sink -u postfix "127.0.0.1:$sink_port" 1000 >"$WORK/smtp-sink.log" 2>&1 &
    SINK_PID=$!
    if wait_port "$sink_port" 30 "$SINK_PID"; then
        blast sink "$sink_port" || STATUS=1
        # The blaster as it was before --chain (the envelope waits for the
        # body's reply): its CPU per message beside today's.
        [[ $PIPELINING == on ]] && { blast sink_unchained "$sink_port" --chain off || STATUS=1; }
        # smtp-source's own ceiling: what it reaches against a server that
        # stores nothing bounds what any server can show with it.
        if [[ -z $SKIP_SOURCE ]]; then
            source_run sink "$sink_port" || STATUS=1
        fi
    else
        R_sink_errors="smtp-sink did not start: $(tail -2 "$WORK/smtp-sink.log")"
    fi
    stop_pid "$SINK_PID" smtp-sink
    SINK_PID=""
fi

# --- report ------------------------------------------------------------------
ratio="n/a"
if [[ $R_ringpost_rate =~ ^[0-9.eE+-]+$ && $R_postfix_rate =~ ^[0-9.eE+-]+$ ]]; then
    ratio=$(awk -v a="$R_ringpost_rate" -v b="$R_postfix_rate" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
fi
fmt_rate() { [[ $1 =~ ^[0-9.eE+-]+$ ]] && printf '%.1f msg/s' "$1" || printf '%s' "$1"; }

echo
echo "accept benchmark: $MESSAGES x $SIZE B, $CONNECTIONS connections, pipelining $PIPELINING, fsync to $FS_TYPE, $(nproc) CPUs"
echo "  ringpost: $(fmt_rate "$R_ringpost_rate")   errors: $R_ringpost_errors"
echo "  postfix:  $(fmt_rate "$R_postfix_rate")   errors: $R_postfix_errors"
echo "  ratio ringpost/postfix: $ratio"
ceiling="n/a"
if [[ $R_ringpost_rate =~ ^[0-9.eE+-]+$ && $R_sink_rate =~ ^[0-9.eE+-]+$ ]]; then
    ceiling=$(awk -v a="$R_ringpost_rate" -v b="$R_sink_rate" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
fi
echo "  smtp-sink (stores nothing): $(fmt_rate "$R_sink_rate")   errors: $R_sink_errors"
echo "  ratio ringpost/smtp-sink: $ceiling   (goal >= 0.95)"
echo "  blaster CPU-seconds per 100,000 messages: into ringpost $R_ringpost_cpu, postfix $R_postfix_cpu, smtp-sink $R_sink_cpu"
echo "  into smtp-sink with --chain off (the blaster before chaining): $(fmt_rate "$R_sink_unchained_rate"), CPU-seconds per 100,000: $R_sink_unchained_cpu"
source_ratio="n/a"
if [[ $R_source_ringpost =~ ^[0-9.]+$ && $R_source_postfix =~ ^[0-9.]+$ ]]; then
    source_ratio=$(awk -v a="$R_source_ringpost" -v b="$R_source_postfix" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
fi
echo "  smtp-source ${SOURCE_ARGS[*]} (no pipelining): ringpost $(fmt_rate "$R_source_ringpost"), postfix $(fmt_rate "$R_source_postfix"), ratio $source_ratio"
source_ceiling="n/a"
if [[ $R_source_ringpost =~ ^[0-9.]+$ && $R_source_sink =~ ^[0-9.]+$ ]]; then
    source_ceiling=$(awk -v a="$R_source_ringpost" -v b="$R_source_sink" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
fi
echo "  smtp-source into smtp-sink (its own ceiling): $(fmt_rate "$R_source_sink"), ringpost/that $source_ceiling"
echo "SUMMARY accept ringpost=$(fmt_rate "$R_ringpost_rate") postfix=$(fmt_rate "$R_postfix_rate") ratio=$ratio status=$([[ $STATUS == 0 ]] && echo ok || echo errors)"
exit "$STATUS"
