"""Which protocol a TCP port speaks, asked with a few bytes: for telling a URL that names
the wrong kind of server (or a plain-text port named by a TLS URL) from one that is away.

Both probes return False on any socket error or silence: a server that does not answer
is not known to speak anything, and the caller keeps treating it as unreachable.
"""

from __future__ import annotations

import socket
from typing import Final

# What a Redis server answers a plain-text PING with: PONG, or an error reply of its own
# (authentication required, protected mode...).
_REDIS_REPLIES: Final = (b"+PONG", b"-NOAUTH", b"-ERR", b"-WRONGPASS", b"-NOPERM", b"-DENIED")
# A Postgres SSLRequest: length 8, code 80877103.
_SSL_REQUEST: Final = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


def speaks_redis(address: tuple[str, int], timeout_s: float = 2.0) -> bool:
    """True if ``address`` (host, port) answers a plain-text ``PING`` in RESP. A TLS port answers
    with a TLS alert or nothing; Postgres reads the bytes as a malformed startup packet and closes."""
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(_REDIS_REPLIES)


def speaks_postgres(address: tuple[str, int], timeout_s: float = 2.0) -> bool:
    """True if ``address`` (host, port) answers a Postgres SSLRequest (``S`` or ``N``)."""
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.sendall(_SSL_REQUEST)
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False
