#!/usr/bin/env bash
# bench-imap-stress.sh — many IMAP clients at once: Dovecot's imaptest in its
# stress mode (random SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT, with
# its consistency checks on) against ringpost and against Dovecot, same
# account, same password scheme (Argon2id), same machine, in one run.
#
#   IMAPTEST=/opt/imaptest/bin/imaptest loadtest/bench-imap-stress.sh
#   CLIENTS=50 SECS=60 ROUNDS=3 IMAPTEST=... loadtest/bench-imap-stress.sh
#
# imaptest is not packaged by Debian and not part of ringpost: build it by
# hand from dovecot/imaptest against dovecot-dev, and say where it is in
# IMAPTEST. Environment:
#   CLIENTS=50   concurrent imaptest clients (one account)
#   SECS=60      seconds per run
#   ROUNDS=1     runs per server, alternating ringpost and Dovecot
#   DOVECOT_SCHEME=ARGON2ID   Dovecot's password scheme; PLAIN shows what
#                its side does without the cost of a password check
# Reported per server: commands per second (the sum of imaptest's Totals
# row over SECS), and its error count, which must be 0.
#
# Dovecot gets its defaults (mail_fsync = optimized, Maildir) plus an auth
# cache, since ringpost keeps verified passwords for a while too; ringpost
# fsyncs every commit. Everything binds 127.0.0.1 on free ports.

set -euo pipefail

CLIENTS=${CLIENTS:-50}
SECS=${SECS:-60}
ROUNDS=${ROUNDS:-1}
DOVECOT_SCHEME=${DOVECOT_SCHEME:-ARGON2ID}
SKIP_RINGPOST=""

LOG_TAG=bench-imap-stress
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

[[ -x ${IMAPTEST:-} ]] || die "set IMAPTEST to an imaptest binary (built by hand from dovecot/imaptest)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-imap.XXXXXX")
chmod 755 "$WORK"
RINGPOST_PID=""
PF_CONF=""
DOVECOT_PID=""
cleanup() {
    stop_ringpost
    if [[ -n $DOVECOT_PID ]]; then
        stop_pid "$DOVECOT_PID" dovecot
    fi
}
trap on_exit EXIT

ensure_package dovecot dovecot-imapd || die "no dovecot"
build_release

# The messages imaptest appends: 50 small ones, the same for both.
python3 - "$WORK/stress.mbox" <<'PY'
import sys
with open(sys.argv[1], "w") as out:
    for n in range(50):
        out.write(f"From sender{n}@example.org Sat Mar 24 23:00:00 2007\n"
                  f"From: sender{n}@example.org\nTo: u@ours.test\n"
                  f"Subject: message {n}\nMessage-ID: <{n}@example.org>\n"
                  f"Date: Sat, 24 Mar 2007 23:00:{n % 60:02d} +0200\n\n"
                  + f"line {n} of the body\n" * (5 + n % 20) + "\n")
PY

# run_imaptest NAME PORT: one stress run; prints "commands-per-second errors".
run_imaptest() {
    local name=$1 port=$2 out=$WORK/imaptest-$1.out
    "$IMAPTEST" host=127.0.0.1 port="$port" user=u@ours.test pass=secret \
        mbox="$WORK/stress.mbox" clients="$CLIENTS" secs="$SECS" >"$out" 2>&1 || true
    local total errors
    total=$(awk '/^Totals:/ {t = NR} t && NR == t + 4 {s = 0; for (i = 1; i <= NF; i++) s += $i; print s}' "$out")
    errors=$(grep -c '^Error' "$out" || true)
    [[ -n $total ]] || die "$name: imaptest printed no totals: $(tail -3 "$out")"
    log "$name: $total commands in $SECS s, $errors errors"
    echo "$((total / SECS)) $errors"
}

# --- Dovecot's side --------------------------------------------------------
DV=$WORK/dv
DV_IMAP=$(free_port)
mkdir -p "$DV/run" "$DV/state" "$DV/mail"
printf 'u@ours.test:%s\n' "$(doveadm pw -s "$DOVECOT_SCHEME" -p secret)" >"$DV/users"
cat >"$DV/dovecot.conf" <<CONF
base_dir  = $DV/run
state_dir = $DV/state
log_path  = $DV/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 10M
auth_cache_ttl = 1 hour
mail_location = maildir:$DV/mail/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = username_format=%u $DV/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DV/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DV_IMAP
  }
  inet_listener imaps {
    port = 0
  }
}
service imap {
  process_limit = 1024
}
protocol imap {
  mail_max_userip_connections = 1000
}
CONF
chown -R nobody:nogroup "$DV/mail"

start_dovecot() {
    dovecot -F -c "$DV/dovecot.conf" >"$DV/fg.out" 2>&1 &
    DOVECOT_PID=$!
    wait_port "$DV_IMAP" 60 "$DOVECOT_PID" || die "dovecot did not start: $(tail -5 "$DV/fg.out" "$DV/dovecot.log" 2>/dev/null)"
}

RP_RATES=() DV_RATES=() ERRORS=0
for ((round = 1; round <= ROUNDS; round++)); do
    start_mail_server u@ours.test $'[imap]\nmax_sessions_per_account = 1000'
    read -r rate errors <<<"$(run_imaptest ringpost "${RP_IMAP##*:}")"
    RP_RATES+=("$rate")
    ERRORS=$((ERRORS + errors))
    stop_ringpost
    start_dovecot
    read -r rate errors <<<"$(run_imaptest dovecot "$DV_IMAP")"
    DV_RATES+=("$rate")
    ERRORS=$((ERRORS + errors))
    stop_pid "$DOVECOT_PID" dovecot
    DOVECOT_PID=""
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
RP=$(median "${RP_RATES[@]}")
DVR=$(median "${DV_RATES[@]}")
echo
echo "imaptest stress, $CLIENTS clients, $SECS s, median of $ROUNDS round(s), Dovecot passwords $DOVECOT_SCHEME: commands/s"
printf '  ringpost %8d   (%s)\n' "$RP" "${RP_RATES[*]}"
printf '  dovecot  %8d   (%s)\n' "$DVR" "${DV_RATES[*]}"
awk -v a="$RP" -v b="$DVR" 'BEGIN {printf "  ratio    %8.2fx\n", (b > 0 ? a / b : 0)}'
echo "  imaptest errors: $ERRORS"
[[ $ERRORS -eq 0 ]]
