"""The connection layer under the app: request head caps (431), read timeouts, the connection cap.

Accepting the connections (and resting out of files) lives in ``accept``.

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
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools
import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
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
# Requests one connection may have parsed and waiting behind the one being answered (HTTP/1.1
# pipelining); past it aiosd stops reading from that connection until an answer goes out.
MAX_PIPELINED = 16
# Body bytes a request waiting in that queue may have buffered before aiosd stops reading.
QUEUED_BODY_BYTES = HIGH_WATER_LIMIT
# A chunked body is parsed in slices this large, so a head right after it is counted from its start.
CHUNKED_SLICE = 16384
# At the connection cap, a connection whose request sent nothing for this long may be answered 503 to
# make room; a connection just opened (its request on its way) is never.
STALL_GRACE = 1.0
# After a refusal (408, 431, 503) aiosd reads and drops what the client still sends for this long
# before closing, so that the answer reaches it instead of a reset.
LINGER = 2.0
LINGER_BYTES = 65536  # ... or until it sent this much more (a flood): then aiosd closes at once


class _TooManyHeaders(Exception):
    """Raised inside the parser's callback to stop it; data_received answers 431."""


class _HeldFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while ``held()`` says so (uvicorn resumes
    reading whenever a request starts reading its body or an answer ends)."""

    def __init__(self, transport: asyncio.Transport, held: Callable[[], bool]) -> None:
        super().__init__(transport)
        self._held = held

    def resume_reading(self) -> None:
        if not self._held():
            super().resume_reading()


def _body_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length as the parser will read it: Content-Length, 0 without one, None when chunked
    (or a length the parser will refuse anyway)."""
    length = 0
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return length


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int  # after fitting it under the open-file limit
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    body_deadline: float
    send_timeout: float
    keep_alive_timeout: float


class ConnectionGuard:
    """Live limits (from the config generation serving now) and the connections that are idle."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._config: Config | None = None
        self._limits: ConnectionLimits | None = None
        # Truly idle connections: kept alive after an answer, nothing of a next request read yet;
        # longest-idle first (a dict keeps insertion order).
        self.idle: dict[GuardedHttpProtocol, None] = {}
        # Per-connection bounds, fixed (tests may lower them).
        self.max_pipelined = MAX_PIPELINED
        self.queued_body_bytes = QUEUED_BODY_BYTES
        self.chunked_slice = CHUNKED_SLICE
        self.stall_grace = STALL_GRACE
        self.linger = LINGER
        self.linger_bytes = LINGER_BYTES
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
                body_deadline=server.body_deadline,
                send_timeout=server.send_timeout,
                keep_alive_timeout=server.keep_alive_timeout,
            )
            self._config = config
        return self._limits


def lingering_budget(max_connections: int) -> int:
    """Refused connections that may linger (answered, half-closed) at once beside ``max_connections``."""
    return max_connections // 4 + 1


def fit_open_file_limit(max_connections: int, kernel_connections: int) -> int:
    """``max_connections``, or fewer when the open-file limit cannot hold them; raises the soft
    limit toward the hard one first (aiosd uses epoll, so more files cost nothing else)."""
    wanted = max_connections + lingering_budget(max_connections) + RESERVED_FILES + kernel_connections
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
    fitting = max(1, (soft - RESERVED_FILES - kernel_connections) * 4 // 5)
    log.warning("server.max_connections %d does not fit the open-file limit %d (LimitNOFILE=; aiosd keeps %d "
                "files for itself and a quarter more for refused connections while their answer goes out): "
                "accepting at most %d connections", max_connections, soft, RESERVED_FILES + kernel_connections,
                fitting)
    return fitting


class _OneSendPerAnswer:
    """The transport one request's cycle writes its answer to: the head (the cycle's first write) waits
    for the first piece of the body and both leave in one send; a head with no body in the same loop
    turn leaves at its end.

    Why: uvicorn writes a head and its body with two ``transport.write`` calls, so two sends; on
    loopback a send also runs the receiver's side of TCP, and the second one was ~5% of aiosd's CPU
    per request (bench/RESULTS.md, round 7). Everything but ``write`` goes to the transport as is."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now (its body did not follow in the same loop turn)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head, a bounded pipeline, reads that
    stop while answers are not read, and a place under the connection cap. ``protocol_class(guard)``
    binds it to one server's guard."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # uvicorn's arguments, passed on as they come
        super().__init__(*args, **kwargs)
        self.limits = self.guard.limits()
        # uvicorn declares an int (its CLI takes whole seconds); call_later takes any float.
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._in_head = True  # the parser is reading a request line and headers (or waits for one)
        self._head_bytes = 0  # bytes fed to the parser for this head so far
        self._tail = b""  # the last bytes of the previous piece: a CRLFCRLF may straddle two
        self._header_count = 0
        self._too_many_headers = False
        # After the head: bytes fed that were neither body nor chunked framing (a chunk extension
        # or a trailer field, which httptools also accumulates quadratically).
        self._body_bytes = 0
        self._chunk_bytes = 0  # body bytes of the chunk being read
        self._framing = 0  # bytes of chunk-size lines and CRLFs of the chunks read so far
        self._excess = 0
        self._body_left: int | None = 0  # Content-Length bytes still to come; None for a chunked body
        self._heads = 0  # request heads completed on this connection
        self._messages = 0  # requests (head and body) completed on this connection
        self._backlog = b""  # bytes read but not parsed yet: held while this connection's queue is full
        self._last_read = 0.0
        self._body_started = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._lingered = 0  # bytes read and dropped after a refusal
        self._deferred: tuple[AiosdError, int | None] | None = None  # a refusal waiting for earlier answers

    # --- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self.flow = _HeldFlow(transport, self._reading_held)
        self._last_read = self.loop.time()
        if len(self.connections) - len(self.guard.closing) > self.limits.max_connections and not self._make_room():
            return
        self._start_head_timer()

    def _make_room(self) -> bool:
        """At the cap: close a truly idle connection, else answer one whose request stalled 503; False (and
        this connection answered 503) when every other connection has a request arriving or in flight."""
        guard, limit = self.guard, self.limits.max_connections
        victim = next((c for c in guard.idle if c is not self), None)
        if victim is not None:
            guard.log_full("connection limit reached (server.max_connections %d): closed the connection idle "
                           "longest (from %s) to make room", limit, _peer(victim.client),
                           what="idle connections closed to make room")
            victim._close()
            return True
        stalled = self._most_stalled()
        if stalled is not None:
            quiet = self.loop.time() - stalled._last_read
            guard.log_full("connection limit reached (server.max_connections %d): answered 503 to the connection "
                           "whose request stalled longest (from %s, %.1fs without a byte) to make room", limit,
                           _peer(stalled.client), quiet, what="stalled connections closed to make room")
            stalled._refuse(TooManyConnections(
                f"aiosd is at its connection limit (server.max_connections {limit}) and this connection's request "
                f"sent nothing for {quiet:.1f}s: closed to make room; try again"), retry_after=1)
            return True
        guard.log_full("connection limit reached (server.max_connections %d) with a request arriving or in flight "
                       "on every connection: refused a connection from %s with 503", limit, _peer(self.client),
                       what="connections refused")
        self._refuse(TooManyConnections(
            f"aiosd is at its connection limit (server.max_connections {limit}) with a request arriving or in "
            "flight on every connection; try again shortly"), retry_after=1)
        return False

    def _most_stalled(self) -> GuardedHttpProtocol | None:
        """The connection whose request (head or body) has sent nothing for longest, past the guard's grace."""
        latest = self.loop.time() - self.guard.stall_grace
        found: GuardedHttpProtocol | None = None
        for other in self.connections:
            if (isinstance(other, GuardedHttpProtocol) and other is not self and other._last_read <= latest
                    and other not in self.guard.closing and other._waiting_for_request()
                    and (found is None or other._last_read < found._last_read)):
                found = other
        return found

    def _waiting_for_request(self) -> bool:
        """Whether this connection's next request is still arriving (head or body) with nothing to answer."""
        cycle: RequestResponseCycle | None = self.cycle  # uvicorn types it as always set; None before a request
        if self._refused or self.pipeline:
            return False
        if self._in_head:
            return cycle is None or cycle.response_complete
        # A body arriving for a request not answered yet, or only being drained after an early answer.
        return cycle is not None and cycle.more_body and (not cycle.response_started or cycle.response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.idle.pop(self, None)
        self.guard.closing.discard(self)
        self._cancel_read_timer()
        self._cancel_send_timer()
        self._backlog = b""
        super().connection_lost(exc)

    def _close(self, abort: bool = False) -> None:
        self.guard.idle.pop(self, None)
        self._cancel_read_timer()
        self._cancel_send_timer()
        if not self.transport.is_closing() or abort:
            self.guard.closing.add(self)
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    # --- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered and closing: what the client still sends is read and dropped, up to a point
            self._lingered += len(data)
            if self._lingered > self.guard.linger_bytes:
                self._close(abort=True)
            return
        self._unset_keepalive_if_required()
        self._last_read = self.loop.time()
        self.guard.idle.pop(self, None)
        if self._backlog:  # reading is paused: at most a read already under way lands here
            self._backlog += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Feed ``data`` to the parser one request part at a time: a head up to its blank line (so that
        every head on the connection is held to the cap), then its body; stop, keeping the rest unparsed,
        when the connection's queue of requests is full."""
        pos, size = 0, len(data)
        view = memoryview(data)
        while pos < size:
            if self._queue_full():
                self._backlog = data[pos:]
                self.flow.pause_reading()
                return
            if self._in_head:
                length = self._head_piece(data, pos)
                if length is None:
                    return
            elif self._body_left is not None:
                length = min(self._body_left, size - pos) or size - pos
            else:  # chunked: in slices, so a head after the last chunk is counted from its start
                length = min(self.guard.chunked_slice, self.limits.max_header_bytes, size - pos)
            if not self._parse(view[pos:pos + length]):
                return
            pos += length

    def _head_piece(self, data: bytes, pos: int) -> int | None:
        """How many bytes from ``pos`` belong to the head being read (up to its blank line, within the
        cap); None when the head is over the cap (answered 431)."""
        if self._read_timer is None:  # the first bytes of the next request
            self._start_head_timer()
        limit = self.limits.max_header_bytes
        room = limit - self._head_bytes
        length = -1
        if pos == 0 and self._tail:  # a blank line straddling the previous piece and this one
            joined = (self._tail + data[:3]).find(b"\r\n\r\n")
            if joined >= 0 and joined + 4 - len(self._tail) <= room:
                length = joined + 4 - len(self._tail)
        if length < 0:
            end = data.find(b"\r\n\r\n", pos, pos + max(room, 0))
            if end >= 0:
                length = end + 4 - pos
            elif len(data) - pos > room:
                self._refuse_head(f"the request line and headers are larger than {limit} bytes "
                                  "(server.max_header_bytes)")
                return None
            else:
                length = len(data) - pos
        self._head_bytes += length
        self._tail = (self._tail + data[pos:pos + length])[-3:]
        return length

    def _parse(self, piece: memoryview) -> bool:
        """Feed one piece to the parser; False when the connection was refused (400, 431)."""
        limits = self.limits
        was_head = self._in_head
        heads, messages = self._heads, self._messages
        body_before, framing_before = self._body_bytes, self._framing
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserError:
            if self._too_many_headers:
                self._refuse_head(f"more than {limits.max_headers} header fields (server.max_headers)")
                return False
            self.guard.log_refused_head("invalid HTTP request from %s: answered 400", _peer(self.client),
                                        what="invalid HTTP requests")
            self._cancel_read_timer()
            self.send_400_response("Invalid HTTP request received.")
            self._refused = True
            return False
        except httptools.HttpParserUpgrade:
            # aiosd serves no WebSockets (ws="none"): the request was dispatched as a plain one.
            return False
        if was_head or self._heads != heads:
            return True
        consumed = (self._body_bytes - body_before) + (self._framing - framing_before)
        if self._messages != messages:
            # The body ended inside this piece: what followed it is the start of the next head.
            leftover = max(0, len(piece) - consumed)
            self._head_bytes += leftover
            self._tail = bytes(piece[len(piece) - leftover:])[-3:]
            return True
        self._excess += len(piece) - consumed
        if self._excess > limits.max_header_bytes:
            self._refuse_head(f"a chunked body's trailer or chunk extensions are larger than "
                              f"{limits.max_header_bytes} bytes (server.max_header_bytes)")
            return False
        return True

    # --- the queue and flow control ------------------------------------------------------------

    def _queue_full(self) -> bool:
        """Whether to stop parsing: this connection already queues ``guard.max_pipelined`` requests
        behind the one being answered, or the request being read waits in that queue with its
        buffered body at ``guard.queued_body_bytes``."""
        if not self.pipeline:
            return False
        if self._in_head and self._head_bytes == 0:
            return len(self.pipeline) >= self.guard.max_pipelined
        return not self._in_head and len(self.cycle.body) >= self.guard.queued_body_bytes

    def _reading_held(self) -> bool:
        """Whether reading must stay paused whatever uvicorn asks: unparsed bytes are held, the queue is
        full, or the client does not read the answers."""
        return bool(self._backlog) or self.flow.write_paused or self._queue_full()

    def _release(self) -> None:
        """Parse what was held back and read again, as far as the queue and the client allow."""
        if self._refused or self.transport.is_closing():
            return
        if self._backlog and not self._queue_full():
            data, self._backlog = self._backlog, b""
            self._feed(data)
        cycle: RequestResponseCycle | None = self.cycle  # uvicorn types it as always set; None before a request
        if not self._reading_held() and not (cycle is not None and len(cycle.body) > HIGH_WATER_LIMIT):
            self.flow.resume_reading()

    def pause_writing(self) -> None:
        """The client is not reading the answers: stop reading its requests, and give it send_timeout."""
        super().pause_writing()
        self.flow.pause_reading()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_send_timer()
        self._release()

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
        self._body_left = _body_length(self.headers)
        self.guard.idle.pop(self, None)
        self._cancel_read_timer()
        self._last_read = self._body_started = self.loop.time()
        super().on_headers_complete()
        # The cycle uvicorn just made (running, or queued behind earlier ones) writes its answer in one
        # send. An internal: tests/server/test_library_internals.py names it if uvicorn changes.
        self.cycle.transport = _OneSendPerAnswer(self.transport, self.loop)  # type: ignore[assignment]  # its write/close/is_closing are all a cycle uses
        # The body must keep coming (body_timeout) and be whole within body_deadline; a request without
        # a body completes right after this, which cancels the timer.
        limits = self.limits
        self._read_timer = self.loop.call_later(min(limits.body_timeout, limits.body_deadline), self._body_timeout)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._chunk_bytes += len(body)
        if self._body_left is not None:
            self._body_left = max(0, self._body_left - len(body))
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        # "<size in hex>\r\n" before the chunk's data and "\r\n" after it.
        self._framing += len(f"{self._chunk_bytes:x}") + 4
        self._chunk_bytes = 0

    def on_message_complete(self) -> None:
        self._in_head = True
        self._messages += 1
        self._head_bytes = 0
        self._tail = b""
        self._cancel_read_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next queued request, if any
        if self.transport.is_closing():
            return
        if self._deferred is not None and not self.pipeline:  # the answers before a refusal are out
            self._answer_refusal(*self._deferred)
            return
        if self.timeout_keep_alive_task is not None:
            self.guard.idle[self] = None  # idle until the next request (uvicorn's keep-alive timer runs)
        if self._backlog or self.flow.read_paused:
            self.loop.call_soon(self._release)

    # --- timeouts ------------------------------------------------------------------------------

    def _start_head_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

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
        """A body that stalls for body_timeout, or is not whole within body_deadline, gets 408."""
        self._read_timer = None
        if self._in_head or self._refused:
            return
        limits, now = self.limits, self.loop.time()
        stall_at, deadline_at = self._last_read + limits.body_timeout, self._body_started + limits.body_deadline
        if now < stall_at and now < deadline_at:
            self._read_timer = self.loop.call_later(min(stall_at, deadline_at) - now, self._body_timeout)
            return
        if now >= deadline_at:
            what, reason = "a request body not complete", (f"the request body did not arrive in full within "
                                                           f"{limits.body_deadline:g}s (server.body_deadline)")
        else:
            what, reason = "a stalled request body", (f"the request body stopped arriving for "
                                                      f"{limits.body_timeout:g}s (server.body_timeout)")
        self.guard.log_timeout("closed a connection from %s: %s", _peer(self.client), reason,
                               what=f"connections closed for {what}")
        cycle: RequestResponseCycle | None = self.cycle  # uvicorn types it as always set; None before a request
        if cycle is not None and not cycle.response_started and not self.pipeline:
            self._refuse(RequestTimeout(reason))
        else:
            self._close()

    def _send_timeout(self) -> None:
        self._send_timer = None
        if not self.flow.write_paused:
            return
        timeout = self.limits.send_timeout
        self.guard.log_timeout("closed a connection from %s: it did not read aiosd's answer for %gs "
                               "(server.send_timeout)", _peer(self.client), timeout,
                               what="connections closed for answers not read")
        self._close(abort=True)  # a close would wait for the unread answer to drain

    # --- refusing ----------------------------------------------------------------------------

    def _refuse_head(self, reason: str) -> None:
        self.guard.log_refused_head("refused a request from %s with 431: %s", _peer(self.client), reason,
                                    what="requests refused with 431")
        self._refuse(HeaderFieldsTooLarge(f"request header fields too large: {reason}"))

    def _refuse(self, error: AiosdError, retry_after: int | None = None) -> None:
        """Answer ``error`` as an OpenAI-style JSON body (the api package's writer) and close the connection;
        nothing more is read from it. A request of the connection still being answered (pipelined
        before the refused one) is answered first, and the refusal right after it."""
        self._refused = True
        self._backlog = b""
        self.guard.idle.pop(self, None)
        self._cancel_read_timer()
        cycle: RequestResponseCycle | None = self.cycle  # uvicorn types it as always set; None before a request
        if cycle is not None and not self._in_head:  # refusing the request whose body is arriving
            if not cycle.response_complete:
                cycle.disconnected = True  # its app (if it runs) ends as a disconnect
                cycle.message_event.set()
            if cycle.response_started or self.pipeline:  # answered already, or other answers come first
                self._close(abort=not cycle.response_complete)
                return
        elif cycle is not None and not cycle.response_complete:
            self._deferred = (error, retry_after)  # a new request was refused: the ones before it are answered first
            return
        self._answer_refusal(error, retry_after)

    def _answer_refusal(self, error: AiosdError, retry_after: int | None) -> None:
        """Write the refusal and close, lingering: aiosd half-closes, reads and drops what the client still
        sends for ``guard.linger`` seconds (or ``guard.linger_bytes``), and only then closes, so the answer
        is not lost to a reset (closing with unread bytes makes the kernel send RST, which can discard the
        answer at the client)."""
        body = error_body(error)
        head = [f"HTTP/1.1 {error.status} {_REASONS.get(error.status, '')}",
                "content-type: application/json", f"content-length: {len(body)}", "connection: close"]
        if retry_after is not None:
            head.append(f"retry-after: {retry_after}")
        transport, guard = self.transport, self.guard
        self._cancel_send_timer()
        if transport.is_closing():
            return
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        guard.closing.add(self)
        if len(guard.closing) > lingering_budget(self.limits.max_connections) or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client is gone already
            transport.abort()
            return
        transport.resume_reading()
        self._read_timer = self.loop.call_later(guard.linger, transport.abort)


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
