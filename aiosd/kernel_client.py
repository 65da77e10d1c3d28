"""The HTTP client for the AIOS kernel: sends a ready /query body, returns its ``response`` or raises a KernelError.

What lives here: the one long-lived connection pool to the kernel, the mapping of every way the
kernel can fail (HTTP errors, errors buried inside HTTP 200, hangs, garbage) onto ``aiosd.errors``,
the model list from ``/core/llms/list`` (stripped of the kernel's secrets), and the liveness
figures readiness uses (last meaningful answer, recent latencies).

What does not: building the /query body or reading ``response_message``/``tool_calls``
(``translate``), retries (``retry``), the concurrency cap (``admission``).

Status mapping of errors the kernel reports inside HTTP 200 (``response.status_code``), as the
client sees it:

====================  ===========  =========================================================
kernel status_code    client gets  why
====================  ===========  =========================================================
429                   429          the LLM's rate limit; Retry-After is kept if the kernel sent one
408                   504          the LLM was too slow for the kernel
400                   400          the LLM rejected the *content* (context too long, an image the
                                   model cannot take, ...). aiosd validated the shape, so what is
                                   left is the client's content; a 4xx also stops OpenAI SDKs from
                                   re-sending a request that fails the same way every time.
401, 403, 404         502          the kernel's LLM credentials or model config are wrong
503                   503          the kernel cannot reach its LLM (or misread the content)
other 5xx / other     502          the kernel or its LLM failed
====================  ===========  =========================================================

HTTP-level answers: 422 (the kernel could not parse aiosd's body: an aiosd bug) -> 502;
500 ``{"detail"}`` -> 502; 429 -> 429; 503 -> 503; 504 -> 504; anything else -> 502.
``kernel_status`` always carries the kernel's own number (the HTTP status, or the status_code
inside 200), 0 for "no usable HTTP answer" (unreachable, and a 200 that is not a /query answer:
whatever answered is not a working kernel, so it is retried exactly when 0 is in
``retry.on_status``), and None for aiosd's own deadline (never retried: a hung kernel call holds
a kernel worker for good, and a retry would take another one).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, CookiePolicy
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from . import __version__
from .config import KernelSettings
from .errors import (
    KernelBadAnswer,
    KernelError,
    KernelRateLimited,
    KernelRejected,
    KernelTimeout,
    KernelUnreachable,
)

if TYPE_CHECKING:
    # Imported where used: the aiohttp-only daemon is ~4 MB smaller without httpx (and the CLI
    # libraries httpx imports when they are installed).
    import httpx

log = logging.getLogger("aiosd.kernel")

TransportChoice = Literal["aiohttp", "httpx", "httpx-aiohttp"]
TRANSPORT_CHOICES: tuple[str, ...] = ("aiohttp", "httpx", "httpx-aiohttp")

QUERY_PATH = "/query"
LLM_LIST_PATH = "/core/llms/list"
# Connections beyond max_concurrency: the model-list refresh and the canary must not wait
# behind a full set of /query calls.
EXTRA_CONNECTIONS = 4
LATENCY_WINDOW = 64
# Idle connections are dropped before uvicorn's default keep-alive (5 s) closes them under us: a
# POST on a connection the kernel just closed fails with no answer, and is not retried by default.
KEEPALIVE = 4.0
LIST_TIMEOUT = 10.0
MESSAGE_LIMIT = 300

USER_AGENT = f"aiosd/{__version__}"
_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_ACCEPT_JSON = {"accept": "application/json"}


class _RejectAllCookies(CookiePolicy):
    """A cookie policy that neither stores nor sends cookies: the kernel has no sessions."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie, request) -> bool:  # noqa: ANN001 - CookiePolicy's signature
        return False

    def return_ok(self, cookie, request) -> bool:  # noqa: ANN001
        return False

    def domain_return_ok(self, domain, request) -> bool:  # noqa: ANN001
        return False

    def path_return_ok(self, path, request) -> bool:  # noqa: ANN001
        return False


def _dumps(body: Any) -> bytes:
    # Compact UTF-8 JSON in one pass; msgspec does it ~6x faster than json for OpenClaw's 60 KB bodies.
    return msgspec.json.encode(body)


# Things that look like credentials in the kernel's error sentences (litellm likes to quote them).
_SECRET = re.compile(
    r"sk-[A-Za-z0-9_\-]{6,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/]+=*"
    r"|(?i:api[_-]?key)[\"']?\s*[=:]\s*[\"']?[^\s\"',}]+"
    r"|\b[A-Za-z0-9_\-]{40,}\b"
)


def scrub(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """The kernel's text made safe for a client: one line, credentials redacted, bounded length."""
    line = " ".join(str(text).split())
    line = _SECRET.sub("[redacted]", line)
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def summarize_validation_detail(detail: object) -> str:
    """One sentence out of FastAPI's 422 ``detail`` list (one entry per query type the kernel tried).

    Only ``loc`` and ``msg`` are used: ``input`` echoes the request, i.e. the prompt.
    """
    if isinstance(detail, str):
        return scrub(detail, 200)
    if not isinstance(detail, list) or not detail:
        return "no detail given"
    first = detail[0] if isinstance(detail[0], dict) else {}
    loc = first.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list) else "?"
    msg = scrub(first.get("msg") or "invalid", 120)
    more = len(detail) - 1
    suffix = f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""
    return f"{where}: {msg}{suffix}"


def _kernel_error_for_status(
    code: int, sentence: str | None, *, retry_after: float | None, inside_200: bool
) -> KernelError:
    """The client-facing error for a status the kernel reported (inside 200 or as HTTP status)."""
    where = f"status_code {code} inside HTTP 200" if inside_200 else f"HTTP {code}"
    said = f": {scrub(sentence)}" if sentence else ""
    if code == 429:
        return KernelRateLimited(
            f"The LLM behind the AIOS kernel is rate limited ({where}){said}",
            kernel_status=code,
            retry_after=retry_after,
        )
    if code == 408:
        return KernelRejected(
            f"The LLM behind the AIOS kernel took too long to answer ({where}){said}",
            kernel_status=code,
            status=504,
            code="llm_timeout",
            retry_after=retry_after,
        )
    if code == 400 and inside_200:
        err = KernelRejected(
            f"The LLM behind the AIOS kernel rejected the request ({where}){said.rstrip('.')}. "
            "Usual causes: the conversation exceeds the model's context window, or it contains "
            "content the model does not accept (images for a text-only model).",
            kernel_status=code,
            status=400,
            code="llm_rejected_request",
        )
        err.type = "invalid_request_error"
        return err
    if code in (401, 403, 404) and inside_200:
        return KernelRejected(
            f"The AIOS kernel's LLM refused it ({where}){said}. The kernel's LLM credentials or "
            "model configuration are wrong; fix the kernel's config.",
            kernel_status=code,
            code="kernel_llm_misconfigured",
        )
    if code == 503:
        return KernelRejected(
            f"The AIOS kernel cannot reach its LLM right now ({where}){said}",
            kernel_status=code,
            status=503,
            code="kernel_llm_unavailable",
            retry_after=retry_after,
        )
    if code == 504:
        return KernelRejected(
            f"The AIOS kernel (or a proxy in front of it) timed out ({where}){said}",
            kernel_status=code,
            status=504,
            code="kernel_timeout",
            retry_after=retry_after,
        )
    if code == 500 and sentence and "not all available" in sentence:
        return KernelRejected(
            f"The AIOS kernel does not have the requested model ({where}){said}. "
            "Check models.map against the kernel's LLM config.",
            kernel_status=code,
            code="kernel_model_unavailable",
        )
    return KernelRejected(
        f"The AIOS kernel failed ({where}){said}",
        kernel_status=code,
        retry_after=retry_after,
    )


def _http_error(answer: _Answer, retry_after: float | None) -> KernelError:
    """The error for a non-200 HTTP answer from the kernel."""
    code = answer.status
    try:
        data = json.loads(answer.body) if answer.body else None
    except ValueError:
        data = None
    detail = data.get("detail") if isinstance(data, dict) else None
    if code == 422:
        return KernelRejected(
            "The AIOS kernel could not parse the /query body aiosd sent (HTTP 422, "
            f"{summarize_validation_detail(detail)}). This kernel version expects a different "
            "request shape; please report it to aiosd.",
            kernel_status=code,
            code="kernel_rejected_body",
        )
    if code == 500 and isinstance(detail, str):
        hint = ""
        if detail.strip("'\"") == "provider":
            # Seen after anyone called POST /user/select/llms: every later /query fails this way.
            hint = " The kernel is stuck after an LLM selection (POST /user/select/llms); restart it."
        return KernelRejected(
            f"The AIOS kernel failed while handling the request (HTTP 500: {scrub(detail, 200)}).{hint}",
            kernel_status=code,
        )
    if code in (429, 503, 504):
        return _kernel_error_for_status(code, None, retry_after=retry_after, inside_200=False)
    if code in (404, 405):
        return KernelRejected(
            f"The server at kernel.url answered HTTP {code} for {answer.path}: "
            "it does not look like an AIOS kernel (check kernel.url).",
            kernel_status=code,
            code="kernel_wrong_url",
        )
    sentence = detail if isinstance(detail, str) else None
    return _kernel_error_for_status(code, sentence, retry_after=retry_after, inside_200=False)


# --- wires: the HTTP libraries behind KernelClient ---------------------------------------------------
#
# A wire sends one request and hands back status, Retry-After and body bytes, nothing else (so
# no kernel header can travel further), or raises _NoAnswer. Two exist because httpx costs about
# 0.6 ms of CPU per call on a small machine and aiohttp about 0.15 ms, against a budget of 1 ms
# for everything aiosd adds; httpx stays for its MockTransport and injected transports.


class _Answer:
    __slots__ = ("status", "retry_after", "body", "path")

    def __init__(self, status: int, retry_after: str | None, body: bytes, path: str) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.path = path


class _NoAnswer(Exception):
    """No usable HTTP answer; ``why`` is a short human reason."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Wire:
    """One connection pool; replaced pools are closed once their calls have finished."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.retired = False

    async def request(self, method: str, path: str, content: bytes | None) -> _Answer:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class _HttpxWire(_Wire):
    def __init__(
        self, settings: KernelSettings, transport: httpx.AsyncBaseTransport | None, *, owns_transport: bool
    ) -> None:
        import httpx

        super().__init__()
        size = settings.max_concurrency + EXTRA_CONNECTIONS
        self.owns_transport = owns_transport
        self.connect_timeout = settings.connect_timeout
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
            headers={"user-agent": USER_AGENT},
        )

    async def request(self, method: str, path: str, content: bytes | None) -> _Answer:
        import httpx

        try:
            response = await self.client.request(
                method, path, content=content, headers=_JSON_HEADERS if content is not None else _ACCEPT_JSON
            )
        except httpx.ConnectTimeout:
            raise _NoAnswer(f"no connection within {self.connect_timeout:g}s") from None
        except httpx.ConnectError:
            raise _NoAnswer("connection refused or host not found") from None
        except httpx.RemoteProtocolError:
            raise _NoAnswer("the answer was not valid HTTP or the connection was cut") from None
        except (httpx.ReadError, httpx.WriteError):
            raise _NoAnswer("the connection was reset") from None
        except (httpx.HTTPError, OSError) as exc:
            raise _NoAnswer(type(exc).__name__) from None
        except Exception as exc:
            # httpx_aiohttp lets some aiohttp errors (e.g. a bad status line) through unmapped.
            if type(exc).__module__.startswith("aiohttp"):
                raise _NoAnswer("the answer was not valid HTTP or the connection was cut") from None
            raise
        return _Answer(response.status_code, response.headers.get("retry-after"), response.content, path)

    async def aclose(self) -> None:
        if self.owns_transport:
            await self.client.aclose()


class _AiohttpWire(_Wire):
    def __init__(self, settings: KernelSettings) -> None:
        super().__init__()
        import aiohttp

        self._aiohttp = aiohttp
        self.base = settings.url.rstrip("/")
        self.connect_timeout = settings.connect_timeout
        self.size = settings.max_concurrency + EXTRA_CONNECTIONS
        self._session: aiohttp.ClientSession | None = None
        # The whole call is bounded by asyncio.timeout in KernelClient; aiohttp only bounds connecting.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout)

    def _session_now(self):  # noqa: ANN202 - aiohttp is imported lazily
        # Built on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.size, keepalive_timeout=KEEPALIVE),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"user-agent": USER_AGENT},
                auto_decompress=True,
            )
        return self._session

    async def request(self, method: str, path: str, content: bytes | None) -> _Answer:
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
                body = await response.read()
                return _Answer(response.status, response.headers.get("retry-after"), body, path)
        except aiohttp.ServerTimeoutError:  # a TimeoutError subclass: must not look like our deadline
            raise _NoAnswer(f"no connection within {self.connect_timeout:g}s") from None
        except aiohttp.ClientConnectorError:
            raise _NoAnswer("connection refused or host not found") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
            raise _NoAnswer("the connection was reset") from None
        except aiohttp.ClientResponseError:
            raise _NoAnswer("the answer was not valid HTTP") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _NoAnswer(type(exc).__name__) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _httpx_aiohttp_transport(settings: KernelSettings) -> httpx.AsyncBaseTransport:
    """httpx_aiohttp's transport with a cookie-less, proxy-less aiohttp session (for comparisons)."""
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    size = settings.max_concurrency + EXTRA_CONNECTIONS

    def make_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=size, keepalive_timeout=KEEPALIVE)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)

    return AiohttpTransport(trust_env=False, client=make_session)


def _is_httpx_transport(value: object) -> bool:
    import httpx

    return isinstance(value, httpx.AsyncBaseTransport)


def _aiohttp_available() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Recent /query durations in seconds (calls that got an HTTP answer)."""

    count: int
    p50: float | None
    p90: float | None
    max: float | None
    last: float | None


class KernelClient:
    """The one long-lived connection pool to the AIOS kernel.

    ``transport``:

    - None: ``"aiohttp"`` when aiohttp is installed, else ``"httpx"``;
    - ``"aiohttp"``: aiohttp directly (the fast path; see the wires above);
    - ``"httpx"``: httpx with its own pool;
    - ``"httpx-aiohttp"``: httpx over ``httpx_aiohttp.AiohttpTransport`` (kept for comparisons);
    - any ``httpx.AsyncBaseTransport`` (tests: ``httpx.MockTransport``), closed by ``close()``.

    Nothing of the kernel's answers leaves this class but the decoded ``response`` object and
    the errors built here: no headers (the kernel reflects CORS with credentials), no cookies.
    """

    def __init__(
        self,
        settings: KernelSettings,
        *,
        transport: httpx.AsyncBaseTransport | TransportChoice | None = None,
        latency_window: int = LATENCY_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if transport is None:
            transport = "aiohttp" if _aiohttp_available() else "httpx"
        if not (transport in TRANSPORT_CHOICES if isinstance(transport, str) else _is_httpx_transport(transport)):
            raise ValueError(f"transport must be one of {', '.join(TRANSPORT_CHOICES)} or an httpx transport, got {transport!r}")
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._wire = self._build_wire(settings)
        self._retired: list[_Wire] = []
        self._closing: set[asyncio.Task] = set()  # strong references until the close finishes
        self._latencies: deque[float] = deque(maxlen=latency_window)
        # Monotonic times (on ``clock``); None until it happens.
        self.last_success_at: float | None = None
        self.last_query_answer_at: float | None = None
        # The latest call that got no meaningful answer (readiness: a failure newer than the last
        # answer means the kernel is down now, without waiting for ready_window to run out).
        self.last_failure_at: float | None = None
        self.last_failure: str | None = None
        self._closed = False

    @property
    def transport_name(self) -> str:
        return self._transport if isinstance(self._transport, str) else type(self._transport).__name__

    # --- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> KernelSettings:
        return self._settings

    def apply_settings(self, settings: KernelSettings) -> None:
        """Take a reloaded kernel section. A new url, connect timeout or pool size gets a new
        connection pool; calls in flight finish on the old one, which is closed once idle."""
        old = self._settings
        self._settings = settings
        if (old.url, old.connect_timeout, old.max_concurrency) == (
            settings.url,
            settings.connect_timeout,
            settings.max_concurrency,
        ):
            return
        previous = self._wire
        self._wire = self._build_wire(settings)
        previous.retired = True
        if previous.in_flight == 0:
            self._close_soon(previous)
        else:
            self._retired.append(previous)

    def _build_wire(self, settings: KernelSettings) -> _Wire:
        choice = self._transport
        if choice == "aiohttp":
            return _AiohttpWire(settings)
        if choice == "httpx":
            return _HttpxWire(settings, None, owns_transport=True)
        if choice == "httpx-aiohttp":
            return _HttpxWire(settings, _httpx_aiohttp_transport(settings), owns_transport=True)
        # Injected (tests, benchmarks): shared by every pool, closed only by close().
        return _HttpxWire(settings, choice, owns_transport=False)

    # --- liveness figures ------------------------------------------------------------------

    def recent_latencies(self) -> tuple[float, ...]:
        """Durations of the last /query calls that got an HTTP answer, oldest first."""
        return tuple(self._latencies)

    def latency_summary(self) -> LatencySummary:
        values = sorted(self._latencies)
        if not values:
            return LatencySummary(0, None, None, None, None)

        def pct(p: float) -> float:
            return values[min(len(values) - 1, int(p * len(values)))]

        return LatencySummary(len(values), pct(0.5), pct(0.9), values[-1], self._latencies[-1])

    def recent_latency(self) -> dict | None:
        """``latency_summary()`` as JSON for status output (seconds, ms precision); None if empty."""
        summary = self.latency_summary()
        if not summary.count:
            return None
        return {
            "count": summary.count,
            "p50": round(summary.p50, 3),
            "p90": round(summary.p90, 3),
            "max": round(summary.max, 3),
            "last": round(summary.last, 3),
        }

    def answered_within(self, window: float) -> bool:
        """True when the kernel gave a meaningful answer in the last ``window`` seconds."""
        return self.last_success_at is not None and self._clock() - self.last_success_at <= window

    # --- calls -------------------------------------------------------------------------------

    async def query(self, body: dict | bytes, *, timeout: float) -> dict:
        """POST /query; the kernel's ``response`` object when its ``status_code`` is 200.

        ``body`` is the /query body (a dict, serialised once here, or bytes already serialised).
        ``timeout`` is aiosd's deadline for this one call in seconds (connecting included).
        Raises a ``KernelError`` subclass (see the module docstring for the mapping).
        """
        content = body if isinstance(body, bytes) else _dumps(body)
        started = self._clock()
        answer = await self._send("POST", QUERY_PATH, content, timeout)
        self._latencies.append(self._clock() - started)
        retry_after = parse_retry_after(answer.retry_after)
        if answer.status != 200:
            raise self._failed(_http_error(answer, retry_after))
        try:
            data = json.loads(answer.body)
        except ValueError:
            raise self._bad_answer("its body is not JSON") from None
        inner = data.get("response") if isinstance(data, dict) else None
        if not isinstance(inner, dict):
            raise self._bad_answer("it has no 'response' object")
        code = inner.get("status_code", 200)
        if type(code) is not int:
            raise self._bad_answer("its response.status_code is not a number")
        # An answer from the scheduler, success or not: the kernel works.
        now = self._clock()
        self.last_success_at = now
        self.last_query_answer_at = now
        if code == 200:
            return inner
        error = inner.get("error")
        raise _kernel_error_for_status(
            code, error if isinstance(error, str) else None, retry_after=retry_after, inside_200=True
        )

    async def list_llms(self, *, timeout: float = LIST_TIMEOUT) -> list[dict]:
        """GET /core/llms/list as ``[{"name": str, "backend": str | None}, ...]``.

        Only ``name`` and ``backend`` survive: the kernel's entries carry ``hostname`` and
        per-model ``api_key``. Raises ``KernelRejected`` (code ``kernel_not_ready``, 503) while the
        kernel's LLM core is not initialised, so a caller keeps its last good list.
        """
        answer = await self._send("GET", LLM_LIST_PATH, None, timeout)
        if answer.status != 200:
            raise self._failed(_http_error(answer, parse_retry_after(answer.retry_after)))
        try:
            data = json.loads(answer.body)
        except ValueError:
            raise self._bad_answer("its model list is not JSON", path=LLM_LIST_PATH) from None
        if not isinstance(data, dict):
            raise self._bad_answer("its model list is not an object", path=LLM_LIST_PATH)
        status = data.get("status")
        if status != "success":
            message = data.get("message")
            said = f": {scrub(message, 120)}" if isinstance(message, str) else ""
            raise self._failed(KernelRejected(
                f"The AIOS kernel is not ready to list its models (status {scrub(status, 40)}{said})",
                status=503,
                code="kernel_not_ready",
            ))
        llms = data.get("llms")
        if not isinstance(llms, list):
            raise self._bad_answer("its model list has no 'llms' array", path=LLM_LIST_PATH)
        models: list[dict] = []
        for entry in llms:
            if not isinstance(entry, dict):
                continue
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                continue
            backend = entry.get("backend")
            models.append({"name": name, "backend": backend if isinstance(backend, str) else None})
        self.last_success_at = self._clock()
        return models

    async def close(self) -> None:
        """Close every connection (and an injected transport)."""
        if self._closed:
            return
        self._closed = True
        wires = [*self._retired, self._wire]
        self._retired.clear()
        for wire in wires:
            await wire.aclose()
        if not isinstance(self._transport, str):  # an injected httpx transport
            await self._transport.aclose()

    async def __aenter__(self) -> KernelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- helpers -----------------------------------------------------------------------------

    async def _send(self, method: str, path: str, content: bytes | None, timeout: float) -> _Answer:
        wire = self._wire
        wire.in_flight += 1
        try:
            async with asyncio.timeout(timeout):
                return await wire.request(method, path, content)
        except TimeoutError:
            what = "answer" if path == QUERY_PATH else "list its models"
            raise self._failed(KernelTimeout(
                f"The AIOS kernel did not {what} within {timeout:g}s (aiosd's deadline for one call). "
                "The kernel can hang; check its log.",
                kernel_status=None,
            )) from None
        except _NoAnswer as exc:
            raise self._failed(KernelUnreachable(
                f"The AIOS kernel at {self._settings.url} is unreachable ({exc.why})", kernel_status=0
            )) from None
        finally:
            wire.in_flight -= 1
            if wire.retired and wire.in_flight == 0 and wire in self._retired:
                self._retired.remove(wire)
                self._close_soon(wire)

    def _close_soon(self, wire: _Wire) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(wire.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        task.add_done_callback(_log_close_failure)

    def _bad_answer(self, what: str, *, path: str = QUERY_PATH) -> KernelBadAnswer:
        return self._failed(KernelBadAnswer(
            f"The server at {self._settings.url} answered {path} with HTTP 200 but {what}; "
            "is kernel.url an AIOS kernel?",
            kernel_status=0,
        ))

    def _failed(self, error: KernelError) -> KernelError:
        """Remember a call that got no meaningful answer (for readiness); returns ``error``."""
        self.last_failure_at = self._clock()
        self.last_failure = error.message
        return error


def _log_close_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a replaced kernel connection pool failed: %s", task.exception())
