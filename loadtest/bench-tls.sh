#!/usr/bin/env bash
# bench-tls.sh — what TLS costs the accept path: one ringpost, the same
# blaster and load, plaintext SMTP against STARTTLS on the same port, and
# implicit TLS with AUTH on the submissions port (a mail client's way in),
# in alternating rounds of one run; prints the rates and the ratios.
#
#   loadtest/bench-tls.sh                   # 3 rounds of 20000 x 2 KB, 50 connections
#   ROUNDS=5 MESSAGES=50000 loadtest/bench-tls.sh
#
# Environment (all optional):
#   ROUNDS=3 MESSAGES=20000 CONNECTIONS=50 SIZE=2048
#   MESSAGES_PER_CONNECTION=0   reconnect (and so handshake again) after N messages
#
# The server runs on a fresh store with its self-signed certificate (the
# blaster is told not to check it), relay off. Everything binds 127.0.0.1;
# an EXIT trap stops it and deletes the temp dir.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-20000}
CONNECTIONS=${CONNECTIONS:-50}
SIZE=${SIZE:-2048}
MESSAGES_PER_CONNECTION=${MESSAGES_PER_CONNECTION:-0}

LOG_TAG=bench-tls
SKIP_RINGPOST=""
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-tls.XXXXXX")
RINGPOST_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() { stop_ringpost; }
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_release
cat >"$WORK/ringpost.toml" <<EOF
hostname = "mx.bench.test"
[smtp]
local_domains = ["bench.test"]
[submission]
sender_policy = "any"
max_messages_per_hour = 0
EOF
echo secret | "$RINGPOST" user add sender@bench.test --password-stdin \
    --config "$WORK/ringpost.toml" --data-dir "$WORK/data" >/dev/null
"$RINGPOST" serve --config "$WORK/ringpost.toml" --data-dir "$WORK/data" --no-relay \
    --ephemeral-ports 127.0.0.1 >"$WORK/ringpost.out" 2>"$WORK/ringpost.log" &
RINGPOST_PID=$!
await_output SMTP "$WORK/ringpost.out" '$1 == "smtp" {print $2; exit}' "$RINGPOST_PID" 600 ||
    die "ringpost did not start: $(tail -5 "$WORK/ringpost.log")"
await_output SUBS "$WORK/ringpost.out" '$1 == "submissions" {print $2; exit}' "$RINGPOST_PID" 50 ||
    die "ringpost printed no submissions address"

# blast NAME ARGS...: one run; appends msg/s to $WORK/NAME.rates.
blast() {
    local name=$1
    shift
    local out=$WORK/$name.json
    "$BLAST" send --messages "$MESSAGES" --connections "$CONNECTIONS" --size "$SIZE" \
        --messages-per-connection "$MESSAGES_PER_CONNECTION" --from sender@bench.test \
        --rcpt-domain far.test --json "$@" >"$out" || die "$name: blast failed: $(cat "$out")"
    local errors
    errors=$(json_errors "$out")
    [[ $errors == "{}" ]] || die "$name: errors $errors"
    json_num msg_per_s "$out" >>"$WORK/$name.rates"
    log "$name: $(json_num msg_per_s "$out") msg/s"
}

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    blast plain --to-addr "$SMTP"
    blast starttls --to-addr "$SMTP" --starttls --insecure
    blast tls-auth --to-addr "$SUBS" --tls --insecure --auth sender@bench.test:secret
done

median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
plain=$(median "$WORK/plain.rates")
starttls=$(median "$WORK/starttls.rates")
tlsauth=$(median "$WORK/tls-auth.rates")
echo
echo "TLS cost, $MESSAGES x $SIZE B over $CONNECTIONS connections, median of $ROUNDS rounds ($(nproc) CPUs)"
printf '%-34s %12s %8s\n' "path" "msg/s" "ratio"
printf '%-34s %12.0f %8s\n' "plaintext (MX port)" "$plain" "1.00"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
printf '%-34s %12.0f %8s\n' "STARTTLS (MX port)" "$starttls" "$(ratio "$starttls" "$plain")"
printf '%-34s %12.0f %8s\n' "implicit TLS + AUTH (submissions)" "$tlsauth" "$(ratio "$tlsauth" "$plain")"
