"""The lean wire: HTTP/1.1 to an http:// kernel over asyncio's own sockets, answers parsed by httptools.

What does not live here: what the kernel's answers mean (``client``), and the words and bounds
shared by every wire (``wires``: this wire enforces the same ones and says the same things).

Why it exists: per /query call aiohttp's client machinery costs ~200 us of CPU (request and
response objects, multidicts, URL handling, its stream reader), this wire ~45 us for the same
call (bench/RESULTS.md, round 6). It covers the common case only: a plain ``http://`` kernel URL
with no user:password, query or non-ASCII host (``LeanWire.serves``); ``client`` gives any other
URL to aiohttp. Everything else is as the other wires do it: keep-alive connections, at most
``max_concurrency + EXTRA_CONNECTIONS`` of them, idle ones dropped after ``KEEPALIVE`` s; the
connect timeout; ``Accept-Encoding: identity`` and a compressed answer refused; the body capped at
``limit`` bytes (on Content-Length before reading, and while reading); a head larger than
``MAX_HEAD_BYTES`` is not HTTP; a cancelled or refused call closes its connection.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import deque
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

from aiosd.config.settings import KernelSettings
from aiosd.kernel.wires import (
    CLOSED_WITHOUT_ANSWER,
    CONNECTION_RESET,
    CUT_MID_ANSWER,
    EXTRA_CONNECTIONS,
    KEEPALIVE,
    NOT_HTTP,
    USER_AGENT,
    Answer,
    NoAnswer,
    RefusedAnswer,
    Wire,
    _check_head,
    _content_length,
    _too_large,
    connect_failure,
)

# aiohttp refuses a status line or header over 8 KiB; a whole head over this is not a kernel.
MAX_HEAD_BYTES = 64 * 1024
# The longest aclose waits for its sockets to be closed.
CLOSE_WAIT = 1.0
# Characters left as they are in the configured URL's path (the rest is percent-encoded).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the kernel, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.gone = asyncio.get_running_loop().create_future()  # done once the socket is closed
        self.idle_since = 0.0
        self.exchanges = 0  # answers read on this connection (more than 0: a kept-alive one)
        self._answer: asyncio.Future[Answer] | None = None
        self._path = ""
        self._limit = 0
        self._reset_answer()

    def _reset_answer(self) -> None:
        self.head_read = False
        self.complete = False  # the answer read whole, and whether the connection may carry another
        self.keep_alive = False
        self._head_bytes = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._content_length: str | None = None
        self._content_encoding: str | None = None
        self._retry_after: str | None = None
        self._chunked = False

    # --- one exchange --------------------------------------------------------------------------

    def send(self, head: bytes, content: bytes | None, path: str, limit: int) -> asyncio.Future[Answer]:
        """Write one request; the future gets its answer, or NoAnswer / RefusedAnswer."""
        assert self.transport is not None
        self._reset_answer()
        self._path = path
        self._limit = limit
        self._answer = asyncio.get_running_loop().create_future()
        if content:
            self.transport.writelines((head, content))
        else:
            self.transport.write(head)
        return self._answer

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, answer: Answer | None = None, failure: Exception | None = None) -> None:
        future, self._answer = self._answer, None
        if failure is not None:
            self.close()  # a refused or broken answer's connection is never reused
        if future is None or future.done():
            return
        if failure is not None:
            future.set_exception(failure)
        elif answer is not None:
            future.set_result(answer)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast, not a check).
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # bytes nobody asked for: this connection's state is unknown
            self.close()
            return
        if not self.head_read:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            failure = exc.__context__
            self._finish(failure=failure if isinstance(failure, (RefusedAnswer, NoAnswer)) else NoAnswer(NOT_HTTP))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._finish(failure=NoAnswer(NOT_HTTP))
            return
        if not self.head_read and self._head_bytes > MAX_HEAD_BYTES:
            self._finish(failure=NoAnswer(NOT_HTTP))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.gone.done():
            self.gone.set_result(None)
        if self._answer is None:
            return
        if self.head_read and self._content_length is None and not self._chunked:
            # An answer delimited by closing the connection: complete now.
            self._finish(Answer(self._status(), self._retry_after, b"".join(self._chunks), self._path))
            return
        reset = isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
        if reset:
            self._finish(failure=NoAnswer(CONNECTION_RESET))
        else:
            self._finish(failure=NoAnswer(CUT_MID_ANSWER if self.head_read else CLOSED_WITHOUT_ANSWER))

    # --- httptools callbacks (an exception raised here ends the answer) -----------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request
            raise NoAnswer(NOT_HTTP)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._content_length = value.decode("latin-1")
        elif name == b"content-encoding":
            self._content_encoding = value.decode("latin-1")
        elif name == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif name == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        self.head_read = True
        _check_head(self._content_encoding, _content_length(self._content_length), self._limit)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limit:
            raise _too_large(self._limit)
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only here: httptools resets it afterwards
        self._finish(Answer(self._status(), self._retry_after, b"".join(self._chunks), self._path))

    def _status(self) -> int:
        status: int = self.parser.get_status_code()
        return status


class LeanWire(Wire):
    """Keep-alive connections to one ``http://`` kernel, each carrying one call at a time."""

    @staticmethod
    def serves(url: str) -> bool:
        """Whether this wire can talk to ``url``: plain http, no credentials, query or non-ASCII host."""
        parts = urlsplit(url)
        return (parts.scheme.lower() == "http" and parts.hostname is not None and "@" not in parts.netloc
                and parts.netloc.isascii() and not parts.query and not parts.fragment)

    def __init__(self, settings: KernelSettings) -> None:
        super().__init__()
        parts = urlsplit(settings.url)
        self.host = parts.hostname or "?"  # serves() checked there is one
        self.port = parts.port or 80
        self.connect_timeout = settings.connect_timeout
        self.size = settings.max_concurrency + EXTRA_CONNECTIONS
        self._base = quote(parts.path.rstrip("/"), safe=_PATH_SAFE)
        self._netloc = parts.netloc
        self._heads: dict[tuple[str, str], bytes] = {}
        self._idle: list[_Connection] = []  # most recently used last
        self._open: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, path: str, content: bytes | None, limit: int) -> Answer:
        connection = await self._acquire()
        reused = connection.exchanges > 0
        try:
            return await self._exchange(connection, method, path, content, limit)
        except NoAnswer as exc:
            # A kept-alive connection the kernel closed while it sat idle (its keep-alive timeout, or a
            # restart) fails before a byte of answer: that says nothing of the kernel now, so the call
            # goes once more on a new connection. A fresh connection's failure is the kernel's.
            if not reused or exc.why != CLOSED_WITHOUT_ANSWER:
                raise
        return await self._exchange(await self._connect(), method, path, content, limit)

    async def _exchange(self, connection: _Connection, method: str, path: str, content: bytes | None,
                        limit: int) -> Answer:
        """One request on ``connection``, which goes back to the pool if it may carry another."""
        try:
            answer = await connection.send(self._head(method, path, content), content, path, limit)
        except BaseException:  # refused, broken, or cancelled by the caller's deadline: never reused
            connection.close()
            self._release(connection)
            raise
        connection.exchanges += 1
        self._release(connection)
        return answer

    def _head(self, method: str, path: str, content: bytes | None) -> bytes:
        prefix = self._heads.get((method, path))
        if prefix is None:
            typed = "content-type: application/json\r\n" if content is not None else ""
            prefix = (f"{method} {self._base}{quote(path, safe=_PATH_SAFE)} HTTP/1.1\r\nhost: {self._netloc}\r\n"
                      f"user-agent: {USER_AGENT}\r\naccept-encoding: identity\r\naccept: application/json\r\n"
                      f"{typed}").encode("ascii")
            self._heads[(method, path)] = prefix
        if content is None:
            return prefix + b"\r\n"
        return b"%scontent-length: %d\r\n\r\n" % (prefix, len(content))

    # --- the pool ---------------------------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise NoAnswer("the connection pool was closed (aiosd is stopping)")
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and now - connection.idle_since < KEEPALIVE:
                return connection
            self._drop(connection)
        if len(self._open) + self._opening >= self.size:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # A connection or a free place was handed over as we were cancelled: pass it on.
                    handed_over = waiter.result()
                    if handed_over is not None:
                        self._release(handed_over)
                    else:
                        self._wake()
                raise
            if handed is not None:
                return handed
        return await self._connect()

    async def _connect(self) -> _Connection:
        self._opening += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, connection = await asyncio.get_running_loop().create_connection(
                    _Connection, self.host, self.port)
        except TimeoutError:
            raise NoAnswer(f"no connection within {self.connect_timeout:g}s, kernel.connect_timeout",
                           connecting=True) from None
        except OSError as exc:
            raise connect_failure(exc, self.host, self.connect_timeout) from None
        finally:
            self._opening -= 1
        # uvloop may run connection_made after create_connection returns; the transport is known now.
        connection.transport = transport
        if self._closed:
            connection.close()
            raise NoAnswer("the connection pool was closed (aiosd is stopping)")
        self._open.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        """A call is done with ``connection``: to the next waiter, back to the idle list, or closed."""
        reusable = not connection.lost and not self._closed and connection.complete and connection.keep_alive
        if not reusable:
            self._drop(connection)
            self._wake()
            return
        connection.idle_since = time.monotonic()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(KEEPALIVE, self._drop_expired)

    def _wake(self) -> None:
        """A place in the pool came free: the first waiter opens a connection."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _drop_expired(self) -> None:
        self._sweep = None
        now = time.monotonic()
        kept = [c for c in self._idle if not c.lost and now - c.idle_since < KEEPALIVE]
        for connection in self._idle:
            if connection not in kept:
                self._drop(connection)
        self._idle = kept
        if kept:
            wait = KEEPALIVE - (now - kept[0].idle_since)
            self._sweep = asyncio.get_running_loop().call_later(max(wait, 0.05), self._drop_expired)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        closing = list(self._open)
        for connection in closing:
            self._drop(connection)
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(NoAnswer("the connection pool was closed (aiosd is stopping)"))
        if closing:  # the sockets are closed on the loop's next turn: gone when aiosd's close returns
            await asyncio.wait([connection.gone for connection in closing], timeout=CLOSE_WAIT)
