#!/usr/bin/env python3
"""Inject a message through ringpost's HTTP API as an application would.

Usage: inject.py URL TOKEN REQUEST_FILE

POSTs the JSON in REQUEST_FILE to URL with Python's urllib and the bearer
TOKEN, and prints JSON: {"status": the HTTP status, "body": the answer}.
"""
import json
import sys
import urllib.error
import urllib.request

url, token, path = sys.argv[1:4]
with open(path, "rb") as f:
    payload = f.read()
request = urllib.request.Request(
    url,
    data=payload,
    method="POST",
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
)
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        status, body = answer.status, answer.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(json.dumps({"status": status, "body": json.loads(body)}))
