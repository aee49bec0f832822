#!/usr/bin/env python3
"""Read a delivery status notification as a receiving mail program would.

Usage: dsn_read.py FILE

Parses FILE with Python's email package (RFC 3464's message/delivery-status
is split by it into one block per message and per recipient) and prints
JSON: {"human": the text/plain part, "recipients": [{field: value, ...,
"diagnostic_type": ..., "diagnostic_text": ...}]}. Exits non-zero when the
message is not a multipart/report with a delivery-status part.
"""
import email
import email.policy
import json
import sys

with open(sys.argv[1], "rb") as f:
    message = email.message_from_binary_file(f, policy=email.policy.default)

if message.get_content_type() != "multipart/report":
    sys.exit(f"not a multipart/report: {message.get_content_type()}")
if message.get_param("report-type") != "delivery-status":
    sys.exit(f"report-type is {message.get_param('report-type')}")

parts = list(message.iter_parts())
human = parts[0].get_content()
status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
blocks = status.get_payload()  # per-message block, then one per recipient
recipients = []
for block in blocks[1:]:
    fields = {name: str(value) for name, value in block.items()}
    code = fields.get("Diagnostic-Code")
    if code is not None:
        # RFC 3464 §2.3.6: diagnostic-type ";" *text
        kind, _, text = code.partition(";")
        fields["diagnostic_type"] = kind.strip()
        fields["diagnostic_text"] = text.strip()
    recipients.append(fields)
print(json.dumps({"human": human, "recipients": recipients}))
