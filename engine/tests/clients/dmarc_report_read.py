#!/usr/bin/env python3
"""Read a DMARC aggregate report message as a report processor would.

Usage: dmarc_report_read.py FILE

Parses FILE with Python's email package, takes the application/gzip
attachment (RFC 7489 §7.2.1.1), decompresses it and parses the XML
feedback document with ElementTree. Prints JSON: the subject, the
attachment's file name, the report metadata, the published policy and
each record's row, identifiers and auth results. Exits non-zero when the
message has no such attachment or the document does not parse.
"""
import email
import email.policy
import gzip
import json
import sys
import xml.etree.ElementTree as ET

with open(sys.argv[1], "rb") as f:
    message = email.message_from_binary_file(f, policy=email.policy.default)

attachment = next(
    (p for p in message.walk() if p.get_content_type() == "application/gzip"), None
)
if attachment is None:
    sys.exit("no application/gzip attachment")
feedback = ET.fromstring(gzip.decompress(attachment.get_content()))
if feedback.tag != "feedback":
    sys.exit(f"root element is {feedback.tag}")


def text(node, path):
    found = node.find(path)
    return None if found is None else found.text


records = []
for record in feedback.findall("record"):
    records.append(
        {
            "source_ip": text(record, "row/source_ip"),
            "count": int(text(record, "row/count")),
            "disposition": text(record, "row/policy_evaluated/disposition"),
            "dkim": text(record, "row/policy_evaluated/dkim"),
            "spf": text(record, "row/policy_evaluated/spf"),
            "header_from": text(record, "identifiers/header_from"),
            "spf_domain": text(record, "auth_results/spf/domain"),
            "spf_result": text(record, "auth_results/spf/result"),
        }
    )
print(
    json.dumps(
        {
            "subject": str(message["Subject"]),
            "filename": attachment.get_filename(),
            "org_name": text(feedback, "report_metadata/org_name"),
            "begin": int(text(feedback, "report_metadata/date_range/begin")),
            "end": int(text(feedback, "report_metadata/date_range/end")),
            "domain": text(feedback, "policy_published/domain"),
            "p": text(feedback, "policy_published/p"),
            "records": records,
        }
    )
)
