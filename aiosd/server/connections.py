"""The connection layer under the app: request head caps (431), read timeouts, the connection cap, accept() failures.

Failed accept() calls are logged once per interval.

Why here and not in the app: all of this must happen before anything reads the request. uvicorn's
httptools protocol accumulates an unterminated header (and a chunked body's trailer) by bytes
concatenation, so a 100 MB header costs quadratic CPU before any route runs, and idle or half-sent
connections are never closed. ``GuardedHttpProtocol`` counts the head's bytes in
``data_received`` (refusing at ``server.max_header_bytes`` before the parser sees more),
counts header fields, times the head and the body out, and gives every connection a place
under ``server.max_connections``; at the cap the longest-idle connection makes room, and when
every connection has a request in flight the new one gets a 503.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from aiosd.api.asgi import ASGIApp
from aiosd.api.responses import error_body
from aiosd.errors import (
    AiosdError,
    HeaderFieldsTooLarge,
    RequestTimeout,
    TooManyConnections,
)
from aiosd.service.logs import RateLimitedLog

if TYPE_CHECKING:
    from aiosd.config.settings import Config
    from aiosd.service.runtime import Runtime

log = logging.getLogger("aiosd.http")

# Files aiosd needs besides client connections: the listening socket, kernel connections (added
# per kernel.max_concurrency), the config watch, logs, openclaw.json and its temp files.
RESERVED_FILES = 64
_ACCEPT_FAILED = "socket.accept() out of system resource"


class _TooManyHeaders(Exception):
    """Raised inside the parser's callback to stop it; data_received answers 431."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int  # after fitting it under the open-file limit
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float


class ConnectionGuard:
    """Live limits (from the config generation serving now) and the connections that are idle."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._config: Config | None = None
        self._limits: ConnectionLimits | None = None
        # Connections without a request in flight, longest-idle first (a dict keeps insertion order).
        self.idle: dict[GuardedHttpProtocol, None] = {}
        # Closed by aiosd but not yet gone (connection_lost comes a loop turn later): they hold no place.
        self.closing: set[GuardedHttpProtocol] = set()
        self.log_refused_head = RateLimitedLog(logging.INFO)
        self.log_timeout = RateLimitedLog(logging.INFO)
        self.log_full = RateLimitedLog(logging.WARNING)

    def limits(self) -> ConnectionLimits:
        config = self.runtime.config
        if self._limits is None or config is not self._config:
            server = config.server
            self._limits = ConnectionLimits(
                max_connections=fit_open_file_limit(server.max_connections, config.kernel.max_concurrency),
                max_header_bytes=server.max_header_bytes,
                max_headers=server.max_headers,
                header_timeout=server.header_timeout,
                body_timeout=server.body_timeout,
                keep_alive_timeout=server.keep_alive_timeout,
            )
            self._config = config
        return self._limits


def fit_open_file_limit(max_connections: int, kernel_connections: int) -> int:
    """``max_connections``, or fewer when the open-file limit cannot hold them; raises the soft
    limit toward the hard one first (aiosd uses epoll, so more files cost nothing else)."""
    wanted = max_connections + RESERVED_FILES + kernel_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                log.info("raised the open-file limit from %d to %d for server.max_connections %d", soft, target,
                         max_connections)
                soft = target
            except (ValueError, OSError) as exc:
                log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fitting = max(1, soft - RESERVED_FILES - kernel_connections)
    log.warning("server.max_connections %d does not fit the open-file limit %d (LimitNOFILE=; aiosd keeps %d "
                "files for itself): accepting at most %d connections", max_connections, soft,
                RESERVED_FILES + kernel_connections, fitting)
    return fitting


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head and a place under the
    connection cap. ``protocol_class(guard)`` binds it to one server's guard."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # uvicorn's arguments, passed on as they come
        super().__init__(*args, **kwargs)
        self.limits = self.guard.limits()
        # uvicorn declares an int (its CLI takes whole seconds); call_later takes any float.
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._in_head = True  # the parser is reading a request line and headers (or waits for one)
        self._head_bytes = 0  # bytes fed to the parser for this head so far
        self._tail = b""  # the last bytes of the previous chunk: a CRLFCRLF may straddle two
        self._header_count = 0
        self._too_many_headers = False
        # After the head: bytes fed that were neither body nor chunked framing (a chunk extension
        # or a trailer field, which httptools also accumulates quadratically).
        self._body_bytes = 0
        self._chunk_bytes = 0  # body bytes of the chunk being read
        self._framing = 0  # bytes of chunk-size lines and CRLFs of the chunks read so far
        self._excess = 0
        self._heads = 0  # request heads completed on this connection
        self._last_read = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # --- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        guard = self.guard
        if len(self.connections) - len(guard.closing) > self.limits.max_connections:
            # Make room by closing the connection idle longest (a kept-alive one, or a slow head).
            victim = next((c for c in guard.idle if c is not self), None)
            if victim is None:
                guard.log_full("connection limit reached (server.max_connections %d) with a request in flight on "
                               "every connection: refused a connection from %s with 503",
                               self.limits.max_connections, _peer(self.client), what="connections refused")
                self._refuse(TooManyConnections(
                    f"aiosd is at its connection limit (server.max_connections {self.limits.max_connections}) "
                    "with a request in flight on every connection; try again shortly"), retry_after=1)
                return
            guard.log_full("connection limit reached (server.max_connections %d): closed the connection idle "
                           "longest (from %s) to make room", self.limits.max_connections, _peer(victim.client),
                           what="idle connections closed to make room")
            victim._close()
        guard.idle[self] = None
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.idle.pop(self, None)
        self.guard.closing.discard(self)
        self._cancel_read_timer()
        super().connection_lost(exc)

    def _close(self) -> None:
        self.guard.idle.pop(self, None)
        self._cancel_read_timer()
        if not self.transport.is_closing():
            self.guard.closing.add(self)
            self.transport.close()

    # --- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        limits = self.limits
        if self._in_head:
            if self._read_timer is None:  # the first bytes of the next request on a kept-alive connection
                self._start_head_timer()
            before = self._head_bytes
            self._head_bytes = before + len(data)
            if self._head_bytes > limits.max_header_bytes and not self._head_ends_by(data, before,
                                                                                     limits.max_header_bytes):
                self._refuse_head(f"the request line and headers are larger than {limits.max_header_bytes} bytes "
                                  "(server.max_header_bytes)")
                return
            self._tail = data[-3:]
            was_head = True
        else:
            was_head = False
            self._last_read = self.loop.time()
            body_before, framing_before = self._body_bytes, self._framing
        heads = self._heads
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._too_many_headers:
                self._refuse_head(f"more than {limits.max_headers} header fields (server.max_headers)")
                return
            self.guard.log_refused_head("invalid HTTP request from %s: answered 400", _peer(self.client),
                                        what="invalid HTTP requests")
            self._cancel_read_timer()
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            # aiosd serves no WebSockets (ws="none"): the request was dispatched as a plain one.
            return
        if not self._in_head:
            if self._read_timer is None:
                # The body (if any) must keep coming: at most body_timeout between two pieces of it.
                self._read_timer = self.loop.call_later(limits.body_timeout, self._body_timeout)
            if not was_head and self._heads == heads:  # (a new head resets the counts)
                self._excess += len(data) - (self._body_bytes - body_before) - (self._framing - framing_before)
                if self._excess > limits.max_header_bytes:
                    self._refuse_head(f"a chunked body's trailer or chunk extensions are larger than "
                                      f"{limits.max_header_bytes} bytes (server.max_header_bytes)")

    def _head_ends_by(self, data: bytes, before: int, limit: int) -> bool:
        """Whether the head's blank line is in ``data`` (or straddles into it) within ``limit`` bytes."""
        window = self._tail + data
        end = window.find(b"\r\n\r\n")
        return end >= 0 and before - len(self._tail) + end + 4 <= limit

    # --- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._too_many_headers = True
            raise _TooManyHeaders()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._head_bytes = 0
        self._body_bytes = self._chunk_bytes = self._framing = self._excess = 0
        self.guard.idle.pop(self, None)
        self._cancel_read_timer()
        self._last_read = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._chunk_bytes += len(body)
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        # "<size in hex>\r\n" before the chunk's data and "\r\n" after it.
        self._framing += len(f"{self._chunk_bytes:x}") + 4
        self._chunk_bytes = 0

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
        self._cancel_read_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self.guard.idle[self] = None  # idle until the next request (uvicorn's keep-alive timer runs)

    # --- timeouts ------------------------------------------------------------------------------

    def _start_head_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _head_timeout(self) -> None:
        self._read_timer = None
        if not self._in_head or self._refused:
            return
        timeout = self.limits.header_timeout
        self.guard.log_timeout("closed a connection from %s: no complete request head within %gs "
                               "(server.header_timeout)", _peer(self.client), timeout,
                               what="connections closed for a slow or missing request head")
        self._refuse(RequestTimeout(f"the request line and headers did not arrive within {timeout:g}s "
                                    "(server.header_timeout)"))

    def _body_timeout(self) -> None:
        self._read_timer = None
        if self._in_head or self._refused:
            return
        timeout = self.limits.body_timeout
        quiet = self.loop.time() - self._last_read
        if quiet < timeout:
            self._read_timer = self.loop.call_later(timeout - quiet, self._body_timeout)
            return
        self.guard.log_timeout("closed a connection from %s: its request body stalled for %gs "
                               "(server.body_timeout)", _peer(self.client), timeout,
                               what="connections closed for a stalled request body")
        cycle: RequestResponseCycle | None = self.cycle  # uvicorn types it as always set; None before a request
        if cycle is not None and not cycle.response_started:
            self._refuse(RequestTimeout(f"the request body stopped arriving for {timeout:g}s (server.body_timeout)"))
        else:
            self._close()

    # --- refusing ----------------------------------------------------------------------------

    def _refuse_head(self, reason: str) -> None:
        self.guard.log_refused_head("refused a request from %s with 431: %s", _peer(self.client), reason,
                                    what="requests refused with 431")
        self._refuse(HeaderFieldsTooLarge(f"request header fields too large: {reason}"))

    def _refuse(self, error: AiosdError, retry_after: int | None = None) -> None:
        """Answer ``error`` as an OpenAI-style JSON body (the api package's writer) and close the connection."""
        self._refused = True
        body = error_body(error)
        head = [f"HTTP/1.1 {error.status} {_REASONS.get(error.status, '')}",
                "content-type: application/json", f"content-length: {len(body)}", "connection: close"]
        if retry_after is not None:
            head.append(f"retry-after: {retry_after}")
        cycle: RequestResponseCycle | None = self.cycle  # uvicorn types it as always set; None before a request
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's request (if one runs) ends as a disconnect
            cycle.message_event.set()
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self._close()


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _peer(client: tuple[str, int] | None) -> str:
    if not client:
        return "an unknown address"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def protocol_class(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``guard``."""
    return type("AiosdHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})


def uvicorn_config(app: ASGIApp, runtime: Runtime, *, graceful_timeout: float) -> uvicorn.Config:
    """uvicorn's settings for aiosd's HTTP server on the runtime's bound address."""
    guard = ConnectionGuard(runtime)
    guard.limits()  # at start: says now if max_connections does not fit the open-file limit
    return uvicorn.Config(
        app,
        host=runtime.bound_host,
        port=runtime.bound_port,
        http=protocol_class(guard),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        ws="none",
        # uvicorn declares an int; asyncio.timeout takes any float.
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]
        timeout_keep_alive=runtime.config.server.keep_alive_timeout,  # type: ignore[arg-type]  # an int there too
    )


_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class _Listener(socket.socket):
    """A listening socket that answers "nothing to accept" for a while after running out of files.

    Why: asyncio's accept loop does not stop at a failed accept(); it goes on up to ``backlog``
    times in the same round, reporting each failure and scheduling one more retry for each, so the
    retries multiply (140,000 failures in 10 s in a test). One failure per round is enough:
    asyncio then pauses the socket and retries a second later."""

    _resting_until = 0.0

    def accept(self) -> tuple[socket.socket, Any]:  # Any: the peer address, by family as socket.accept
        if self._resting_until and time.monotonic() < self._resting_until:
            raise BlockingIOError(errno.EAGAIN, "not accepting for a moment: out of files")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                self._resting_until = time.monotonic() + 0.5
            raise


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
            listener = _Listener(family, kind, proto)
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


def log_accept_failures(loop: asyncio.AbstractEventLoop) -> None:
    """Route asyncio's "accept() out of system resource" reports (one per failed accept, with a
    traceback, thousands a second when out of file descriptors) to one line per interval."""
    report = RateLimitedLog(logging.ERROR)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            exc = context.get("exception")
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            report("cannot accept new connections: %s (open-file limit %s); clients wait or fail until files are "
                   "free, accept is retried every second", getattr(exc, "strerror", None) or exc,
                   "unlimited" if soft == resource.RLIM_INFINITY else soft, what="failed accept() calls")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
