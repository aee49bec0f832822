#!/usr/bin/env python3
"""Hold many idle mail connections open, for bench-idle.sh.

    idle-clients.py HOST:PORT N smtp            # greeting, EHLO, then idle
    idle-clients.py HOST:PORT N imap USER PASS  # greeting, LOGIN, SELECT INBOX, then idle

Opens N connections one after another (each with its own socket, from
127.0.0.1), brings each to the idle state above, prints "ready N" on
stdout, and holds them until its standard input closes; then it closes them
and exits. A connection that fails stops the run with a message on stderr
and exit status 1.
"""

import socket
import sys


def read_until(sock, done):
    """Read until done(data) holds; the data read."""
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server after {data!r}")
        data += chunk
    return data


def last_line_starts(prefix):
    def done(data):
        lines = data.split(b"\r\n")
        return len(lines) > 1 and any(line.startswith(prefix) for line in lines[:-1])

    return done


def smtp_idle(sock, _n, _args):
    read_until(sock, last_line_starts(b"220 "))
    sock.sendall(b"EHLO idle.test\r\n")
    reply = read_until(sock, last_line_starts(b"250 "))
    if b"\r\n250 " not in b"\r\n" + reply:
        raise ConnectionError(f"EHLO: {reply!r}")


def imap_idle(sock, n, args):
    user, password = args
    read_until(sock, last_line_starts(b"* OK"))
    sock.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
    reply = read_until(sock, last_line_starts(b"a "))
    if b"a OK" not in reply:
        raise ConnectionError(f"LOGIN {n}: {reply!r}")
    sock.sendall(b"b SELECT INBOX\r\n")
    reply = read_until(sock, last_line_starts(b"b "))
    if b"b OK" not in reply:
        raise ConnectionError(f"SELECT {n}: {reply!r}")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    protocol = {"smtp": smtp_idle, "imap": imap_idle}[sys.argv[3]]
    extra = sys.argv[4:]
    held = []
    for n in range(count):
        sock = socket.create_connection((host, int(port)), timeout=60)
        try:
            protocol(sock, n, extra)
        except (OSError, ConnectionError) as e:
            print(f"connection {n}: {e}", file=sys.stderr)
            sys.exit(1)
        held.append(sock)
    print(f"ready {len(held)}", flush=True)
    sys.stdin.read()
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
