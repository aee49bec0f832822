#!/usr/bin/env bash
# bench-inject.sh — HTTP injection (POST /api/v1/inject) against SMTP, on
# the same messages into the same server: ringpost-blast's `send` (SMTP,
# pipelined) and `inject` (one keep-alive HTTP/1.1 request per message,
# the message as raw content) in alternating rounds of one run; prints the
# median rates and the ratio.
#
#   loadtest/bench-inject.sh                 # 3 rounds of 20000 x 2 KB, 50 connections
#   ROUNDS=5 RCPTS=10 loadtest/bench-inject.sh
#
# Environment (all optional): ROUNDS=3 MESSAGES=20000 CONNECTIONS=50 SIZE=2048 RCPTS=1
#
# One server with a fresh store and the relay off: both paths end at the
# same durable commit (and 250 or 200 only after it), so delivery adds
# nothing to compare. Everything binds 127.0.0.1; an EXIT trap stops the
# server and deletes the temp dir.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-20000}
CONNECTIONS=${CONNECTIONS:-50}
SIZE=${SIZE:-2048}
RCPTS=${RCPTS:-1}

LOG_TAG=bench-inject
SKIP_RINGPOST=""
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-inject.XXXXXX")
PIDS=()
RINGPOST_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    for pid in "${PIDS[@]}"; do stop_pid "$pid" ringpost; done
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_release
echo 'hostname = "mx.bench.test"' >"$WORK/ringpost.toml"
"$RINGPOST" serve --config "$WORK/ringpost.toml" --data-dir "$WORK/data" \
    --no-relay --ephemeral-ports 127.0.0.1 >"$WORK/out" 2>"$WORK/log" &
PIDS+=($!)
await_output SMTP "$WORK/out" '$1 == "smtp" {print $2; exit}' "$!" 600 ||
    die "ringpost did not start: $(tail -5 "$WORK/log")"
# "metrics http://HOST:PORT/metrics": the control plane's address.
await_output API "$WORK/out" '$1 == "metrics" {sub("^http://", "", $2); sub("/.*", "", $2); print $2; exit}' "${PIDS[0]}" 60 ||
    die "no control-plane listener: $(tail -5 "$WORK/log")"

# run PATH: one run over PATH (smtp or http); appends msg/s to WORK/PATH.rates.
run() {
    local path=$1 out=$WORK/$1.json
    local common=(--messages "$MESSAGES" --connections "$CONNECTIONS" --size "$SIZE"
        --rcpts "$RCPTS" --from sender@bench.test --rcpt-domain far.test --json)
    if [[ $path == smtp ]]; then
        "$BLAST" send --to-addr "$SMTP" "${common[@]}" >"$out" ||
            die "smtp: blast failed: $(cat "$out")"
    else
        "$BLAST" inject --to-addr "$API" --token-file "$WORK/data/admin.token" \
            "${common[@]}" >"$out" || die "http: inject failed: $(cat "$out")"
    fi
    local errors
    errors=$(json_errors "$out")
    [[ $errors == "{}" ]] || die "$path: errors $errors"
    json_num msg_per_s "$out" >>"$WORK/$path.rates"
    log "$path: $(json_num msg_per_s "$out") msg/s, p99 $(grep -o '"p99":[0-9.]*' "$out" | cut -d: -f2) ms"
}

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    run smtp
    run http
done

stored=$(curl -s "http://$API/metrics" | awk '/^ringpost_inject_messages_total/ {print $2}')
[[ ${stored%.*} -eq $((ROUNDS * MESSAGES)) ]] ||
    die "the server counted ${stored:-no} injected messages, not $((ROUNDS * MESSAGES))"

median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
smtp=$(median "$WORK/smtp.rates")
http=$(median "$WORK/http.rates")
echo
echo "Injection over HTTP vs SMTP, $MESSAGES x $SIZE B, $RCPTS rcpt/msg over $CONNECTIONS connections, median of $ROUNDS rounds ($(nproc) CPUs)"
printf '%-28s %12s %8s\n' "path" "msg/s" "ratio"
printf '%-28s %12.0f %8s\n' "SMTP (pipelined)" "$smtp" "1.00"
printf '%-28s %12.0f %8s\n' "HTTP POST /api/v1/inject" "$http" "$(awk -v a="$http" -v b="$smtp" 'BEGIN {printf "%.2f", a / b}')"
echo "SUMMARY inject smtp=$smtp http=$http"
