#!/usr/bin/env python3
"""Mail sent with smtplib to a local user, read and worked on with imaplib.

Usage: imap_read.py SMTP_PORT IMAP_PORT

The account alice@ours.test (password "secret") must exist with an empty
mailbox. Checks what an IMAP client relies on: CAPABILITY, LOGIN, SELECT,
SEARCH, FETCH of flags, sizes, ENVELOPE, BODYSTRUCTURE and bodies (byte for
byte behind the server's Received: header), \\Seen on BODY[] but not on
BODY.PEEK[], STORE, CREATE, COPY (COPYUID), MOVE, APPEND (APPENDUID),
EXPUNGE, STATUS, LIST/LSUB, RENAME, DELETE, and IDLE woken by a new SMTP
delivery. Exits non-zero on the first surprise.
"""
import imaplib
import re
import smtplib
import socket
import sys

HOST = "127.0.0.1"
SMTP_PORT = int(sys.argv[1])
IMAP_PORT = int(sys.argv[2])
USER = "alice@ours.test"


def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


PLAIN = crlf("""Message-ID: <p1@example.org>
From: Bob Sender <bob@example.org>
To: Alice <alice@ours.test>
Subject: plain hello
Date: Mon, 23 Nov 2026 10:00:00 +0000
Content-Type: text/plain; charset=us-ascii

Just a plain line about rutabaga.
.a line with a dot
""")

MULTI = crlf("""Message-ID: <m2@example.org>
From: carol@example.org
To: alice@ours.test
Subject: multi part
Date: Mon, 23 Nov 2026 11:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XYZ"

--XYZ
Content-Type: text/plain; charset=utf-8

see the attachment
--XYZ
Content-Type: application/octet-stream; name="data.bin"
Content-Disposition: attachment; filename="data.bin"
Content-Transfer-Encoding: base64

AAECAwQFBgcICQ==
--XYZ--
""")

BIG = crlf("Message-ID: <b3@example.org>\nFrom: dave@example.org\nTo: alice@ours.test\n"
           "Subject: big one\n\n" + "".join(f"line {i:05d} {'y' * 60}\n" for i in range(2000)))


def send(data, rcpts=(USER,)):
    with smtplib.SMTP(HOST, SMTP_PORT, timeout=30) as s:
        assert not s.sendmail("sender@example.org", list(rcpts), data)


def strip_trace(stored):
    """The message without the server's Return-Path: (the envelope
    sender, RFC 5321 section 4.4) and Received: header on top."""
    assert stored.startswith(b"Return-Path: <"), stored[:40]
    stored = stored.split(b"\r\n", 1)[1]
    assert stored.startswith(b"Received: "), stored[:40]
    lines = stored.split(b"\r\n")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def fetch_one(m, which, items, uid=False):
    data = ok(m.uid("FETCH", which, items) if uid else m.fetch(which, items))
    return data


def literal_of(data):
    """The first literal in a FETCH answer."""
    for part in data:
        if isinstance(part, tuple):
            return part[1]
    raise AssertionError(f"no literal in {data!r}")


def main():
    for data in (PLAIN, MULTI, BIG):
        send(data)

    m = imaplib.IMAP4(HOST, IMAP_PORT, timeout=30)
    caps = m.capabilities
    for cap in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "LITERAL+", "NAMESPACE", "UNSELECT"):
        assert cap in caps, caps
    try:
        m.login(USER, "wrong")
        raise AssertionError("bad password accepted")
    except imaplib.IMAP4.error as e:
        assert "AUTHENTICATIONFAILED" in str(e), e
    ok(m.login(USER, "secret"))

    count = int(ok(m.select("INBOX"))[0])
    assert count == 3, count
    assert m.untagged_responses.get("UIDVALIDITY"), m.untagged_responses

    # SEARCH.
    assert ok(m.search(None, "ALL"))[0].split() == [b"1", b"2", b"3"]
    assert ok(m.search(None, "UNSEEN"))[0].split() == [b"1", b"2", b"3"]
    assert ok(m.search(None, "SUBJECT", '"multi"'))[0].split() == [b"2"]
    assert ok(m.search(None, "FROM", "carol"))[0].split() == [b"2"]
    assert ok(m.search(None, "BODY", "rutabaga"))[0].split() == [b"1"]
    assert ok(m.search(None, "LARGER", "50000"))[0].split() == [b"3"]
    assert ok(m.search(None, "OR", "SUBJECT", "plain", "SUBJECT", "big"))[0].split() == [b"1", b"3"]
    assert ok(m.search(None, "NOT", "SUBJECT", "plain"))[0].split() == [b"2", b"3"]
    uids = ok(m.uid("SEARCH", None, "ALL"))[0].split()
    assert len(uids) == 3

    # FETCH: sizes, envelope, structure, bodies.
    data = fetch_one(m, "1:3", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    assert len(data) == 3 and b"UID" in data[0] and b"RFC822.SIZE" in data[0], data
    env = fetch_one(m, "1", "(ENVELOPE)")[0]
    assert b'"plain hello"' in env and b'"Bob Sender"' in env and b'"bob" "example.org"' in env, env
    structure = fetch_one(m, "2", "(BODYSTRUCTURE)")[0]
    assert b'"MIXED"' in structure.upper() and b'"APPLICATION" "OCTET-STREAM"' in structure.upper(), structure
    for n, sent in ((1, PLAIN), (2, MULTI), (3, BIG)):
        stored = literal_of(fetch_one(m, str(n), "(BODY.PEEK[])"))
        assert strip_trace(stored) == sent, f"message {n} differs"
        size = re.search(rb"RFC822.SIZE (\d+)", fetch_one(m, str(n), "(RFC822.SIZE)")[0])
        assert int(size.group(1)) == len(stored), (n, size, len(stored))
    assert ok(m.search(None, "SEEN"))[0] == b"", "PEEK must not set \\Seen"
    part = literal_of(fetch_one(m, "2", "(BODY.PEEK[1])"))
    assert part == b"see the attachment", part
    header = literal_of(fetch_one(m, "2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert header == b"Subject: multi part\r\n\r\n", header
    partial = literal_of(fetch_one(m, "3", "(BODY.PEEK[TEXT]<0.10>)"))
    assert partial == b"line 00000", partial
    data = fetch_one(m, "1", "(BODY[TEXT])")
    assert b"\\Seen" in b" ".join(p if isinstance(p, bytes) else p[0] for p in data), data
    assert ok(m.search(None, "SEEN"))[0].split() == [b"1"]

    # STORE.
    data = ok(m.store("2", "+FLAGS", "(\\Flagged $Work)"))
    assert b"\\Flagged" in data[0] and b"$Work" in data[0], data
    assert ok(m.search(None, "FLAGGED"))[0].split() == [b"2"]
    assert ok(m.search(None, "KEYWORD", "$Work"))[0].split() == [b"2"]
    ok(m.store("2", "-FLAGS.SILENT", "(\\Flagged)"))
    assert ok(m.search(None, "FLAGGED"))[0] == b""

    # CREATE, COPY, MOVE, APPEND, STATUS, LIST.
    ok(m.create("Archive/2026"))
    names = [line.rsplit(b" ", 1)[1].strip(b'"') for line in ok(m.list())]
    assert b"Archive/2026" in names and b"Archive" in names and b"INBOX" in names, names
    typ, data = m.copy("1", "Archive/2026")
    assert typ == "OK", data
    copyuid = [r for r in m.response("COPYUID")[1] if r]
    assert copyuid, "COPY answers COPYUID"
    m._simple_command("MOVE", "3", "Archive/2026")
    typ, expunged = m.response("EXPUNGE")
    assert expunged == [b"3"], expunged
    assert int(ok(m.select("INBOX"))[0]) == 2
    status = ok(m.status("Archive/2026", "(MESSAGES UIDNEXT UNSEEN)"))[0]
    assert b"MESSAGES 2" in status and b"UNSEEN 1" in status, status
    appended = crlf("From: me@ours.test\nSubject: draft\n\nnot sent yet\n")
    typ, data = m.append("Archive/2026", "(\\Draft \\Seen)", None, appended)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    typ, data = m.append("Nowhere", None, None, appended)
    assert typ == "NO" and b"[TRYCREATE]" in data[0], (typ, data)
    count = int(ok(m.select("Archive/2026"))[0])
    assert count == 3, count
    assert literal_of(fetch_one(m, "3", "(BODY.PEEK[])")) == appended
    assert ok(m.search(None, "DRAFT"))[0].split() == [b"3"]

    # EXPUNGE of \Deleted.
    ok(m.store("1", "+FLAGS.SILENT", "(\\Deleted)"))
    typ, data = m.expunge()
    assert typ == "OK" and data == [b"1"], data
    assert int(ok(m.select("Archive/2026"))[0]) == 2

    # RENAME, SUBSCRIBE, LSUB, DELETE.
    ok(m.rename("Archive", "Old"))
    names = b" ".join(ok(m.list('""', "*")))
    assert b"Old/2026" in names and b"Archive" not in names, names
    ok(m.subscribe("Old/2026"))
    assert b"Old/2026" in b" ".join(x for x in ok(m.lsub()) if x)
    ok(m.select("INBOX"))
    ok(m.delete("Old/2026"))
    assert b"Old/2026" not in b" ".join(ok(m.list()))

    # IDLE, woken by a delivery over SMTP.
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    assert m.readline().startswith(b"+"), "IDLE continuation"
    send(PLAIN)
    m.sock.settimeout(10)
    line = m.readline()
    assert line == b"* 3 EXISTS\r\n", line
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if line.startswith(tag):
            assert b"OK" in line, line
            break
    m.logout()
    print("ok")


main()
