"""``KernelClient``, the HTTP client for the AIOS kernel: a ready /query body in, its ``response`` or a KernelError out.

What lives here: the one long-lived connection pool to the kernel (``KernelClient``), aiosd's
deadline for each call, reading the kernel's /query answer and model list (the latter from
``/core/llms/list``, stripped of the kernel's secrets), and the liveness figures readiness uses
(last meaningful answer, recent latencies: ``LatencySummary``).

What does not: the HTTP libraries themselves (``wires``), which error each kernel failure
becomes (``kernel.errors``), building the /query body or reading ``response_message``/``tool_calls``
(``translate``), retries (``retry``), the queue and the concurrency caps (``scheduler``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import msgspec

from aiosd.config.settings import KernelSettings
from aiosd.errors import (
    KernelBadAnswer,
    KernelError,
    KernelRejected,
    KernelTimeout,
    KernelUnreachable,
)
from aiosd.kernel.answer_json import UnreadableJSON, loads_answer
from aiosd.kernel.errors import (
    kernel_error_for_http_answer,
    kernel_error_for_status,
    parse_retry_after,
    scrub,
)
from aiosd.kernel.lean_wire import LeanWire
from aiosd.kernel.wires import (
    AiohttpWire,
    Answer,
    HttpxWire,
    NoAnswer,
    RefusedAnswer,
    Wire,
    aiohttp_available,
    is_httpx_transport,
)

if TYPE_CHECKING:
    # Imported where used: the aiohttp-only daemon is ~4 MB smaller without httpx (and the CLI
    # libraries httpx imports when they are installed).
    import httpx

log = logging.getLogger("aiosd.kernel")

TransportChoice = Literal["lean", "aiohttp", "httpx"]
TRANSPORT_CHOICES: tuple[str, ...] = ("lean", "aiohttp", "httpx")
# What ``KernelClient(transport=...)`` takes: a library by name, or an httpx transport (tests, benchmarks).
Transport: TypeAlias = "httpx.AsyncBaseTransport | TransportChoice"

_Error = TypeVar("_Error", bound=KernelError)

QUERY_PATH = "/query"
LLM_LIST_PATH = "/core/llms/list"
LATENCY_WINDOW = 64
LIST_TIMEOUT = 10.0


def scrub_name(name: str, limit: int = 60) -> str:
    """A kernel's model name as a log line may show it: escaped (repr), at most ``limit`` characters."""
    return repr(name if len(name) <= limit else name[:limit] + "…")


def _dumps(body: Any) -> bytes:
    # Compact UTF-8 JSON in one pass; msgspec does it ~6x faster than json for OpenClaw's 60 KB bodies.
    return msgspec.json.encode(body)


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

    - None: ``"lean"`` when aiohttp is installed, else ``"httpx"``;
    - ``"lean"``: asyncio sockets and httptools (the fast path, ``lean_wire``) for a plain http://
      kernel URL, aiohttp for any other;
    - ``"aiohttp"``: aiohttp directly (see ``wires``);
    - ``"httpx"``: httpx with its own pool;
    - any ``httpx.AsyncBaseTransport`` (tests: ``httpx.MockTransport``), closed by ``close()``.

    Nothing of the kernel's answers leaves this class but the decoded ``response`` object and
    the errors built here: no headers (the kernel reflects CORS with credentials), no cookies.
    """

    def __init__(
        self,
        settings: KernelSettings,
        *,
        transport: Transport | None = None,
        latency_window: int = LATENCY_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if transport is None:
            transport = "lean" if aiohttp_available() else "httpx"
        if not (transport in TRANSPORT_CHOICES if isinstance(transport, str) else is_httpx_transport(transport)):
            raise ValueError(
                f"transport must be one of {', '.join(TRANSPORT_CHOICES)} or an httpx transport, got {transport!r}")
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._wire = self._build_wire(settings)
        self._retired: list[Wire] = []
        self._closing: set[asyncio.Task[None]] = set()  # strong references until the close finishes
        self._latencies: deque[float] = deque(maxlen=latency_window)
        # Monotonic times (on ``clock``); None until it happens.
        self.last_success_at: float | None = None
        self.last_query_answer_at: float | None = None
        # The latest call that got no meaningful answer (readiness: a failure newer than the last
        # answer means the kernel is down now, without waiting for ready_window to run out).
        self.last_failure_at: float | None = None
        self.last_failure: str | None = None
        # Entries of its last model list beyond kernel.max_models (said once per change).
        self.models_dropped = 0
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

    def _build_wire(self, settings: KernelSettings) -> Wire:
        choice = self._transport
        if choice == "lean" and LeanWire.serves(settings.url):
            return LeanWire(settings)
        if choice == "lean" or choice == "aiohttp":  # lean: any URL but plain http://
            return AiohttpWire(settings)
        if choice == "httpx":
            return HttpxWire(settings, None, owns_transport=True)
        # Injected (tests, benchmarks): shared by every pool, closed only by close().
        return HttpxWire(settings, choice, owns_transport=False)

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

    def recent_latency(self) -> dict[str, float] | None:
        """``latency_summary()`` as JSON for status output (seconds, ms precision); None if empty."""
        summary = self.latency_summary()
        if not summary.count:
            return None
        figures = {"p50": summary.p50, "p90": summary.p90, "max": summary.max, "last": summary.last}
        # A summary with a count has every figure.
        return {"count": summary.count, **{name: round(value or 0.0, 3) for name, value in figures.items()}}

    def answered_within(self, window: float) -> bool:
        """True when the kernel gave a meaningful answer in the last ``window`` seconds."""
        return self.last_success_at is not None and self._clock() - self.last_success_at <= window

    # --- calls -------------------------------------------------------------------------------

    async def query(self, body: dict | bytes, *, timeout: float) -> dict:
        """POST /query; the kernel's ``response`` object when its ``status_code`` is 200.

        ``body`` is the /query body (a dict, serialised once here, or bytes already serialised).
        ``timeout`` is aiosd's deadline for this one call in seconds (connecting included).
        Raises a ``KernelError`` subclass (``kernel.errors`` has the mapping).
        """
        content = body if isinstance(body, bytes) else _dumps(body)
        started = self._clock()
        answer = await self._send("POST", QUERY_PATH, content, timeout)
        self._latencies.append(self._clock() - started)
        retry_after = parse_retry_after(answer.retry_after)
        if answer.status != 200:
            raise self._failed(kernel_error_for_http_answer(
                answer.status, answer.body, answer.path, retry_after=retry_after
            ))
        try:
            data = loads_answer(answer.body)
        except UnreadableJSON as exc:
            raise self._bad_answer(f"its body {exc.why}") from None
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
        raise kernel_error_for_status(
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
            retry_after = parse_retry_after(answer.retry_after)
            raise self._failed(kernel_error_for_http_answer(
                answer.status, answer.body, answer.path, retry_after=retry_after
            ))
        try:
            data = loads_answer(answer.body)
        except UnreadableJSON as exc:
            raise self._bad_answer(f"its model list {exc.why}", path=LLM_LIST_PATH) from None
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
                reason="the kernel's LLM core is not ready",
            ))
        llms = data.get("llms")
        if not isinstance(llms, list):
            raise self._bad_answer("its model list has no 'llms' array", path=LLM_LIST_PATH)
        backends: dict[str, str | None] = {}
        for entry in llms:
            if not isinstance(entry, dict):
                continue
            name = entry.get("name")
            if not isinstance(name, str) or not name or name in backends:
                continue
            backend = entry.get("backend")
            backends[name] = backend if isinstance(backend, str) else None
        if len(backends) > self._settings.max_models:  # the first by name, in the kernel's order
            names = sorted(backends)
            self._report_dropped(names)
            kept = set(names[: self._settings.max_models])
            backends = {name: backend for name, backend in backends.items() if name in kept}
        else:
            self._report_dropped(list(backends))
        self.last_success_at = self._clock()
        return [{"name": name, "backend": backend} for name, backend in backends.items()]

    def _report_dropped(self, names: list[str]) -> None:
        """One warning when the kernel lists more than ``kernel.max_models`` (again only when the
        count dropped changes): how many, and the first and last name dropped, each bounded.
        ``names`` is sorted when any are dropped."""
        limit = self._settings.max_models
        dropped = max(0, len(names) - limit)
        if dropped == self.models_dropped:
            return
        self.models_dropped = dropped
        if dropped:
            log.warning(
                "kernel %s lists %d models; aiosd takes the first %d by name (kernel.max_models) and drops %d, "
                "from %s to %s", self._settings.name, len(names), limit, dropped, scrub_name(names[limit]),
                scrub_name(names[-1]))
        else:
            log.info("kernel %s lists %d models now, within kernel.max_models (%d)", self._settings.name,
                     len(names), limit)

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

    async def _send(self, method: str, path: str, content: bytes | None, timeout: float) -> Answer:
        wire = self._wire
        wire.in_flight += 1
        try:
            async with asyncio.timeout(timeout):
                return await wire.request(method, path, content, self._settings.max_answer_bytes)
        except TimeoutError:
            what = "answer" if path == QUERY_PATH else "list its models"
            raise self._failed(KernelTimeout(
                f"The AIOS kernel did not {what} within {timeout:g}s (aiosd's deadline for one call). "
                "The kernel can hang; check its log.",
                kernel_status=None,
                reason=f"no answer within {timeout:g}s",
            )) from None
        except NoAnswer as exc:
            state = "is unreachable" if exc.connecting else f"gave no usable answer to {path}"
            raise self._failed(KernelUnreachable(
                f"The AIOS kernel at {self._settings.shown_url} {state} ({exc.why})", kernel_status=0, reason=exc.why
            )) from None
        except RefusedAnswer as exc:
            raise self._failed(KernelBadAnswer(
                f"The server at {self._settings.shown_url} sent {exc.why} to {path}; aiosd refused it "
                "unread and closed the connection",
                kernel_status=0,
                reason=exc.why,
            )) from None
        finally:
            wire.in_flight -= 1
            if wire.retired and wire.in_flight == 0 and wire in self._retired:
                self._retired.remove(wire)
                self._close_soon(wire)

    def _close_soon(self, wire: Wire) -> None:
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
            f"The server at {self._settings.shown_url} answered {path} with HTTP 200 but {what}; "
            "is kernel.url an AIOS kernel?",
            kernel_status=0,
            reason=f"HTTP 200 but {what}",
        ))

    def _failed(self, error: _Error) -> _Error:
        """Remember a call that got no meaningful answer (for readiness); returns ``error``."""
        self.last_failure_at = self._clock()
        self.last_failure = error.message
        return error


def _log_close_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a replaced kernel connection pool failed: %s", task.exception())
