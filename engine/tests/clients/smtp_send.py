#!/usr/bin/env python3
"""Send test mail to ringpost with independent clients; write what was sent.

Usage: smtp_send.py PORT OUTDIR

Each message carries an `X-Test-Id:` header; the exact bytes the server must
store (after dot-unstuffing, before its Received: header) are written to
OUTDIR/<id>.eml, with the envelope in OUTDIR/<id>.env ("from\\nrcpt\\nrcpt...").
Exits non-zero on any unexpected reply.
"""
import os
import smtplib
import socket
import sys

HOST = "127.0.0.1"
PORT = int(sys.argv[1])
OUT = sys.argv[2]


def message(test_id, subject, body_lines, extra_headers=()):
    lines = [
        f"X-Test-Id: {test_id}",
        "From: Sender <sender@example.org>",
        "To: rcpt@example.net",
        f"Subject: {subject}",
        *extra_headers,
        "",
        *body_lines,
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def record(test_id, data, sender, rcpts):
    with open(os.path.join(OUT, f"{test_id}.eml"), "wb") as f:
        f.write(data)
    with open(os.path.join(OUT, f"{test_id}.env"), "w") as f:
        f.write("\n".join([sender, *rcpts]))


def smtplib_plain():
    """smtplib sends one command at a time (no pipelining)."""
    with smtplib.SMTP(HOST, PORT, timeout=30) as s:
        code, caps = s.ehlo("client.example")
        assert code == 250, (code, caps)
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "chunking", "enhancedstatuscodes"):
            assert s.has_extn(ext), f"EHLO lacks {ext}: {caps!r}"
        cases = [
            ("plain-1", "hello", ["Just a line."], "sender@example.org", ["rcpt@example.net"]),
            ("plain-dots", "dots", [".starts with a dot", "..two dots", ".", "end"],
             "sender@example.org", ["rcpt@example.net", "other@example.com"]),
            ("plain-long", "long", ["x" * 900 for _ in range(200)], "", ["rcpt@example.net"]),
        ]
        for test_id, subject, body, sender, rcpts in cases:
            data = message(test_id, subject, body)
            refused = s.sendmail(sender, rcpts, data)
            assert not refused, refused
            record(test_id, data, sender, rcpts)
        # 8BITMIME body, sent with BODY=8BITMIME
        data = message("plain-8bit", "8bit", ["Grüße aus Köln — ünïcödé"],
                       ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"])
        s.sendmail("sender@example.org", ["rcpt@example.net"], data, mail_options=["BODY=8BITMIME"])
        record("plain-8bit", data, "sender@example.org", ["rcpt@example.net"])
        # A refused recipient does not stop the others.
        code, _ = s.rset()
        assert code == 250


def read_reply(f):
    """Read one (possibly multi-line) reply; return (code, text)."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("connection closed while reading a reply")
        lines.append(line.decode())
        if line[3:4] != b"-":
            return int(line[:3]), "".join(lines)


def expect(f, code):
    got, text = read_reply(f)
    assert got == code, f"expected {code}, got {text!r}"
    return text


def pipelined():
    """Raw socket: MAIL+RCPT+RCPT+DATA in one write, several transactions."""
    sock = socket.create_connection((HOST, PORT), timeout=30)
    f = sock.makefile("rb")
    expect(f, 220)
    sock.sendall(b"EHLO pipeliner.example\r\n")
    expect(f, 250)
    for n in range(5):
        test_id = f"pipe-{n}"
        rcpts = [f"a{n}@example.net", f"b{n}@example.com"]
        sock.sendall(
            f"MAIL FROM:<pipe@example.org>\r\nRCPT TO:<{rcpts[0]}>\r\nRCPT TO:<{rcpts[1]}>\r\nDATA\r\n".encode()
        )
        expect(f, 250)
        expect(f, 250)
        expect(f, 250)
        expect(f, 354)
        data = message(test_id, f"pipelined {n}", [f"line {i}" for i in range(50)] + [".hidden dot"])
        stuffed = data.replace(b"\r\n.", b"\r\n..")
        sock.sendall(stuffed + b".\r\n")
        text = expect(f, 250)
        assert "queued as" in text, text
        record(test_id, data, "pipe@example.org", rcpts)
    # Whole transactions pipelined back to back, including the body (RFC 2920 allows
    # the client to send the data once 354 is certain; we send it all at once).
    burst = b""
    expected = []
    for n in range(3):
        test_id = f"burst-{n}"
        data = message(test_id, f"burst {n}", ["body"])
        burst += b"MAIL FROM:<burst@example.org>\r\nRCPT TO:<burst@example.net>\r\nDATA\r\n" + data + b".\r\n"
        expected.append((test_id, data))
    sock.sendall(burst + b"QUIT\r\n")
    for test_id, data in expected:
        expect(f, 250)
        expect(f, 250)
        expect(f, 354)
        expect(f, 250)
        record(test_id, data, "burst@example.org", ["burst@example.net"])
    expect(f, 221)
    sock.close()


def chunked():
    """BDAT (CHUNKING) in three chunks, the last with LAST."""
    sock = socket.create_connection((HOST, PORT), timeout=30)
    f = sock.makefile("rb")
    expect(f, 220)
    sock.sendall(b"EHLO chunker.example\r\n")
    expect(f, 250)
    data = message("bdat-1", "chunked", ["first part", "second part", ".a dot, not stuffed in BDAT"])
    parts = [data[:10], data[10:40], data[40:]]
    sock.sendall(b"MAIL FROM:<chunk@example.org>\r\nRCPT TO:<chunk@example.net>\r\n")
    expect(f, 250)
    expect(f, 250)
    for i, part in enumerate(parts):
        last = " LAST" if i == len(parts) - 1 else ""
        sock.sendall(f"BDAT {len(part)}{last}\r\n".encode() + part)
        expect(f, 250)
    record("bdat-1", data, "chunk@example.org", ["chunk@example.net"])
    sock.sendall(b"QUIT\r\n")
    expect(f, 221)
    sock.close()


if __name__ == "__main__":
    smtplib_plain()
    pipelined()
    chunked()
    print("sent", len([n for n in os.listdir(OUT) if n.endswith(".eml")]), "messages")
