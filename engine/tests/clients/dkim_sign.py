#!/usr/bin/python3
"""Sign a message with DKIM the way another mail server does, with dkimpy
(Debian's python3-dkim): an independent signer for ringpost's verifier.

Usage: dkim_sign.py KEY_PEM DOMAIN SELECTOR IN_FILE OUT_FILE

Writes the message with its DKIM-Signature field on top (rsa-sha256,
relaxed/simple, From, To and Subject signed).
"""
import sys

import dkim

key_file, domain, selector, source, target = sys.argv[1:6]
with open(key_file, "rb") as f:
    key = f.read()
with open(source, "rb") as f:
    message = f.read()
signature = dkim.sign(
    message,
    selector.encode(),
    domain.encode(),
    key,
    canonicalize=(b"relaxed", b"simple"),
    include_headers=[b"from", b"to", b"subject"],
)
with open(target, "wb") as f:
    f.write(signature + message)
