#!/usr/bin/env python3
"""Drive a ringpost-blast sink with Python's smtplib, an SMTP client that
shares nothing with the sink; write down what was sent.

Usage: sink_smtplib.py PORT OUTDIR MODE

MODE accept: every message must be accepted. Each carries an `X-Test-Id:`
header; the exact bytes the sink must keep (what smtplib dot-stuffs and the
sink must unstuff) go to OUTDIR/<id>.eml, the envelope to OUTDIR/<id>.env
("from\\nrcpt\\nrcpt...").
MODE tempfail-first: the sink answers the first message 451; the script
checks that, resends it on the same connection and records it as above.
Exits non-zero on any unexpected reply.
"""
import os
import smtplib
import sys

HOST = "127.0.0.1"
PORT = int(sys.argv[1])
OUT = sys.argv[2]
MODE = sys.argv[3]


def message(test_id, body_lines, extra_headers=()):
    lines = [
        f"X-Test-Id: {test_id}",
        f"Message-ID: <{test_id}@client.example>",
        "From: Sender <sender@example.org>",
        "To: rcpt@example.net",
        f"Subject: {test_id}",
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


def connect():
    s = smtplib.SMTP(HOST, PORT, timeout=30)
    code, caps = s.ehlo("client.example")
    assert code == 250, (code, caps)
    for ext in ("pipelining", "size", "8bitmime", "smtputf8", "chunking", "enhancedstatuscodes"):
        assert s.has_extn(ext), f"EHLO lacks {ext}: {caps!r}"
    return s


def accept():
    with connect() as s:
        cases = [
            ("plain", ["Just a line."], "sender@example.org", ["rcpt@example.net"]),
            ("dots", [".starts with a dot", "..two dots", ".", "end", "."],
             "sender@example.org", ["rcpt@example.net", "other@example.com"]),
            ("long", ["x" * 900 for _ in range(300)], "", ["rcpt@example.net"]),
            ("empty-body", [], "a@example.org", ["b@example.org"]),
        ]
        for test_id, body, sender, rcpts in cases:
            data = message(test_id, body)
            refused = s.sendmail(sender, rcpts, data)
            assert not refused, refused
            record(test_id, data, sender, rcpts)
        data = message("eight-bit", ["Grüße aus Köln — ünïcödé"],
                       ["Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: 8bit"])
        s.sendmail("sender@example.org", ["rcpt@example.net"], data,
                   mail_options=["BODY=8BITMIME"])
        record("eight-bit", data, "sender@example.org", ["rcpt@example.net"])
        code, _ = s.noop()
        assert code == 250
        code, _ = s.rset()
        assert code == 250
        code, _ = s.docmd("VRFY", "someone")
        assert code == 500, code
    # A second connection, as a relay would open.
    with connect() as s:
        data = message("second-connection", ["bye"])
        s.sendmail("x@example.org", ["y@example.org"], data)
        record("second-connection", data, "x@example.org", ["y@example.org"])


def tempfail_first():
    with connect() as s:
        data = message("retried", ["try me twice"])
        try:
            s.sendmail("r@example.org", ["t@example.net"], data)
            raise AssertionError("the first message should have been refused")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 451, e
            assert e.smtp_error.startswith(b"4.3.0"), e
        s.rset()
        refused = s.sendmail("r@example.org", ["t@example.net"], data)
        assert not refused, refused
        record("retried", data, "r@example.org", ["t@example.net"])


if __name__ == "__main__":
    {"accept": accept, "tempfail-first": tempfail_first}[MODE]()
    print("sent", len([n for n in os.listdir(OUT) if n.endswith(".eml")]), "messages")
