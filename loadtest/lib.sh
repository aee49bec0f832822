# shellcheck shell=bash
# lib.sh — shell helpers shared by the load-test scripts (bench-accept.sh,
# bench-relay.sh, crash-accept.sh, crash-relay.sh). It is sourced, not run:
#
#   LOG_TAG=bench-relay
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing it only defines functions and sets the paths below; it starts
# nothing, installs no trap and does not change directory. The script-specific
# bits are plain variables of the sourcing script, read when a function runs:
#
#   LOG_TAG        log prefix: log prints "[$LOG_TAG] ..." to stderr
#   WORK           the script's temp dir (on_exit deletes it; a private Postfix
#                  instance lives in $WORK/postfix)
#   RINGPOST_PID   the ringpost server stop_ringpost stops ("" = none)
#   SINK_PID       the ringpost-blast sink stop_sink stops ("" = none)
#   PF_CONF        config dir of the private Postfix instance while it may be
#                  running ("" = none); pf_admin and stop_postfix use it
#   SKIP_RINGPOST  build_release builds only the load generator when set
#
# Sets:      ROOT (the repository), TARGET_DIR ($CARGO_TARGET_DIR or
#            $ROOT/target), RINGPOST and BLAST (the release binaries)
# Logging:   log MSG..., die MSG... (log "error: MSG", exit 1)
# Build:     build_release (bench scripts; clears RINGPOST_BUILT on failure)
# Processes: alive PID, wait_gone PID SECS, stop_pid PID NAME, stop_ringpost,
#            await_output VAR FILE AWK PID TRIES
# Exit:      on_exit (the EXIT trap: the script's own `cleanup`, then rm $WORK)
# Network:   free_port, wait_port PORT SECS [PID]
# Packages:  ensure_package CMD PACKAGE...
# Postfix:   ensure_postfix, pf_init DIR HOSTNAME, pf_admin ARGS..., stop_postfix
# Reports:   json_num KEY FILE, json_errors FILE (ringpost-blast --json)
# Seq logs:  lines_of FILE, sink_seqs IDLOG, acked_seqs ACKLOG

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    echo "lib.sh is sourced by the load-test scripts, not run" >&2
    exit 2
fi

# shellcheck disable=SC2034  # used by the sourcing scripts
{
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    # cargo's own override is honoured, so the binaries are found where cargo put them.
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    RINGPOST=$TARGET_DIR/release/ringpost
    BLAST=$TARGET_DIR/release/ringpost-blast
}

# --- logging -------------------------------------------------------------------
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- build ---------------------------------------------------------------------
# build_release: the release build of the bench scripts. Builds ringpost and
# ringpost-blast (only ringpost-blast with SKIP_RINGPOST); if ringpost fails to
# build, clears RINGPOST_BUILT so that its half is skipped. A failing
# ringpost-blast build ends the script (set -e), so call it as a plain
# command, not in a condition.
build_release() {
    if [[ -z $SKIP_RINGPOST ]]; then
        log "building release: ringpost + ringpost-loadtest"
        if ! cargo build --release -p ringpost -p ringpost-loadtest; then
            log "building ringpost failed; the ringpost half is skipped"
            # shellcheck disable=SC2034  # read by the bench scripts
            RINGPOST_BUILT=""
            cargo build --release -p ringpost-loadtest
        fi
    else
        cargo build --release -p ringpost-loadtest
    fi
}

# --- processes -----------------------------------------------------------------
# True while $1 is a live (not zombie) process. Reads /proc without a
# fork: benchmarks poll this while they measure.
alive() {
    local stat
    read -r stat 2>/dev/null </proc/"$1"/stat || return 1
    # The state letter follows the command name, which is in parentheses.
    stat=${stat##*) }
    [[ $stat != Z* ]]
}

# wait_gone PID SECONDS: bounded wait for a process to exit.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stop_pid PID NAME: SIGTERM, bounded wait, then SIGKILL.
stop_pid() {
    local pid=$1 name=$2
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 30; then
        log "$name did not exit within 30 s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || true
    fi
    wait "$pid" 2>/dev/null || true
}

# stop_ringpost: stops $RINGPOST_PID, if any, and clears it.
stop_ringpost() {
    [[ -n $RINGPOST_PID ]] || return 0
    local pid=$RINGPOST_PID
    RINGPOST_PID=""
    stop_pid "$pid" ringpost
}

# stop_sink: stops $SINK_PID (a ringpost-blast sink), if any, and clears it.
stop_sink() {
    [[ -n ${SINK_PID:-} ]] || return 0
    local pid=$SINK_PID
    SINK_PID=""
    stop_pid "$pid" sink
}

# start_mail_server ACCOUNT [TOML]: starts `ringpost serve` on $WORK/rp-data
# (creating the account ACCOUNT, password "secret", on first use) with SMTP,
# IMAP and POP3 on free loopback ports and relay off; TOML is appended to
# the config (tables, e.g. "[store]"). Sets RINGPOST_PID, RP_IMAP, RP_POP3,
# RP_IMAPS and RP_POP3S (HOST:PORT; the last two with the self-signed
# certificate).
start_mail_server() {
    local account=$1 extra=${2:-}
    printf 'hostname = "mail.test"\n[smtp]\nlocal_domains = ["%s"]\n%s\n' \
        "${account#*@}" "$extra" >"$WORK/ringpost.toml"
    if [[ ! -d $WORK/rp-data ]]; then
        echo secret | "$RINGPOST" user add "$account" --password-stdin \
            --config "$WORK/ringpost.toml" --data-dir "$WORK/rp-data" >/dev/null
    fi
    "$RINGPOST" serve --config "$WORK/ringpost.toml" --data-dir "$WORK/rp-data" --no-relay --ephemeral-ports 127.0.0.1 \
        --smtp 127.0.0.1:0 --pop3 127.0.0.1:0 --imap 127.0.0.1:0 --metrics 127.0.0.1:0 \
        >"$WORK/ringpost.out" 2>>"$WORK/ringpost.log" &
    RINGPOST_PID=$!
    await_output RP_IMAP "$WORK/ringpost.out" '$1 == "imap" {print $2; exit}' "$RINGPOST_PID" 600 ||
        die "ringpost did not start: $(tail -5 "$WORK/ringpost.log")"
    await_output RP_POP3 "$WORK/ringpost.out" '$1 == "pop3" {print $2; exit}' "$RINGPOST_PID" 50 ||
        die "ringpost printed no pop3 address"
    # shellcheck disable=SC2034  # used by the sourcing scripts
    RP_IMAPS=$(awk '$1 == "imaps" {print $2; exit}' "$WORK/ringpost.out")
    # shellcheck disable=SC2034
    RP_POP3S=$(awk '$1 == "pop3s" {print $2; exit}' "$WORK/ringpost.out")
}

# await_output VAR FILE AWK PID TRIES: waits for a process to announce
# something (an address) in its output. Every 0.1 s, at most TRIES times, sets
# VAR to what `awk AWK FILE` prints; returns 0 as soon as that is not empty,
# 1 once PID is no longer alive or the tries are used up. Leaves the number of
# tries made in AWAIT_TRIES.
await_output() {
    local _var=$1 _file=$2 _prog=$3 _pid=$4 _max=$5 _out
    for ((AWAIT_TRIES = 1; AWAIT_TRIES <= _max; AWAIT_TRIES++)); do
        _out=$(awk "$_prog" "$_file" 2>/dev/null || true)
        printf -v "$_var" '%s' "$_out"
        [[ -n $_out ]] && return 0
        alive "$_pid" || return 1
        sleep 0.1
    done
    AWAIT_TRIES=$_max
    return 1
}

# on_exit: the EXIT trap (`trap on_exit EXIT`). Keeps the status the script
# exits with, ignores SIGPIPE from here on (whoever read our output may be
# gone; cleaning up matters more), runs the script's `cleanup` (stop what it
# started, save logs; it must return 0) and deletes $WORK.
on_exit() {
    local rc=$?
    trap '' PIPE
    cleanup
    rm -rf "$WORK"
    exit "$rc"
}

# --- network -------------------------------------------------------------------
# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local p _
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_port PORT SECONDS [PID]: until something accepts on 127.0.0.1:PORT;
# fails early if PID (the server) dies.
wait_port() {
    local port=$1 deadline=$((SECONDS + $2)) pid=${3:-}
    until timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; do
        if [[ -n $pid ]] && ! alive "$pid"; then
            return 1
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# --- packages ------------------------------------------------------------------
# ensure_package CMD PACKAGE...: CMD on PATH (also /usr/sbin) and every
# PACKAGE installed, installing the missing ones with apt-get (root only).
# Each package is checked, not just CMD: a machine may have a server's core
# package (its CMD) without the part a benchmark needs (dovecot-pop3d).
ensure_package() {
    local cmd=$1 missing=() package
    shift
    [[ -x /usr/sbin/$cmd ]] && PATH=$PATH:/usr/sbin
    for package in "$@"; do
        [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] ||
            missing+=("$package")
    done
    if command -v "$cmd" >/dev/null && ((${#missing[@]} == 0)); then
        return 0
    fi
    ((${#missing[@]} > 0)) || missing=("$@")
    [[ $(id -u) == 0 ]] || { log "${missing[*]} not installed and we are not root"; return 1; }
    log "installing ${missing[*]} (apt-get)"
    timeout 300 apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
    PATH=$PATH:/usr/sbin
    command -v "$cmd" >/dev/null
}

# --- Postfix -------------------------------------------------------------------
# ensure_postfix: postfix on PATH, installed with apt-get if missing (root only).
ensure_postfix() {
    command -v postfix >/dev/null && return 0
    [[ -x /usr/sbin/postfix ]] && { PATH=$PATH:/usr/sbin; return 0; }
    [[ $(id -u) == 0 ]] || { log "postfix is not installed and we are not root"; return 1; }
    log "installing postfix (apt-get; 'No configuration', so the system instance stays inert)"
    timeout 300 apt-get update -qq || return 1
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq --no-install-recommends postfix >/dev/null || return 1
    PATH=$PATH:/usr/sbin
    command -v postfix >/dev/null
}

# pf_init DIR HOSTNAME: the directories of a private Postfix instance in DIR
# and the head of its DIR/etc/main.cf, the settings every such instance shares
# (shared/external-tools.md §2): its own config, queue and data directories,
# logging to DIR/maillog through postlogd, loopback only, no local delivery,
# relaying for 127.0.0.0/8 only. The caller appends the rest of main.cf and
# writes master.cf.
pf_init() {
    local pf=$1 hostname=$2
    mkdir -p "$pf/etc" "$pf/spool" "$pf/data"
    chown postfix:postfix "$pf/data"
    chmod 755 "$pf"
    cat >"$pf/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $pf/etc
queue_directory  = $pf/spool
data_directory   = $pf/data
maillog_file     = $pf/maillog
maillog_file_prefixes = $pf
mail_owner = postfix
setgid_group = postdrop
myhostname = $hostname
mydomain   = example.test
myorigin   = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols  = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
EOF
}

# Postfix admin commands print their errors only to a terminal; `script`
# gives them one so that failures are visible.
pf_admin() {
    if command -v script >/dev/null; then
        timeout 60 script -qec "postfix -c $PF_CONF $*" /dev/null
    else
        timeout 60 postfix -c "$PF_CONF" "$@"
    fi
}

# stop_postfix: stops the private instance ($PF_CONF, master in $WORK/postfix),
# if any, with a bounded wait, and clears PF_CONF.
stop_postfix() {
    [[ -n $PF_CONF ]] || return 0
    local pidfile=$WORK/postfix/spool/pid/master.pid master=""
    [[ -r $pidfile ]] && master=$(tr -dc '0-9' <"$pidfile")
    pf_admin stop >/dev/null 2>&1 || true
    if [[ -n $master ]] && ! wait_gone "$master" 30; then
        log "postfix master $master still running after 30 s; killing it"
        pf_admin abort >/dev/null 2>&1 || kill -KILL "$master" 2>/dev/null || true
        wait_gone "$master" 5 || true
    fi
    PF_CONF=""
}

# --- ringpost-blast output -------------------------------------------------------
# Numbers out of ringpost-blast's one-line JSON report.
json_num() { grep -o "\"$1\":[0-9.eE+-]*" "$2" | head -1 | cut -d: -f2 || true; }
json_errors() { grep -o '"errors":{[^}]*}' "$1" | cut -d: -f2- || true; }

lines_of() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }
# Unique X-Blast-Seq values in a sink id log ("<Message-ID> <seq>"), sorted.
sink_seqs() { [[ -f $1 ]] || return 0; awk '$2 != "-" {print $2}' "$1" | sort -u; }
# Unique seqs in a blaster ack log ("<seq> <reply>"), sorted.
acked_seqs() { [[ -f $1 ]] || return 0; awk '{print $1}' "$1" | sort -u; }
