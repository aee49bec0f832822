#!/usr/bin/env bash
# bench-fetch.sh — the mail-access benchmark: how fast does a server hand a
# whole mailbox to its owner, over IMAP and over POP3, ringpost against
# Dovecot, same messages, same client, same machine, loopback only.
#
#   loadtest/bench-fetch.sh                  # 10000 mixed-size messages, 9 rounds
#   MESSAGES=2000 ROUNDS=15 loadtest/bench-fetch.sh
#
# Environment (all optional):
#   MESSAGES=10000   messages in the mailbox (loadtest/mailbox.py: 1 KB to
#                    256 KB, a quarter multipart; seeded, so every run and
#                    both servers get the same bytes)
#   ROUNDS=9         timed downloads per server and protocol, after one
#                    untimed warm-up; the median is reported
#   SETTLE=10        seconds between loading ringpost and timing it
#
# What each side does:
# * ringpost: `ringpost serve` on a fresh RocksDB data dir with the account
#   bench@ours.test; the mailbox is loaded with IMAP APPEND. Timed twice: in
#   its default configuration, then restarted with its body cache off
#   (`store.body_cache_mb = 0`), every body read from its blob file.
# * Dovecot 2.3 (installed with apt-get if missing): its own config under the
#   temp dir, a passwd-file user, Maildir; the messages are written into the
#   Maildir as files, and the warm-up builds its index.
# The client is `ringpost-blast fetch`: one connection; IMAP `FETCH 1:*
# (BODY.PEEK[])`, POP3 `RETR 1..n` pipelined 64 deep. It counts every byte;
# both servers must return the same messages and bytes. The TLS rows run the
# same IMAP download over implicit TLS (IMAPS), each server with a
# self-signed certificate the client does not check (`--insecure`), TLS 1.3.
#
# Everything binds 127.0.0.1 on free ports; every wait is bounded; an EXIT
# trap stops what was started and deletes the temp dir. Exit status: 0 if
# both servers served everything, else 1.

set -euo pipefail

MESSAGES=${MESSAGES:-10000}
ROUNDS=${ROUNDS:-9}
SKIP_RINGPOST=""

LOG_TAG=bench-fetch
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-bench-fetch.XXXXXX")
chmod 755 "$WORK"
RINGPOST_PID=""
PF_CONF=""
DOVECOT_PID=""
cleanup() {
    stop_ringpost
    if [[ -n $DOVECOT_PID ]]; then
        stop_pid "$DOVECOT_PID" dovecot
        DOVECOT_PID=""
    fi
}
trap on_exit EXIT

# fetch_rounds NAME PROTOCOL ADDR USER [ARGS...]: a warm-up, then ROUNDS
# timed runs; prints the median line "msg/s MB/s messages bytes".
fetch_rounds() {
    local name=$1 protocol=$2 addr=$3 user=$4 out=$WORK/$1-$2${5:+-tls} i
    shift 4
    "$BLAST" fetch --protocol "$protocol" --addr "$addr" --user "$user" --password secret \
        --json "$@" >"$out.warm" || die "$name $protocol warm-up failed"
    for ((i = 1; i <= ROUNDS; i++)); do
        "$BLAST" fetch --protocol "$protocol" --addr "$addr" --user "$user" --password secret \
            --json "$@" >"$out.$i" || die "$name $protocol round $i failed"
    done
    for ((i = 1; i <= ROUNDS; i++)); do
        echo "$(json_num messages_per_sec "$out.$i") $(json_num mb_per_sec "$out.$i")" \
            "$(json_num messages "$out.$i") $(json_num bytes "$out.$i")"
    done | sort -n | awk -v mid=$(((ROUNDS + 1) / 2)) 'NR == mid'
}

build_release
ensure_package dovecot dovecot-imapd dovecot-pop3d || die "no dovecot"

log "generating $MESSAGES messages"
python3 loadtest/mailbox.py generate "$WORK/mail" "$MESSAGES" >&2

# --- ringpost --------------------------------------------------------------
start_mail_server bench@ours.test
log "ringpost: imap $RP_IMAP, pop3 $RP_POP3; loading with APPEND"
python3 loadtest/mailbox.py append "$WORK/mail" "${RP_IMAP%:*}" "${RP_IMAP##*:}" bench@ours.test secret
# Let RocksDB's background flush and compaction of the load finish, so they
# do not share the two cores with the timed runs.
sleep "${SETTLE:-10}"
read -r RP_IMAP_RATE RP_IMAP_MB RP_IMAP_N RP_IMAP_BYTES <<<"$(fetch_rounds ringpost imap "$RP_IMAP" bench@ours.test)"
read -r RP_POP3_RATE RP_POP3_MB RP_POP3_N RP_POP3_BYTES <<<"$(fetch_rounds ringpost pop3 "$RP_POP3" bench@ours.test)"
read -r RS_IMAP_RATE RS_IMAP_MB RS_IMAP_N RS_IMAP_BYTES <<<"$(fetch_rounds ringpost imap "$RP_IMAPS" bench@ours.test --tls --insecure)"
stop_ringpost
# The default body cache (store.body_cache_mb) holds this whole mailbox;
# without it every body comes from its file, through the OS page cache, as
# Dovecot's do.
start_mail_server bench@ours.test $'[store]\nbody_cache_mb = 0'
log "ringpost, body cache off: imap $RP_IMAP, pop3 $RP_POP3"
read -r NC_IMAP_RATE NC_IMAP_MB NC_IMAP_N NC_IMAP_BYTES <<<"$(fetch_rounds ringpost-nocache imap "$RP_IMAP" bench@ours.test)"
read -r NC_POP3_RATE NC_POP3_MB NC_POP3_N NC_POP3_BYTES <<<"$(fetch_rounds ringpost-nocache pop3 "$RP_POP3" bench@ours.test)"
stop_ringpost

# --- Dovecot ---------------------------------------------------------------
DV=$WORK/dv
DV_IMAP=$(free_port)
DV_POP3=$(free_port)
mkdir -p "$DV/run" "$DV/state" "$DV/mail"
DV_IMAPS=$(free_port)
printf 'bench:{PLAIN}secret\n' >"$DV/users"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DV/key.pem" -out "$DV/cert.pem" -days 30 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
cat >"$DV/dovecot.conf" <<CONF
base_dir  = $DV/run
state_dir = $DV/state
log_path  = $DV/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$DV/cert.pem
ssl_key = <$DV/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$DV/mail/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DV/users
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
    address = 127.0.0.1
    port = $DV_IMAPS
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DV_POP3
  }
  inet_listener pop3s {
    port = 0
  }
}
pop3_uidl_format = %08Xu%08Xv
CONF
python3 loadtest/mailbox.py maildir "$WORK/mail" "$DV/mail/bench/Maildir"
chown -R nobody:nogroup "$DV/mail"
dovecot -F -c "$DV/dovecot.conf" >"$DV/fg.out" 2>&1 &
DOVECOT_PID=$!
wait_port "$DV_IMAP" 60 "$DOVECOT_PID" || die "dovecot did not start: $(cat "$DV/fg.out" "$DV/dovecot.log" 2>/dev/null | tail -5)"
log "dovecot $(dovecot --version): imap 127.0.0.1:$DV_IMAP, pop3 127.0.0.1:$DV_POP3"
read -r DV_IMAP_RATE DV_IMAP_MB DV_IMAP_N DV_IMAP_BYTES <<<"$(fetch_rounds dovecot imap "127.0.0.1:$DV_IMAP" bench)"
read -r DV_POP3_RATE DV_POP3_MB DV_POP3_N DV_POP3_BYTES <<<"$(fetch_rounds dovecot pop3 "127.0.0.1:$DV_POP3" bench)"
read -r DS_IMAP_RATE DS_IMAP_MB DS_IMAP_N DS_IMAP_BYTES <<<"$(fetch_rounds dovecot imap "127.0.0.1:$DV_IMAPS" bench --tls --insecure)"

# --- report ----------------------------------------------------------------
status=0
for pair in "IMAP $RP_IMAP_N $RP_IMAP_BYTES $DV_IMAP_N $DV_IMAP_BYTES" \
    "POP3 $RP_POP3_N $RP_POP3_BYTES $DV_POP3_N $DV_POP3_BYTES" \
    "IMAP-uncached $NC_IMAP_N $NC_IMAP_BYTES $DV_IMAP_N $DV_IMAP_BYTES" \
    "POP3-uncached $NC_POP3_N $NC_POP3_BYTES $DV_POP3_N $DV_POP3_BYTES" \
    "IMAPS $RS_IMAP_N $RS_IMAP_BYTES $DS_IMAP_N $DS_IMAP_BYTES"; do
    read -r proto rn rb dn db <<<"$pair"
    if [[ $rn != "$MESSAGES" || $dn != "$MESSAGES" || $rb != "$db" ]]; then
        log "$proto: ringpost $rn messages / $rb bytes, dovecot $dn / $db: they differ"
        status=1
    fi
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0) ? a / b : 0 }'; }
row() { # label ringpost-rate ringpost-MB dovecot-rate dovecot-MB
    printf '| %s | %.0f (%.0f) | %.0f (%.0f) | %s× |\n' "$1" "$2" "$3" "$4" "$5" "$(ratio "$2" "$4")"
}
printf '\n%s messages (%s bytes), median of %s rounds, one connection\n' \
    "$MESSAGES" "$RP_IMAP_BYTES" "$ROUNDS"
printf '| protocol | ringpost msg/s (MB/s) | Dovecot msg/s (MB/s) | ratio |\n|---|---|---|---|\n'
row "IMAP FETCH 1:* BODY.PEEK[]" "$RP_IMAP_RATE" "$RP_IMAP_MB" "$DV_IMAP_RATE" "$DV_IMAP_MB"
row "POP3 RETR 1..n (pipelined)" "$RP_POP3_RATE" "$RP_POP3_MB" "$DV_POP3_RATE" "$DV_POP3_MB"
row "IMAP, ringpost body cache off" "$NC_IMAP_RATE" "$NC_IMAP_MB" "$DV_IMAP_RATE" "$DV_IMAP_MB"
row "POP3, ringpost body cache off" "$NC_POP3_RATE" "$NC_POP3_MB" "$DV_POP3_RATE" "$DV_POP3_MB"
row "IMAPS (TLS 1.3) FETCH 1:* BODY.PEEK[]" "$RS_IMAP_RATE" "$RS_IMAP_MB" "$DS_IMAP_RATE" "$DS_IMAP_MB"
exit "$status"
