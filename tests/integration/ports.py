"""Loopback ports for servers the tests start, and for faults (a port nothing listens on)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago and that nothing listens on when this
    returns (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
