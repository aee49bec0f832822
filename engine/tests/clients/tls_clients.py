#!/usr/bin/env python3
"""Mail clients over TLS, as Thunderbird or K-9 would use the server:
Python's smtplib, imaplib and poplib, verifying the server's certificate
against a test CA (no "insecure" switches).

Usage: tls_clients.py CA_FILE SMTP SUBMISSION SUBMISSIONS IMAP IMAPS POP3 POP3S

Each argument after the CA is a port on 127.0.0.1; the server's certificate
names "localhost". The server must allow no plaintext passwords, have the
account alice@ours.test (password "secret") with an empty INBOX, and relay
remote mail to a sink. Exits non-zero on the first surprise.
"""
import imaplib
import poplib
import smtplib
import ssl
import sys

CA, SMTP, SUB, SUBS, IMAP, IMAPS, POP3, POP3S = sys.argv[1], *map(int, sys.argv[2:9])
HOST = "localhost"
USER, PASSWORD = "alice@ours.test", "secret"


def context():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def message(subject):
    return (
        f"From: {USER}\r\nTo: friend@far.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@ours.test>\r\n\r\n{subject} body\r\n"
    ).encode()


def expect_smtp_error(code, fn, *args):
    try:
        fn(*args)
    except smtplib.SMTPResponseException as e:
        assert e.smtp_code == code, (code, e.smtp_code, e.smtp_error)
        return
    except smtplib.SMTPRecipientsRefused as e:
        codes = {c for c, _ in e.recipients.values()}
        assert codes == {code}, (code, e.recipients)
        return
    raise AssertionError(f"expected {code}")


# --- submission on 587: STARTTLS, then AUTH ------------------------------------
with smtplib.SMTP(HOST, SUB, timeout=20) as s:
    s.ehlo()
    assert s.has_extn("starttls"), s.esmtp_features
    assert not s.has_extn("auth"), "AUTH offered before TLS"
    # Without AUTH, the submission port takes no mail.
    code, text = s.mail(USER)
    assert code == 530, (code, text)
    s.rset()
    s.starttls(context=context())
    s.ehlo()
    assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"], s.esmtp_features
    assert not s.has_extn("starttls"), "STARTTLS offered twice"
    s.login(USER, PASSWORD)
    refused = s.sendmail(USER, ["friend@far.test"], message("via starttls"))
    assert refused == {}, refused
    # Only the account's own address may be the sender.
    expect_smtp_error(553, s.sendmail, "boss@ours.test", ["friend@far.test"], message("forged"))

# Wrong password: 535, and the session goes on.
with smtplib.SMTP(HOST, SUB, timeout=20) as s:
    s.starttls(context=context())
    try:
        s.login(USER, "wrong")
        raise AssertionError("wrong password accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e

# --- submissions on 465: TLS from the first byte, AUTH LOGIN -------------------
with smtplib.SMTP_SSL(HOST, SUBS, context=context(), timeout=20) as s:
    s.ehlo()
    assert "LOGIN" in s.esmtp_features["auth"], s.esmtp_features
    # login() would pick PLAIN; Outlook-style clients use LOGIN.
    s.user, s.password = USER, PASSWORD
    code, _ = s.auth("LOGIN", s.auth_login)
    assert code == 235, code
    assert s.sendmail(USER, ["friend@far.test"], message("via implicit tls")) == {}

# --- the MX port: no relaying without AUTH, STARTTLS offered -------------------
with smtplib.SMTP(HOST, SMTP, timeout=20) as s:
    s.ehlo()
    assert s.has_extn("starttls"), s.esmtp_features
    s.starttls(context=context())
    s.ehlo()
    expect_smtp_error(550, s.sendmail, "stranger@far.test", ["friend@far.test"], message("open relay?"))
    s.rset()
    # Local mail needs no AUTH.
    assert s.sendmail("stranger@far.test", [USER], message("for alice")) == {}

# --- IMAP: STARTTLS and LOGINDISABLED, IMAPS ------------------------------------
m = imaplib.IMAP4(HOST, IMAP, timeout=20)
assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities, m.capabilities
try:
    m.login(USER, PASSWORD)
    raise AssertionError("plaintext LOGIN accepted")
except imaplib.IMAP4.error:
    pass
m.starttls(ssl_context=context())
assert "LOGINDISABLED" not in m.capabilities, m.capabilities
m.login(USER, PASSWORD)
typ, data = m.select("INBOX")
assert typ == "OK" and int(data[0]) == 1, data
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert b"for alice" in data[0][1], data
m.logout()

m = imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=context(), timeout=20)
m.login(USER, PASSWORD)
typ, data = m.status("INBOX", "(MESSAGES)")
assert typ == "OK" and b"MESSAGES 1" in data[0], data
m.logout()

# --- POP3: STLS and POP3S --------------------------------------------------------
p = poplib.POP3(HOST, POP3, timeout=20)
capa = p.capa()
assert "STLS" in capa and "USER" not in capa, capa
try:
    p.user(USER)
    p.pass_(PASSWORD)
    raise AssertionError("plaintext USER/PASS accepted")
except poplib.error_proto:
    pass
p.stls(context=context())
p.user(USER)
p.pass_(PASSWORD)
count, _ = p.stat()
assert count == 1, count
p.quit()

p = poplib.POP3_SSL(HOST, POP3S, context=context(), timeout=20)
p.user(USER)
p.pass_(PASSWORD)
assert b"for alice" in b"\n".join(p.retr(1)[1])
p.quit()

print("ok")
