"""Accepting connections on the listening sockets, on asyncio's loop or uvloop's, resting out of files."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Callable
from typing import Any

from aiosd.service.logs import RateLimitedLog

_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# Errors accept() returns for one connection that failed on its way in (the client reset it, a firewall
# refused it): that connection is lost, the next one is accepted at once (accept(2), "Error handling").
_LOST_ON_THE_WAY = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
                              errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
                              errno.ENETUNREACH))
# After accept() failed otherwise (out of files), the listening socket rests this long: the clients wait
# in the kernel's backlog and are accepted once files are free.
ACCEPT_RETRY = 1.0
# Connections accepted per wake-up at most (asyncio's own figure), so a flood of them cannot hold the loop.
ACCEPT_BATCH = 100


class Acceptor(asyncio.AbstractServer):
    """A listening socket's accept loop, on whatever event loop runs (asyncio's or uvloop's): accept(),
    then ``loop.connect_accepted_socket`` (public on both) makes the transport and the protocol.

    Why not ``loop.create_server``: out of files, each loop fails its own way. asyncio reports every
    failed accept() (with a traceback) and multiplies its retries (140,000 failures in 10 s in a
    test); uvloop (libuv) closes a spare file, accepts and drops the waiting clients, and tells no
    one, or, without a spare file, spins or stops listening, silently. Here both rest the socket
    for ``ACCEPT_RETRY`` with one log line per interval, and the clients wait and are served once files
    are free."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol],
                 report: RateLimitedLog, backlog: int = socket.SOMAXCONN) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._factory = protocol_factory
        self._report = report
        self.retry = ACCEPT_RETRY  # tests may change it
        self._retry: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[object]] = set()
        sock.setblocking(False)
        sock.listen(backlog)
        self._loop.add_reader(sock.fileno(), self._accept)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._sock is None else (self._sock,)

    def _accept(self) -> None:
        sock = self._sock
        for _ in range(ACCEPT_BATCH):
            if sock is None:
                return
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _LOST_ON_THE_WAY:
                    continue
                self._rest(exc)
                return
            connection.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, connection))
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._loop.call_exception_handler({"message": "could not set up an accepted connection",
                                               "exception": task.exception()})

    def _rest(self, exc: OSError) -> None:
        """accept() failed (out of files): stop reading the socket for ACCEPT_RETRY, and say so (rate-limited)."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._report("cannot accept new connections: %s (open-file limit %s); clients wait or fail until files are "
                     "free, accept is retried every second", exc.strerror or exc,
                     "unlimited" if soft == resource.RLIM_INFINITY else soft, what="failed accept() calls")
        if self._sock is not None and self._retry is None:
            self._loop.remove_reader(self._sock.fileno())
            self._retry = self._loop.call_later(self.retry, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._accept()

    def close(self) -> None:
        """Stop accepting and close the socket (new clients are refused); open connections are left alone."""
        if self._sock is None:
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._sock is not None

    async def start_serving(self) -> None:
        return None  # serving from construction

    async def serve_forever(self) -> None:
        raise NotImplementedError("the daemon runs the server; an Acceptor only accepts")

    async def wait_closed(self) -> None:
        return None  # closed at close(); uvicorn waits for the connections itself


def accept_connections(sockets: list[socket.socket], protocol_factory: Callable[[], asyncio.BaseProtocol],
                       backlog: int) -> list[Acceptor]:
    """An ``Acceptor`` per listening socket, on the running loop, sharing one rate-limited failure report."""
    report = RateLimitedLog(logging.ERROR)
    return [Acceptor(sock, protocol_factory, report, backlog) for sock in sockets]


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for ``host:port``, one per address it resolves to (as asyncio's own
    create_server would make them); OSError when one cannot be bound."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            listener = socket.socket(family, kind, proto)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            listener.bind(address)
            listener.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
