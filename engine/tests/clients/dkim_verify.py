#!/usr/bin/python3
"""Verify a message's DKIM signatures the way a receiver does, with dkimpy
(Debian's python3-dkim), looking keys up in DNS at 127.0.0.1:DNS_PORT.

Usage: dkim_verify.py DNS_PORT FILE

Prints one line per DKIM-Signature: "ok d=... s=... a=..." or
"fail d=... s=...: why"; exits non-zero unless every signature verifies
and there is at least one.
"""
import sys

import dkim
import dns.resolver

resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = int(sys.argv[1])
resolver.timeout = resolver.lifetime = 5
dns.resolver.default_resolver = resolver

with open(sys.argv[2], "rb") as f:
    message = f.read()

verifier = dkim.DKIM(message)
count = 0
failed = 0
for index, (name, value) in enumerate(
    (n, v) for n, v in verifier.headers if n.lower() == b"dkim-signature"
):
    count += 1
    tags = dict(
        part.strip().split("=", 1)
        for part in value.decode().replace("\r\n", "").split(";")
        if "=" in part
    )
    label = f"d={tags.get('d')} s={tags.get('s')} a={tags.get('a')}"
    try:
        good = verifier.verify(idx=index)
    except dkim.DKIMException as e:
        good = False
        label += f": {e}"
    if good:
        print("ok", label)
    else:
        failed += 1
        print("fail", label)
if count == 0:
    print("no DKIM-Signature")
sys.exit(1 if failed or count == 0 else 0)
