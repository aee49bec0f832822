#!/usr/bin/env bash
# shellcheck disable=SC2034  # the R_* results are read back by name (${!name})
# bench-relay.sh — the relay benchmark: how fast does mail go *through* a
# server (SMTP in, durably queued, delivered to the next hop), ringpost
# against Postfix, same load, same generator, same sink, same machine,
# loopback only:
#
#   ringpost-blast send --> relay under test --> ringpost-blast sink
#
#   loadtest/bench-relay.sh                          # 20000 x 2 KB, 50 connections, 100 domains
#   DOMAINS=1000 loadtest/bench-relay.sh
#   SINK_TEMPFAIL=10 loadtest/bench-relay.sh         # the sink answers 10% of messages 451
#
# Environment (all optional):
#   MESSAGES=20000      messages per server
#   CONNECTIONS=50      concurrent SMTP connections of the blaster
#   SIZE=2048           message size in bytes
#   DOMAINS=100         ringpost-blast --domains (recipients at d<seq % N>.example.test)
#   SINK_TEMPFAIL=0     ringpost-blast sink --tempfail-data PCT (the relay must retry)
#   SINK_THREADS=1      ringpost-blast sink --threads
#   PIPELINING=on       ringpost-blast --pipelining (on|off)
#   BLAST_THREADS=      ringpost-blast --threads (default: its own, = CPUs)
#   SHARDS=             ringpost --shards (default: the server's own, one per CPU)
#   POSTFIX_PORT=       fixed port for Postfix (default: a free one; the
#                       sink and ringpost take any free port)
#   RINGPOST_EXTRA_CONFIG=   TOML appended to ringpost's config (e.g.
#                       $'[suppression]\nenabled = false' to compare a feature's cost)
#   SKIP_RINGPOST=1 / SKIP_POSTFIX=1   run only one half
#   SKIP_BUILD=1        use the release binaries as they are
#   BLAST_TIMEOUT=600   seconds one blast may take before it is killed
#   DRAIN_TIMEOUT=600   seconds from blast start until the sink must have everything
#   STALL_TIMEOUT=60    give up when the sink's count has not moved for this long
#                       after the blast ended
#   SETTLE=2            seconds to keep the sink up after the last message, to
#                       catch late duplicates
#   LOG_DIR=            copy each side's logs (ringpost's output with
#                       RUST_LOG=info, the mail log line per recipient attempt; Postfix's
#                       maillog; blaster and sink reports) here; otherwise they
#                       go with the temp dir
#
# What is measured: the time from the start of the blast until the sink has
# received (unique X-Blast-Seq) every message the blaster got a 2xx for; msg/s
# = acked / that time. The blaster's accept latency (p50/p99, MAIL to final
# reply) is reported beside it. Zero loss: every X-Blast-Seq in the blaster's
# ack log must be in the sink's id log; duplicates (the same seq received more
# than once) are counted and reported, not treated as loss.
#
# What each side does:
# * ringpost: `ringpost serve --config` on a fresh data dir with
#   [relay] smarthost = the sink, retry_initial_secs = 1, retry_max_secs = 2,
#   everything else default (20 connections per destination domain, CHUNKING).
# * Postfix 3.x: a private instance (shared/external-tools.md §2), no chroot,
#   no DNS, relayhost = [127.0.0.1]:SINKPORT,
#   default_destination_concurrency_limit = 20, minimal_backoff_time = 1s,
#   maximal_backoff_time = 2s, queue_run_delay = 1s; queue under the same
#   temp dir (fsync per message), logging to a file through postlogd.
#
# Both queues live under one mktemp dir (on $TMPDIR or /tmp), so both servers
# fsync to the same filesystem. Each side gets a fresh sink. Everything binds
# 127.0.0.1. Every wait is bounded; an EXIT trap stops what was started and
# deletes the temp dir. Postfix is installed with apt-get if missing (needs
# root). Exit status: 0 if both halves delivered everything they acked, 1 if
# a side lost mail, did not finish, or could not run.

set -euo pipefail

MESSAGES=${MESSAGES:-20000}
CONNECTIONS=${CONNECTIONS:-50}
SIZE=${SIZE:-2048}
DOMAINS=${DOMAINS:-100}
SINK_TEMPFAIL=${SINK_TEMPFAIL:-0}
SINK_THREADS=${SINK_THREADS:-1}
PIPELINING=${PIPELINING:-on}
BLAST_THREADS=${BLAST_THREADS:-}
SHARDS=${SHARDS:-}
BLAST_TIMEOUT=${BLAST_TIMEOUT:-600}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
STALL_TIMEOUT=${STALL_TIMEOUT:-60}
SETTLE=${SETTLE:-2}
SKIP_RINGPOST=${SKIP_RINGPOST:-}
SKIP_POSTFIX=${SKIP_POSTFIX:-}
SKIP_BUILD=${SKIP_BUILD:-}
LOG_DIR=${LOG_DIR:-}

LOG_TAG=bench-relay
# log, die, process/port/Postfix helpers, on_exit; ROOT, RINGPOST, BLAST
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-relay.XXXXXX")
# Postfix daemons run as user postfix and must traverse to their queue.
chmod 755 "$WORK"

RINGPOST_PID=""
SINK_PID=""
PF_CONF=""     # set while a private Postfix instance may be running


# Run by on_exit, before the temp dir is deleted.
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    stop_ringpost
    stop_postfix
    stop_sink
    if [[ -n $LOG_DIR ]]; then
        mkdir -p "$LOG_DIR"
        cp "$WORK"/*.log "$WORK"/*.json "$WORK"/*.out "$WORK"/*.err "$WORK"/*.toml "$LOG_DIR"/ 2>/dev/null || true
        if [[ -f $WORK/postfix/maillog ]]; then cp "$WORK/postfix/maillog" "$LOG_DIR/postfix.maillog"; fi
        if [[ -f $WORK/postfix/etc/main.cf ]]; then cp "$WORK/postfix/etc/main.cf" "$LOG_DIR/postfix.main.cf"; fi
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

now() { echo "$EPOCHREALTIME"; }

# cpu_seconds PID: user + system CPU-seconds the process has used ("" if gone).
cpu_seconds() {
    awk -v tck="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / tck }' "/proc/$1/stat" 2>/dev/null || true
}

# per_100k SECONDS MESSAGES: SECONDS scaled to 100,000 messages ("n/a" if unknown).
per_100k() {
    awk -v s="$1" -v n="$2" 'BEGIN { if (s != "" && n + 0 > 0) printf "%.2f", s / n * 100000; else print "n/a" }'
}

# start_sink LABEL: a fresh sink; sets SINK_PID and SINK_ADDR.
start_sink() {
    local label=$1
    local args=(sink --listen 127.0.0.1:0 --threads "$SINK_THREADS"
        --tempfail-data "$SINK_TEMPFAIL" --seed 1 --id-log "$WORK/$label.ids" --json)
    log "$label: ringpost-blast ${args[*]}"
    "$BLAST" "${args[@]}" >"$WORK/$label-sink.out" 2>"$WORK/$label-sink.err" &
    SINK_PID=$!
    # shellcheck disable=SC2016  # an awk program
    if await_output SINK_ADDR "$WORK/$label-sink.out" '$1 == "listening" {print $3; exit}' "$SINK_PID" 300; then
        return 0
    fi
    log "$label: the sink did not start (tried ${AWAIT_TRIES}x):"
    cat "$WORK/$label-sink.err" >&2 || true
    return 1
}

# measure LABEL ADDR ALIVE_PID: blasts ADDR, waits until the sink has every
# acked message (or gives up), and leaves the results in R_<label>_*.
# ALIVE_PID: the relay's process; its death ends the wait early.
measure() {
    local label=$1 addr=$2 relay_pid=$3
    local out=$WORK/$label.json acks=$WORK/$label.acks ids=$WORK/$label.ids
    local args=(send --to-addr "$addr" --messages "$MESSAGES" --connections "$CONNECTIONS"
        --size "$SIZE" --pipelining "$PIPELINING" --domains "$DOMAINS"
        --ack-log "$acks" --json)
    [[ -n $BLAST_THREADS ]] && args+=(--threads "$BLAST_THREADS")
    log "$label: ringpost-blast ${args[*]}"

    local t0 t_end="" blast_pid blast_rc=0 blast_done="" target=$MESSAGES
    local count last=-1 last_change=$SECONDS start_s=$SECONDS outcome=""
    t0=$(now)
    timeout "$BLAST_TIMEOUT" "$BLAST" "${args[@]}" >"$out" 2>"$WORK/$label-blast.err" &
    blast_pid=$!
    while :; do
        if [[ -z $blast_done ]] && ! alive "$blast_pid"; then
            wait "$blast_pid" || blast_rc=$?
            blast_done=1
            target=$(lines_of "$acks")
            log "$label: blast done after $(awk -v a="$(now)" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') s (exit $blast_rc), $target acked; waiting for the sink"
        fi
        count=$(lines_of "$ids")
        if ((count >= target)) && [[ -n $blast_done || $count -ge $MESSAGES ]]; then
            # Line counts include duplicates; the unique count decides.
            if (($(sink_seqs "$ids" | wc -l) >= target)); then
                # The sink appends to its id log as it answers each message,
                # so the log's last change is when the last one arrived:
                # the poll's own period does not count.
                t_end=$(stat -c %.9Y "$ids")
                outcome=complete
                break
            fi
        fi
        if ((count != last)); then
            last=$count
            last_change=$SECONDS
        fi
        if [[ -n $blast_done ]] && ((SECONDS - last_change > STALL_TIMEOUT)); then
            outcome="stalled at $count of $target (no progress for ${STALL_TIMEOUT}s)"
            break
        fi
        if ((SECONDS - start_s > DRAIN_TIMEOUT)); then
            outcome="timed out after ${DRAIN_TIMEOUT}s at $count of $target"
            break
        fi
        if [[ -n $relay_pid ]] && ! alive "$relay_pid"; then
            outcome="relay process died at $count of $target"
            break
        fi
        # Slow enough that the poll costs the measured servers nothing.
        sleep 0.25
    done
    if [[ -z $blast_done ]]; then
        wait "$blast_pid" || blast_rc=$?
    fi
    [[ $outcome == complete ]] && sleep "$SETTLE"
    log "$label: $outcome"

    # --- results ---
    local acked received lines dups lost extra elapsed rate="n/a" p50="n/a" p99="n/a" errors="n/a"
    acked=$(acked_seqs "$acks" | wc -l)
    lines=$(lines_of "$ids")
    received=$(sink_seqs "$ids" | wc -l)
    dups=$((lines - received))
    lost=$(comm -23 <(acked_seqs "$acks") <(sink_seqs "$ids") | wc -l)
    extra=$(comm -13 <(acked_seqs "$acks") <(sink_seqs "$ids") | wc -l)
    if [[ -n $t_end ]]; then
        elapsed=$(awk -v a="$t_end" -v b="$t0" 'BEGIN{printf "%.3f", a-b}')
        rate=$(awk -v n="$acked" -v t="$elapsed" 'BEGIN{printf "%.1f", n/t}')
    else
        elapsed="n/a"
    fi
    if [[ -s $out ]]; then
        cat "$out" >&2
        p50=$(json_num p50 "$out")
        p99=$(json_num p99 "$out")
        errors=$(json_errors "$out")
        [[ $errors == "{}" ]] && errors=none
    else
        log "$label: ringpost-blast produced no report (exit $blast_rc)"
        errors="blast failed (exit $blast_rc)"
    fi
    log "$label: acked $acked, sink lines $lines, unique $received, duplicates $dups, lost $lost, not acked but received $extra, end-to-end $elapsed s"
    printf -v "R_${label}_rate" '%s' "$rate"
    printf -v "R_${label}_elapsed" '%s' "$elapsed"
    printf -v "R_${label}_p50" '%s' "$p50"
    printf -v "R_${label}_p99" '%s' "$p99"
    printf -v "R_${label}_acked" '%s' "$acked"
    printf -v "R_${label}_received" '%s' "$received"
    printf -v "R_${label}_dups" '%s' "$dups"
    printf -v "R_${label}_lost" '%s' "$lost"
    printf -v "R_${label}_errors" '%s' "$errors"
    printf -v "R_${label}_outcome" '%s' "$outcome"
    [[ $outcome == complete && $lost == 0 && $acked -gt 0 ]]
}

# Results, filled in by measure() through printf -v and read back by name in
# the report (hence SC2034 off for the whole file).
{
    R_ringpost_rate="n/a" R_ringpost_elapsed="n/a" R_ringpost_p50="n/a" R_ringpost_p99="n/a"
    R_ringpost_acked="n/a" R_ringpost_received="n/a" R_ringpost_dups="n/a" R_ringpost_lost="n/a"
    R_ringpost_errors="n/a" R_ringpost_outcome="not run"
    R_ringpost_cpu="n/a" R_ringpost_sink_cpu="n/a"
    R_postfix_rate="n/a" R_postfix_elapsed="n/a" R_postfix_p50="n/a" R_postfix_p99="n/a"
    R_postfix_acked="n/a" R_postfix_received="n/a" R_postfix_dups="n/a" R_postfix_lost="n/a"
    R_postfix_errors="n/a" R_postfix_outcome="not run"
}
STATUS=0

# --- build ------------------------------------------------------------------
RINGPOST_BUILT=1
if [[ -z $SKIP_BUILD ]]; then
    build_release
fi
[[ -x $BLAST ]] || die "missing $BLAST"
[[ -n $SKIP_RINGPOST || -x $RINGPOST ]] || RINGPOST_BUILT=""

FS_TYPE=$(df -PT "$WORK" | awk 'NR==2 {print $2}')
log "load: $MESSAGES x $SIZE B over $CONNECTIONS connections to $DOMAINS domains, pipelining $PIPELINING, sink tempfail $SINK_TEMPFAIL%; queues on $FS_TYPE ($WORK); $(nproc) CPUs"

# --- ringpost ----------------------------------------------------------------
run_ringpost() {
    if [[ -z $RINGPOST_BUILT ]]; then
        R_ringpost_outcome="ringpost binary not built"
        return 1
    fi
    start_sink ringpost || { R_ringpost_outcome="sink did not start"; return 1; }
    local conf=$WORK/ringpost.toml
    cat >"$conf" <<EOF
hostname = "relay.example.test"
data_dir = "$WORK/ringpost-data"

[smtp]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[relay]
smarthost = "$SINK_ADDR"
retry_initial_secs = 1
retry_max_secs = 2
EOF
    if [[ -n ${RINGPOST_EXTRA_CONFIG:-} ]]; then
        printf '%s\n' "$RINGPOST_EXTRA_CONFIG" >>"$conf"
    fi
    local args=(serve --config "$conf" --ephemeral-ports 127.0.0.1)
    [[ -n $SHARDS ]] && args+=(--shards "$SHARDS")
    log "ringpost: ${args[*]} (smarthost $SINK_ADDR, data $WORK/ringpost-data)"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$RINGPOST" "${args[@]}" >"$WORK/ringpost.log" 2>&1 &
    RINGPOST_PID=$!
    local addr="" metrics=""
    # shellcheck disable=SC2016  # an awk program
    if ! await_output addr "$WORK/ringpost.log" '$1 == "smtp" {print $2}' "$RINGPOST_PID" 600; then
        log "ringpost exited or did not start within 60 s; its output:"
        tail -n 30 "$WORK/ringpost.log" >&2 || true
        stop_ringpost
        stop_sink
        R_ringpost_outcome="did not start"
        return 1
    fi
    metrics=$(awk '$1 == "metrics" {print $2}' "$WORK/ringpost.log")
    grep -E '^(ringpost [0-9]|  [a-z])' "$WORK/ringpost.log" | sed 's/^/[bench-relay]   /' >&2 || true
    local rc=0
    measure ringpost "$addr" "$RINGPOST_PID" || rc=1
    # Whole-run CPU of the server (start-up included) and of its sink,
    # per 100,000 messages relayed: what the figure cost each side.
    R_ringpost_cpu=$(per_100k "$(cpu_seconds "$RINGPOST_PID")" "$R_ringpost_received")
    R_ringpost_sink_cpu=$(per_100k "$(cpu_seconds "$SINK_PID")" "$R_ringpost_received")
    if [[ $metrics == http* ]] && command -v curl >/dev/null; then
        timeout 10 curl -s "$metrics" >"$WORK/ringpost-metrics.out" 2>/dev/null || true
        log "ringpost relay metrics:"
        grep -E '^ringpost_relay_(recipients|transactions|connections_opened|connection_failures|queue_deferred)' \
            "$WORK/ringpost-metrics.out" | sed 's/^/[bench-relay]   /' >&2 || true
    fi
    stop_ringpost
    stop_sink
    log "ringpost sink report: $(tail -n 1 "$WORK/ringpost-sink.out")"
    local warns errs
    warns=$(grep -c ' WARN ' "$WORK/ringpost.log" || true)
    errs=$(grep -c ' ERROR ' "$WORK/ringpost.log" || true)
    log "ringpost log ($(wc -l <"$WORK/ringpost.log") lines): $warns WARN, $errs ERROR lines; tail:"
    tail -n 3 "$WORK/ringpost.log" | cut -c1-300 >&2 || true
    return "$rc"
}

# --- Postfix -----------------------------------------------------------------
write_postfix_config() {
    local pf=$1 port=$2 sink_port=$3
    # shared/external-tools.md §2 (the common head from pf_init, the rest
    # here), plus the retry timing of this benchmark.
    pf_init "$pf" relay.example.test
    cat >>"$pf/etc/main.cf" <<EOF
relayhost = [127.0.0.1]:$sink_port
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = none
biff = no
default_destination_concurrency_limit = 20
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
# One smtpd process per blaster connection, plus the smtp clients.
default_process_limit = $((CONNECTIONS + 50))
EOF
    cat >"$pf/etc/master.cf" <<EOF
127.0.0.1:$port inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
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
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

run_postfix() {
    if ! ensure_postfix; then
        R_postfix_outcome="postfix not available"
        return 1
    fi
    start_sink postfix || { R_postfix_outcome="sink did not start"; return 1; }
    local pf=$WORK/postfix port=${POSTFIX_PORT:-$(free_port)}
    write_postfix_config "$pf" "$port" "${SINK_ADDR##*:}"
    PF_CONF=$pf/etc
    log "postfix $(postconf -c "$PF_CONF" -h mail_version 2>/dev/null): private instance on 127.0.0.1:$port, relayhost [127.0.0.1]:${SINK_ADDR##*:}, queue $pf/spool"
    if ! pf_admin check >&2 || ! pf_admin start >&2; then
        log "postfix failed to start"
        stop_sink
        R_postfix_outcome="did not start"
        return 1
    fi
    if ! wait_port "$port" 60; then
        log "postfix did not listen within 60 s; maillog:"
        tail -n 30 "$pf/maillog" >&2 || true
        stop_postfix
        stop_sink
        R_postfix_outcome="did not start"
        return 1
    fi
    local master=""
    [[ -r $pf/spool/pid/master.pid ]] && master=$(tr -dc '0-9' <"$pf/spool/pid/master.pid")
    local rc=0
    measure postfix "127.0.0.1:$port" "$master" || rc=1
    stop_postfix
    stop_sink
    log "postfix sink report: $(tail -n 1 "$WORK/postfix-sink.out")"
    local sent deferred bounced
    sent=$(grep -c 'status=sent' "$pf/maillog" || true)
    deferred=$(grep -c 'status=deferred' "$pf/maillog" || true)
    bounced=$(grep -c 'status=bounced' "$pf/maillog" || true)
    log "postfix maillog: $sent sent, $deferred deferred, $bounced bounced"
    return "$rc"
}

if [[ -z $SKIP_RINGPOST ]]; then
    run_ringpost || STATUS=1
fi
if [[ -z $SKIP_POSTFIX ]]; then
    # Let the first half's dirty pages reach the disk now rather than during
    # the Postfix measurement.
    timeout 120 sync || true
    run_postfix || STATUS=1
fi

# --- report ------------------------------------------------------------------
ratio="n/a"
if [[ $R_ringpost_rate =~ ^[0-9.]+$ && $R_postfix_rate =~ ^[0-9.]+$ ]]; then
    ratio=$(awk -v a="$R_ringpost_rate" -v b="$R_postfix_rate" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
fi

echo
echo "relay benchmark: $MESSAGES x $SIZE B, $CONNECTIONS connections, $DOMAINS domains, sink tempfail $SINK_TEMPFAIL%, pipelining $PIPELINING, queues on $FS_TYPE, $(nproc) CPUs"
printf '  %-9s %10s %9s %8s %8s %8s %9s %5s %5s  %s\n' \
    side "msg/s" "e2e s" "p50 ms" "p99 ms" acked received lost dups "outcome / blaster errors"
for side in ringpost postfix; do
    v() { local n="R_${side}_$1"; printf '%s' "${!n}"; }
    printf '  %-9s %10s %9s %8s %8s %8s %9s %5s %5s  %s / %s\n' \
        "$side" "$(v rate)" "$(v elapsed)" "$(v p50)" "$(v p99)" "$(v acked)" "$(v received)" \
        "$(v lost)" "$(v dups)" "$(v outcome)" "$(v errors)"
done
echo "  ratio ringpost/postfix (msg/s): $ratio"
echo "  ringpost CPU-seconds per 100,000 relayed: server $R_ringpost_cpu, its sink $R_ringpost_sink_cpu"
echo "SUMMARY relay ringpost=$R_ringpost_rate postfix=$R_postfix_rate ratio=$ratio lost_ringpost=$R_ringpost_lost lost_postfix=$R_postfix_lost dups_ringpost=$R_ringpost_dups dups_postfix=$R_postfix_dups status=$([[ $STATUS == 0 ]] && echo ok || echo failed)"
exit "$STATUS"
