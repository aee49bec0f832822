#!/usr/bin/env python3
"""Read a message as a mail program would, with Python's email package.

Usage: mime_read.py FILE

Prints JSON: the decoded From, To, Subject, Message-ID and Date; the
plain and HTML bodies; each attachment's file name, type and bytes (in
base64); and the defects the parser found (none, for a well-formed one).
"""
import base64
import email
import email.policy
import json
import sys

with open(sys.argv[1], "rb") as f:
    message = email.message_from_binary_file(f, policy=email.policy.default)


def body(kind):
    part = message.get_body(preferencelist=(kind,))
    return None if part is None else part.get_content()


defects = [type(d).__name__ for d in message.defects]
for part in message.walk():
    defects += [type(d).__name__ for d in part.defects]
attachments = [
    {
        "filename": part.get_filename(),
        "content_type": part.get_content_type(),
        "data": base64.b64encode(part.get_payload(decode=True)).decode(),
    }
    for part in message.iter_attachments()
] if message.is_multipart() else []
print(
    json.dumps(
        {
            "from": str(message["From"]),
            "from_name": message["From"].addresses[0].display_name,
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "message_id": str(message["Message-ID"]),
            "date": str(message["Date"]),
            "text": body("plain"),
            "html": body("html"),
            "attachments": attachments,
            "defects": defects,
        }
    )
)
