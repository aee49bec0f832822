#!/usr/bin/env bash
# bench-dkim.sh — what DKIM signing costs the accept path: three servers,
# the same blaster and load, signing off, with an RSA-2048 key and with an
# Ed25519 key (mail is signed when accepted, before the commit that answers
# 250), in alternating rounds of one run; prints the rates and the ratios.
#
#   loadtest/bench-dkim.sh                  # 3 rounds of 20000 x 2 KB, 50 connections
#   ROUNDS=5 MESSAGES=50000 loadtest/bench-dkim.sh
#
# Environment (all optional): ROUNDS=3 MESSAGES=20000 CONNECTIONS=50 SIZE=2048
#
# Each server has a fresh store, relay off (signing happens at acceptance,
# so delivery adds nothing to compare), and signs the blaster's mail
# (From: sender@bench.test, sent from loopback, a relay network). Everything
# binds 127.0.0.1; an EXIT trap stops the servers and deletes the temp dir.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-20000}
CONNECTIONS=${CONNECTIONS:-50}
SIZE=${SIZE:-2048}

LOG_TAG=bench-dkim
SKIP_RINGPOST=""
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-dkim.XXXXXX")
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
"$RINGPOST" dkim keygen bench.test --selector rsa --algorithm rsa2048 \
    --out "$WORK/rsa.pem" >/dev/null
"$RINGPOST" dkim keygen bench.test --selector ed --algorithm ed25519 \
    --out "$WORK/ed.pem" >/dev/null

declare -A SMTP
# start NAME [SELECTOR]: a server signing with WORK/SELECTOR.pem (or not).
start() {
    local name=$1 selector=${2:-}
    mkdir -p "$WORK/$name"
    {
        echo 'hostname = "mx.bench.test"'
        if [[ -n $selector ]]; then
            echo '[[dkim.keys]]'
            echo 'domain = "bench.test"'
            echo "selector = \"$selector\""
            echo "key = \"$WORK/$selector.pem\""
        fi
    } >"$WORK/$name/ringpost.toml"
    "$RINGPOST" serve --config "$WORK/$name/ringpost.toml" --data-dir "$WORK/$name/data" \
        --no-relay --ephemeral-ports 127.0.0.1 \
        >"$WORK/$name/out" 2>"$WORK/$name/log" &
    PIDS+=($!)
    await_output "SMTP[$name]" "$WORK/$name/out" '$1 == "smtp" {print $2; exit}' "$!" 600 ||
        die "$name: ringpost did not start: $(tail -5 "$WORK/$name/log")"
}
start off
start rsa rsa
start ed25519 ed

# blast NAME: one run against NAME's server; appends msg/s to WORK/NAME.rates.
blast() {
    local name=$1 out=$WORK/$1.json
    "$BLAST" send --messages "$MESSAGES" --connections "$CONNECTIONS" --size "$SIZE" \
        --from sender@bench.test --rcpt-domain far.test --to-addr "${SMTP[$name]}" \
        --json >"$out" || die "$name: blast failed: $(cat "$out")"
    local errors
    errors=$(json_errors "$out")
    [[ $errors == "{}" ]] || die "$name: errors $errors"
    json_num msg_per_s "$out" >>"$WORK/$name.rates"
    log "$name: $(json_num msg_per_s "$out") msg/s"
}

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    blast off
    blast rsa
    blast ed25519
done

# The signatures are really there: one stored message of each signer.
for name in rsa ed25519; do
    grep -q "dkim_signed_messages_total" <(curl -s "$(awk '$1 == "metrics" {print $2; exit}' "$WORK/$name/out")") ||
        die "$name: no signing metric"
done

median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
off=$(median "$WORK/off.rates")
rsa=$(median "$WORK/rsa.rates")
ed=$(median "$WORK/ed25519.rates")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "DKIM signing cost at acceptance, $MESSAGES x $SIZE B over $CONNECTIONS connections, median of $ROUNDS rounds ($(nproc) CPUs)"
printf '%-24s %12s %8s\n' "signing" "msg/s" "ratio"
printf '%-24s %12.0f %8s\n' "off" "$off" "1.00"
printf '%-24s %12.0f %8s\n' "RSA-2048" "$rsa" "$(ratio "$rsa" "$off")"
printf '%-24s %12.0f %8s\n' "Ed25519" "$ed" "$(ratio "$ed" "$off")"
