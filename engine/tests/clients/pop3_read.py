#!/usr/bin/env python3
"""Mail sent with smtplib to local users, read back with poplib.

Usage: pop3_read.py SMTP_PORT POP3_PORT

The accounts alice@ours.test and bob@ours.test (password "secret") must
exist and have empty mailboxes. Four messages go to alice, the last also to
bob. Every step checks what a POP3 client relies on: STAT, LIST, UIDL, TOP,
RETR byte for byte (behind the server's Received: header), CAPA, AUTH PLAIN,
one session per maildrop, a dropped session deletes nothing, DELE + QUIT
deletes, and unique ids survive a reconnect. Messages 1 and 2 end deleted.
Exits non-zero on the first surprise.
"""
import base64
import poplib
import smtplib
import sys
import time

HOST = "127.0.0.1"
SMTP_PORT = int(sys.argv[1])
POP3_PORT = int(sys.argv[2])
PASSWORD = "secret"


def message(n, body_lines, extra=()):
    lines = [
        f"Message-ID: <m{n}@example.org>",
        "From: Sender <sender@example.org>",
        "To: alice@ours.test",
        f"Subject: message {n}",
        *extra,
        "",
        *body_lines,
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


SENT = [
    message(1, ["first body"]),
    # Lines that start with a dot travel stuffed both ways.
    message(2, [".hidden", "..two", ".", "after the dot"]),
    # Big enough to span many reads and writes.
    message(3, [f"line {i:06d} " + "x" * 70 for i in range(3000)]),
    message(4, ["for alice and bob, 8-bit: h\u00e9llo w\u00f6rld"],
            ["Content-Type: text/plain; charset=utf-8",
             "Content-Transfer-Encoding: 8bit"]),
]


def send_all():
    with smtplib.SMTP(HOST, SMTP_PORT, timeout=30) as s:
        for i, data in enumerate(SENT):
            rcpts = ["alice@ours.test"] + (["bob@ours.test"] if i == 3 else [])
            refused = s.sendmail("sender@example.org", rcpts, data)
            assert not refused, refused


def strip_trace(lines):
    """The message without the server's Return-Path: (the envelope
    sender, RFC 5321 section 4.4) and Received: header on top."""
    assert lines[0].startswith(b"Return-Path: <"), lines[0]
    lines = lines[1:]
    assert lines[0].startswith(b"Received: "), lines[0]
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"".join(line + b"\r\n" for line in lines[i:])


def connect(user="alice@ours.test"):
    p = poplib.POP3(HOST, POP3_PORT, timeout=30)
    p.user(user)
    p.pass_(PASSWORD)
    return p


def connect_when_released():
    """Log in again once the server has seen the last session drop."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return connect()
        except poplib.error_proto as e:
            if "[IN-USE]" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def uidls(p):
    resp, lines, _ = p.uidl()
    assert resp.startswith(b"+OK"), resp
    return [line.split()[1] for line in lines]


def expect_error(what, call, needle):
    try:
        call()
    except poplib.error_proto as e:
        assert needle in str(e), f"{what}: {e}"
        return
    raise AssertionError(f"{what}: no error")


def main():
    send_all()

    # CAPA before login; wrong password; AUTH PLAIN.
    p = poplib.POP3(HOST, POP3_PORT, timeout=30)
    capa = p.capa()
    for cap in ("USER", "UIDL", "TOP", "SASL", "RESP-CODES", "PIPELINING"):
        assert cap in capa, capa
    assert "PLAIN" in capa["SASL"], capa
    p.user("alice@ours.test")
    expect_error("wrong password", lambda: p.pass_("wrong"), "[AUTH]")
    token = base64.b64encode(b"\0alice@ours.test\0" + PASSWORD.encode()).decode()
    assert p._shortcmd("AUTH PLAIN " + token).startswith(b"+OK")
    count, octets = p.stat()
    assert count == 4, count

    # LIST sizes are exactly what RETR sends; RETR is byte for byte.
    _, listing, _ = p.list()
    sizes = [int(line.split()[1]) for line in listing]
    assert sum(sizes) == octets, (sizes, octets)
    for n, sent in enumerate(SENT, start=1):
        _, lines, size = p.retr(n)
        got = b"".join(line + b"\r\n" for line in lines)
        assert len(got) == sizes[n - 1], (n, len(got), sizes[n - 1])
        assert strip_trace(lines) == sent, f"message {n} differs"

    # TOP: the header and n body lines.
    _, lines, _ = p.top(2, 2)
    blank = lines.index(b"")
    assert lines[blank + 1:] == [b".hidden", b"..two"], lines[blank:]
    _, lines, _ = p.top(3, 0)
    assert lines[-1] == b"" and b"Subject: message 3" in lines, lines[-3:]

    before = uidls(p)
    assert len(set(before)) == 4, before

    # One session per maildrop.
    expect_error("second session", connect, "[IN-USE]")

    # A session that drops after DELE deletes nothing.
    p.dele(1)
    p.dele(2)
    p.file.close()
    p.sock.close()
    p = connect_when_released()
    assert p.stat()[0] == 4, "a dropped session must delete nothing"
    assert uidls(p) == before, "unique ids survive a reconnect"

    # RSET forgets marks; DELE + QUIT deletes.
    p.dele(3)
    p.rset()
    p.dele(1)
    p.dele(2)
    expect_error("retrieving a deleted message", lambda: p.retr(1), "-ERR")
    assert p.stat()[0] == 2
    resp = p.quit()
    assert resp.startswith(b"+OK"), resp

    p = connect()
    assert p.stat()[0] == 2
    assert uidls(p) == before[2:], "the remaining messages keep their ids"
    _, lines, _ = p.retr(1)
    assert strip_trace(lines) == SENT[2]
    p.quit()

    # Bob got the fourth message, stored once for both.
    p = connect("bob@ours.test")
    assert p.stat()[0] == 1
    _, lines, _ = p.retr(1)
    assert strip_trace(lines) == SENT[3]
    p.quit()
    print("ok")


main()
