"""The HTTP libraries behind ``KernelClient``: wires that send one request and hand back its answer or ``NoAnswer``.

What does not live here: deadlines, which path means what, reading the kernel's JSON, and turning
answers into errors (``client`` and ``kernel.errors``).

A wire sends one request and hands back status, Retry-After and body bytes, nothing else (so no
kernel header can travel further), or raises ``NoAnswer`` (nothing usable came back) or
``RefusedAnswer`` (an answer aiosd will not read: larger than ``kernel.max_answer_bytes``, or
compressed). Bodies are read with that cap, checked against Content-Length before reading and
while reading, and asked for uncompressed (``Accept-Encoding: identity``): a 1 MB gzip body can
inflate to gigabytes, so no wire ever decompresses. Two exist because httpx costs about
0.6 ms of CPU per call on a small machine and aiohttp about 0.15 ms, against a budget of 1 ms for
everything aiosd adds; httpx stays for its MockTransport and injected transports. A third,
``lean_wire.LeanWire`` (~0.05 ms per call), is the default for plain http:// kernels. httpx and aiohttp are
imported where used: the aiohttp-only daemon is ~4 MB smaller without httpx (and the CLI
libraries httpx imports when they are installed).
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.cookiejar import Cookie, CookieJar, CookiePolicy
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiosd import __version__
from aiosd.config.settings import KernelSettings

if TYPE_CHECKING:
    import aiohttp
    import httpx

# Connections beyond max_concurrency: the model-list refresh and the canary must not wait
# behind a full set of /query calls.
EXTRA_CONNECTIONS = 4
# Idle connections are dropped before uvicorn's default keep-alive (5 s) closes them under us: a
# POST on a connection the kernel just closed fails with no answer, and is not retried by default.
KEEPALIVE = 4.0

USER_AGENT = f"aiosd/{__version__}"
# The libraries' own default asks for gzip (and br/zstd when installed) and inflates it unbounded.
_DEFAULT_HEADERS = {"user-agent": USER_AGENT, "accept-encoding": "identity"}
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_ACCEPT_JSON = {"accept": "application/json"}


class _RejectAllCookies(CookiePolicy):
    """A cookie policy that neither stores nor sends cookies: the kernel has no sessions."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: urllib.request.Request) -> bool:
        return False

    def path_return_ok(self, path: str, request: urllib.request.Request) -> bool:
        return False


class Answer:
    __slots__ = ("body", "path", "retry_after", "status")

    def __init__(self, status: int, retry_after: str | None, body: bytes, path: str) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.path = path


class NoAnswer(Exception):
    """No usable HTTP answer; ``why`` is a short human reason ("connection refused"), and
    ``connecting`` whether it happened before a connection was made (the kernel is unreachable)."""

    def __init__(self, why: str, *, connecting: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.connecting = connecting


# --- what went wrong, in words: the same for both libraries --------------------------------------

CONNECTION_REFUSED = "connection refused"
CONNECTION_RESET = "connection reset by the kernel"
CLOSED_WITHOUT_ANSWER = "the kernel closed the connection without answering"
CUT_MID_ANSWER = "the connection closed in the middle of the answer"
NOT_HTTP = "the answer was not valid HTTP"


def _os_errors(exc: BaseException) -> Iterator[OSError]:
    """The OSErrors behind ``exc`` (its causes and contexts), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            yield current
        current = current.__cause__ or current.__context__


def connect_failure(exc: BaseException, host: str, connect_timeout: float) -> NoAnswer:
    """Why no connection could be made, from the OSError the library wrapped."""
    errors = list(_os_errors(exc))
    for error in errors:
        if isinstance(error, socket.gaierror):
            said = error.strerror or str(error)
            return NoAnswer(f"host name {host!r} not found (DNS: {said})", connecting=True)
    for error in errors:
        if error.errno == errno.ECONNREFUSED:
            return NoAnswer(CONNECTION_REFUSED, connecting=True)
        if error.errno in (errno.ETIMEDOUT, errno.EINPROGRESS) or isinstance(error, TimeoutError):
            return NoAnswer(f"no connection within {connect_timeout:g}s, kernel.connect_timeout", connecting=True)
        if error.errno is not None and error.errno > 0:
            return NoAnswer(f"cannot connect: {os.strerror(error.errno).lower()}", connecting=True)
    return NoAnswer("cannot connect", connecting=True)


def broken_connection(exc: BaseException) -> NoAnswer:
    """Why a connection that was made gave no usable answer."""
    for error in _os_errors(exc):
        if error.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return NoAnswer(CONNECTION_RESET)
    return NoAnswer(CUT_MID_ANSWER)


class RefusedAnswer(Exception):
    """An HTTP answer aiosd would not read to the end; ``why`` says what it was ("an answer
    larger than ..."). Its connection is closed, never reused."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _too_large(limit: int) -> RefusedAnswer:
    return RefusedAnswer(f"an answer larger than {limit} bytes (kernel.max_answer_bytes)")


async def _read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A body of unknown length, read as it comes and refused once it passes ``limit`` bytes."""
    kept: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        kept.append(chunk)
    return b"".join(kept)


def _check_head(content_encoding: str | None, content_length: int | None, limit: int) -> None:
    """Refuse an answer on its headers alone: compressed although aiosd asked for identity, or
    announcing more than ``limit`` bytes."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        shown = content_encoding.strip()[:40].encode("ascii", "backslashreplace").decode()
        raise RefusedAnswer(f"a compressed answer (Content-Encoding: {shown}) although aiosd asked for none")
    if content_length is not None and content_length > limit:
        raise _too_large(limit)


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the HTTP library refuses a malformed one itself


class Wire:
    """One connection pool; replaced pools are closed once their calls have finished."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.retired = False

    async def request(self, method: str, path: str, content: bytes | None, limit: int) -> Answer:
        """Send one request; its answer with a body of at most ``limit`` bytes."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


# httpx raises one RemoteProtocolError for a connection closed before or during the answer and for
# bytes that are not HTTP; only its message tells them apart. These are httpcore's and h11's own
# words (httpcore/_async/http11.py, h11/_readers.py), read once here, and only for the reason's words:
# whichever branch is taken the call is KernelUnreachable with kernel_status 0, retried and counted
# for health the same. Which phase failed comes from our own code (was the head read?), so a
# changed message can at worst make a closed connection read as "not valid HTTP".
# tests/kernel/test_client.py checks the installed libraries still say these words.
HTTPCORE_CLOSED_BEFORE_HEAD = "Server disconnected without sending a response"
H11_CLOSED_MID_BODY = "peer closed connection without sending complete message body"


def protocol_failure(said: str, *, head_read: bool) -> str:
    """The reason for an httpx ``RemoteProtocolError`` with message ``said``: closed before the
    answer (only before the head), cut mid-answer (only after it), or not HTTP."""
    if not head_read and said.startswith(HTTPCORE_CLOSED_BEFORE_HEAD):
        return CLOSED_WITHOUT_ANSWER
    if head_read and said.startswith(H11_CLOSED_MID_BODY):
        return CUT_MID_ANSWER
    return NOT_HTTP


class HttpxWire(Wire):
    def __init__(
        self, settings: KernelSettings, transport: httpx.AsyncBaseTransport | None, *, owns_transport: bool
    ) -> None:
        import httpx

        super().__init__()
        size = settings.max_concurrency + EXTRA_CONNECTIONS
        self.owns_transport = owns_transport
        self.connect_timeout = settings.connect_timeout
        self.host = urlsplit(settings.url).hostname or "?"  # for "host name ... not found"
        self.client = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            transport=transport,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=KEEPALIVE),
            # The whole call is bounded by asyncio.timeout in KernelClient; httpx only bounds connecting.
            timeout=httpx.Timeout(None, connect=settings.connect_timeout),
            cookies=CookieJar(policy=_RejectAllCookies()),
            follow_redirects=False,
            # A daemon talking to its kernel must not be re-routed by someone's HTTP_PROXY.
            trust_env=False,
            headers=_DEFAULT_HEADERS,
        )

    async def request(self, method: str, path: str, content: bytes | None, limit: int) -> Answer:
        import httpx

        request = self.client.build_request(
            method, path, content=content, headers=_JSON_HEADERS if content is not None else _ACCEPT_JSON
        )
        head_read = False  # whether the status line and headers came: which words a failure gets
        try:
            response = await self.client.send(request, stream=True)
            head_read = True
            try:
                body = await self._read(response, limit)
            finally:
                # Unread body left: httpcore closes the connection instead of pooling it.
                await response.aclose()
        except httpx.ConnectTimeout:
            raise NoAnswer(f"no connection within {self.connect_timeout:g}s, kernel.connect_timeout",
                           connecting=True) from None
        except httpx.ConnectError as exc:
            raise connect_failure(exc, self.host, self.connect_timeout) from None
        except httpx.RemoteProtocolError as exc:
            raise NoAnswer(protocol_failure(str(exc), head_read=head_read)) from None
        except (httpx.HTTPError, OSError) as exc:
            raise broken_connection(exc) from None
        return Answer(response.status_code, response.headers.get("retry-after"), body, path)

    @staticmethod
    async def _read(response: httpx.Response, limit: int) -> bytes:
        headers = response.headers
        declared = _content_length(headers.get("content-length"))
        _check_head(headers.get("content-encoding"), declared, limit)
        if declared is not None:  # h11 reads exactly that many bytes: bounded, and the fast path
            return await response.aread()
        # Content-Encoding was refused above, so httpx's decoder here is the identity (aiter_raw
        # would refuse a MockTransport's already-loaded body).
        return await _read_capped(response.aiter_bytes(), limit)

    async def aclose(self) -> None:
        if self.owns_transport:
            await self.client.aclose()


class AiohttpWire(Wire):
    def __init__(self, settings: KernelSettings) -> None:
        super().__init__()
        import aiohttp

        self._aiohttp = aiohttp
        self.base = settings.url.rstrip("/")
        self.connect_timeout = settings.connect_timeout
        self.host = urlsplit(settings.url).hostname or "?"  # for "host name ... not found"
        self.size = settings.max_concurrency + EXTRA_CONNECTIONS
        self._session: aiohttp.ClientSession | None = None
        # The whole call is bounded by asyncio.timeout in KernelClient; aiohttp only bounds connecting.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout)

    def _session_now(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.size, keepalive_timeout=KEEPALIVE),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers=_DEFAULT_HEADERS,
                auto_decompress=False,
            )
        return self._session

    async def request(self, method: str, path: str, content: bytes | None, limit: int) -> Answer:
        aiohttp = self._aiohttp
        try:
            async with self._session_now().request(
                method,
                self.base + path,
                data=content,
                headers=_JSON_HEADERS if content is not None else _ACCEPT_JSON,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                try:
                    body = await self._read(response, limit)
                except RefusedAnswer:
                    response.close()  # drops the connection: the rest of the body is never read
                    raise
                return Answer(response.status, response.headers.get("retry-after"), body, path)
        except aiohttp.ServerTimeoutError:  # a TimeoutError subclass: must not look like our deadline
            raise NoAnswer(f"no connection within {self.connect_timeout:g}s, kernel.connect_timeout",
                           connecting=True) from None
        except aiohttp.ClientConnectorError as exc:
            dns_error = getattr(aiohttp, "ClientConnectorDNSError", ())  # aiohttp >= 3.10
            is_dns_error = isinstance(exc, dns_error)
            if is_dns_error:
                said = exc.os_error.strerror or str(exc.os_error)
                raise NoAnswer(f"host name {self.host!r} not found (DNS: {said})", connecting=True) from None
            raise connect_failure(exc.os_error, self.host, self.connect_timeout) from None
        except aiohttp.ServerDisconnectedError:
            raise NoAnswer(CLOSED_WITHOUT_ANSWER) from None
        except aiohttp.ClientPayloadError as exc:
            raise broken_connection(exc) from None
        except aiohttp.ClientResponseError:
            raise NoAnswer(NOT_HTTP) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise broken_connection(exc) from None

    @staticmethod
    async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
        declared = response.content_length
        _check_head(response.headers.get("content-encoding"), declared, limit)
        if declared is not None:  # aiohttp reads exactly that many bytes: bounded, and the fast path
            return bytes(await response.read())
        return await _read_capped(response.content.iter_any(), limit)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def is_httpx_transport(value: object) -> bool:
    import httpx

    return isinstance(value, httpx.AsyncBaseTransport)


def aiohttp_available() -> bool:
    try:
        importlib.import_module("aiohttp")
    except ImportError:
        return False
    return True
