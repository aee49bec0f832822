#!/usr/bin/env python3
"""Make the benchmark mailbox and load it into a server.

  mailbox.py generate DIR COUNT        write COUNT messages as DIR/NNNNNN.eml
  mailbox.py maildir DIR MAILDIR       copy them into MAILDIR/cur (Dovecot)
  mailbox.py append DIR HOST PORT USER PASSWORD
                                       APPEND them to INBOX over IMAP

Sizes are mixed and deterministic (seeded): 40 % about 1 KB, 30 % 4 KB,
20 % 16 KB, 8 % 64 KB, 2 % 256 KB; a quarter are multipart with a base64
attachment. Every message has CRLF line ends, as stored mail does.
"""
import base64
import imaplib
import os
import random
import socket
import sys

SIZES = [(1024, 40), (4096, 30), (16384, 20), (65536, 8), (262144, 2)]


def message(n, rng):
    target = rng.choices([s for s, _ in SIZES], [w for _, w in SIZES])[0]
    target = int(target * rng.uniform(0.7, 1.3))
    head = [
        f"Message-ID: <bench{n}@example.test>",
        f"From: Sender {n % 97} <sender{n % 97}@example.test>",
        "To: bench@ours.test",
        f"Subject: benchmark message {n}",
        f"Date: Mon, 23 Nov 2026 {n % 24:02d}:{n % 60:02d}:00 +0000",
        "MIME-Version: 1.0",
    ]
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do".split()
    def text(size):
        lines, total = [], 0
        while total < size:
            line = " ".join(rng.choice(words) for _ in range(12))
            lines.append(line)
            total += len(line) + 2
        return lines
    if n % 4 == 0:
        blob = base64.encodebytes(rng.randbytes(max(target // 2, 64))).decode().split("\n")
        body = head + ['Content-Type: multipart/mixed; boundary="b"', "", "--b",
                       "Content-Type: text/plain; charset=us-ascii", ""] + text(target // 3) + [
                       "--b", 'Content-Type: application/octet-stream; name="a.bin"',
                       "Content-Transfer-Encoding: base64", ""] + [l for l in blob if l] + ["--b--"]
    else:
        body = head + ["Content-Type: text/plain; charset=us-ascii", ""] + text(target)
    return ("\r\n".join(body) + "\r\n").encode()


def generate(out, count, first=1):
    os.makedirs(out, exist_ok=True)
    rng = random.Random(42 + first - 1)
    total = 0
    for n in range(first, first + count):
        data = message(n, rng)
        total += len(data)
        with open(os.path.join(out, f"{n:06d}.eml"), "wb") as f:
            f.write(data)
    print(f"{count} messages, {total} bytes")


def files(src):
    return sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".eml"))


def maildir(src, dest):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    for i, path in enumerate(files(src)):
        with open(path, "rb") as f:
            data = f.read()
        name = f"{1700000000 + i}.M{i}P1.bench,S={len(data)}:2,"
        with open(os.path.join(dest, "cur", name), "wb") as f:
            f.write(data)


def append(src, host, port, user, password):
    m = imaplib.IMAP4(host, int(port), timeout=60)
    # imaplib writes a literal and its CRLF separately; with Nagle on, the
    # CRLF waits for the server's delayed ACK: 40 ms per APPEND.
    m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    m.login(user, password)
    for path in files(src):
        with open(path, "rb") as f:
            typ, data = m.append("INBOX", None, None, f.read())
        if typ != "OK":
            raise SystemExit(f"APPEND failed: {data}")
    m.logout()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"generate": lambda: generate(args[0], int(args[1]), *map(int, args[2:3])),
     "maildir": lambda: maildir(*args),
     "append": lambda: append(*args)}[cmd]()
