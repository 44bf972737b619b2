"""Client-side traffic counter for the benchmark: bytes, connections and round trips of a process.

``install()`` wraps the socket of every redis-py TCP connection the process opens from then on (redis-py
directly, and kombu's Redis transport, which uses redis-py underneath). A *round trip* is counted each
time a connection receives data after having sent data since its last receive, i.e. one request/response
exchange as the network sees it (a pipeline of 4,000 commands is one round trip; pub/sub messages that
arrive without a request are not round trips). Used only by ``bench/run.py`` child processes.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class NetCounter:
    """Totals for one process since ``install()`` (or the last ``reset()``)."""

    sent: int = 0
    received: int = 0
    connects: int = 0
    round_trips: int = 0

    def reset(self) -> None:
        """Zero every total."""
        self.sent = self.received = self.connects = self.round_trips = 0

    def snapshot(self) -> dict[str, int]:
        """The totals as a plain dict."""
        return asdict(self)


COUNTER = NetCounter()
_installed = False


class _CountingSocket:
    """Proxy of a connected socket that counts what goes through it (everything else is delegated)."""

    __slots__ = ("_sock", "_pending")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = False

    def _got(self, n: int) -> None:
        COUNTER.received += n
        if self._pending and n > 0:
            COUNTER.round_trips += 1
            self._pending = False

    def sendall(self, data: Any, *args: Any) -> None:
        COUNTER.sent += len(data)
        self._pending = True
        self._sock.sendall(data, *args)

    def send(self, data: Any, *args: Any) -> int:
        n = self._sock.send(data, *args)
        COUNTER.sent += n
        self._pending = True
        return n

    def recv(self, size: int, *args: Any) -> bytes:
        data = self._sock.recv(size, *args)
        self._got(len(data))
        return data

    def recv_into(self, buf: Any, *args: Any) -> int:
        n = self._sock.recv_into(buf, *args)
        self._got(n)
        return n

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def install(exclude_names: frozenset[str] = frozenset()) -> NetCounter:
    """Start counting every redis-py TCP connection opened from now on (idempotent).

    Args:
        exclude_names: connections whose ``client_name`` is one of these are not counted (the
            benchmark's own meter connection).
    """
    global _installed
    if _installed:
        return COUNTER
    import redis.connection

    original = redis.connection.Connection._connect

    def _connect(self: Any) -> Any:
        sock = original(self)
        if getattr(self, "client_name", None) in exclude_names:
            return sock
        COUNTER.connects += 1
        return _CountingSocket(sock)

    redis.connection.Connection._connect = _connect  # type: ignore[method-assign]
    _installed = True
    return COUNTER
