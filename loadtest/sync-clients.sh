#!/usr/bin/env bash
# sync-clients.sh — real mail synchronisers read a ringpost mailbox: mbsync
# (isync) and offlineimap over IMAP into Maildirs, fetchmail over POP3 into
# an mbox-style spool, and every message must arrive intact (byte for
# byte). mbsync and offlineimap then sync again after more mail came, and
# must fetch only that (incremental sync).
#
#   loadtest/sync-clients.sh             # 500 mixed-size messages
#   MESSAGES=2000 loadtest/sync-clients.sh
#
# The mailbox is loadtest/mailbox.py's (seeded, 1 KB to 256 KB, a quarter
# multipart), loaded into a fresh ringpost with IMAP APPEND. isync,
# offlineimap3 and fetchmail are installed with apt-get if missing (needs
# root). Everything
# binds 127.0.0.1 on free ports; every wait is bounded; an EXIT trap stops
# ringpost and deletes the temp dir. Exit status: 0 if both clients got
# every message intact, else 1.

set -euo pipefail

MESSAGES=${MESSAGES:-500}

LOG_TAG=sync-clients
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringpost-sync.XXXXXX")
RINGPOST_PID=""
PF_CONF=""
cleanup() { stop_ringpost; }
trap on_exit EXIT

ensure_package mbsync isync || die "no mbsync"
ensure_package fetchmail fetchmail || die "no fetchmail"
ensure_package offlineimap offlineimap3 || die "no offlineimap"
SKIP_RINGPOST=""
build_release

python3 loadtest/mailbox.py generate "$WORK/sent" "$MESSAGES" >&2
start_mail_server sync@ours.test
python3 loadtest/mailbox.py append "$WORK/sent" "${RP_IMAP%:*}" "${RP_IMAP##*:}" sync@ours.test secret

# mbsync: pull INBOX into a Maildir.
mkdir -p "$WORK/mbsync/Mail"
cat >"$WORK/mbsync/mbsyncrc" <<CONF
IMAPAccount ringpost
Host ${RP_IMAP%:*}
Port ${RP_IMAP##*:}
User sync@ours.test
Pass secret
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account ringpost

MaildirStore local
Path $WORK/mbsync/Mail/
Inbox $WORK/mbsync/Mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
CONF
timeout 600 mbsync -c "$WORK/mbsync/mbsyncrc" -a >"$WORK/mbsync/out" 2>&1 ||
    die "mbsync failed: $(tail -5 "$WORK/mbsync/out")"

# offlineimap: INBOX into another Maildir.
mkdir -p "$WORK/offlineimap/Mail" "$WORK/offlineimap/meta"
cat >"$WORK/offlineimap/rc" <<CONF
[general]
accounts = ringpost
metadata = $WORK/offlineimap/meta
ui = basic

[Account ringpost]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = $WORK/offlineimap/Mail

[Repository remote]
type = IMAP
remotehost = ${RP_IMAP%:*}
remoteport = ${RP_IMAP##*:}
remoteuser = sync@ours.test
remotepass = secret
ssl = no
starttls = no
readonly = True
folderfilter = lambda folder: folder == 'INBOX'
CONF
offlineimap_sync() {
    timeout 600 offlineimap -c "$WORK/offlineimap/rc" -o >"$WORK/offlineimap/out" 2>&1 ||
        die "offlineimap failed: $(tail -5 "$WORK/offlineimap/out")"
}
offlineimap_sync

# More mail, then both IMAP synchronisers again: each must fetch just that.
python3 loadtest/mailbox.py generate "$WORK/later" 25 $((MESSAGES + 1)) >&2
python3 loadtest/mailbox.py append "$WORK/later" "${RP_IMAP%:*}" "${RP_IMAP##*:}" sync@ours.test secret
count() { find "$1/cur" "$1/new" -type f | wc -l; }
MB_BEFORE=$(count "$WORK/mbsync/Mail/INBOX")
OI_BEFORE=$(count "$WORK/offlineimap/Mail/INBOX")
timeout 600 mbsync -c "$WORK/mbsync/mbsyncrc" -a >"$WORK/mbsync/out2" 2>&1 ||
    die "mbsync (again) failed: $(tail -5 "$WORK/mbsync/out2")"
offlineimap_sync
MB_NEW=$(($(count "$WORK/mbsync/Mail/INBOX") - MB_BEFORE))
OI_NEW=$(($(count "$WORK/offlineimap/Mail/INBOX") - OI_BEFORE))
log "incremental sync: mbsync got $MB_NEW new, offlineimap $OI_NEW new (25 sent)"
[[ $MB_NEW -eq 25 && $OI_NEW -eq 25 ]] || die "an incremental sync did not get exactly the new mail"
cp "$WORK/later"/* "$WORK/sent"/

# fetchmail: every message over POP3, kept on the server.
mkdir -p "$WORK/fetchmail/spool"
cat >"$WORK/fetchmail/rc" <<CONF
set no syslog
poll ${RP_POP3%:*} service ${RP_POP3##*:} protocol POP3 auth password
  user "sync@ours.test" password "secret" is root here
  sslproto '' keep fetchall
  mda "/bin/sh -c 'cat > $WORK/fetchmail/spool/\$\$.\$(date +%s%N).eml'"
CONF
chmod 600 "$WORK/fetchmail/rc"
FETCHMAILHOME=$WORK/fetchmail timeout 600 fetchmail -f "$WORK/fetchmail/rc" --nodetach \
    >"$WORK/fetchmail/out" 2>&1 || die "fetchmail failed: $(tail -5 "$WORK/fetchmail/out")"

# Compare: every sent message, by content, in each client's copy. Line ends
# are compared as CRLF (mbsync stores LF, as Maildir tools do), and the
# headers the clients add themselves (mbsync's X-TUID:, fetchmail's
# Received:) are set aside.
python3 - "$WORK/sent" "$WORK/mbsync/Mail/INBOX" "$WORK/fetchmail/spool" "$WORK/offlineimap/Mail/INBOX" <<'PY'
import hashlib, os, re, sys

def digests(paths, strip_fetchmail=False):
    out = {}
    for p in paths:
        data = open(p, "rb").read()
        # mbsync writes Maildir files with LF line ends (CRLF on the wire)
        # and adds its own X-TUID: header (a transaction id).
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        data = re.sub(rb"(?m)^X-TUID: [^\r]*\r\n", b"", data, count=1)
        if strip_fetchmail:
            # fetchmail hands the MDA LF line ends and a Received: line of its own.
            lines = data.split(b"\n")
            while lines and lines[0].startswith((b"Received:", b"\t", b" ")):
                lines.pop(0)
            data = b"\r\n".join(l.rstrip(b"\r") for l in lines)
        out.setdefault(hashlib.sha256(data.rstrip(b"\r\n")).hexdigest(), []).append(p)
    return out

sent_dir, maildir, spool, oi_maildir = sys.argv[1:]
sent = digests([os.path.join(sent_dir, f) for f in os.listdir(sent_dir)])
in_maildir = lambda m: [os.path.join(m, d, f) for d in ("cur", "new") for f in os.listdir(os.path.join(m, d))]
mb = digests(in_maildir(maildir))
oi = digests(in_maildir(oi_maildir))
fm = digests([os.path.join(spool, f) for f in os.listdir(spool)], strip_fetchmail=True)
bad = 0
for name, got in (("mbsync", mb), ("offlineimap", oi), ("fetchmail", fm)):
    missing = [v[0] for k, v in sent.items() if k not in got]
    extra = sum(len(v) for k, v in got.items() if k not in sent)
    print(f"{name}: {sum(len(v) for v in got.values())} messages, {len(missing)} missing, {extra} altered or unknown")
    bad += len(missing) + extra
sys.exit(1 if bad else 0)
PY
log "every message arrived intact with mbsync, offlineimap and fetchmail"
