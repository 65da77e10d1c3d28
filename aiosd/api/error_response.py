"""The one error writer: an ``AiosdError`` as status, headers and body, for the raw completion routes, the request
guard and Litestar's exception handlers alike; and the one text of an unexpected error's 500."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from aiosd.api.asgi import Headers, Send
from aiosd.errors import AiosdError, AuthenticationFailed, ClientError
from aiosd.service.logs import RateLimitedLog

log = logging.getLogger("aiosd.http")

JSON = b"application/json"

ErrorBody = Callable[[AiosdError], bytes]


# Refused keys are logged rate-limited (anyone who can connect can send thousands): one limiter per
# event loop, that is per aiosd (a test process runs many, each in its own loop).
_refused_auth_logs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RateLimitedLog] = weakref.WeakKeyDictionary()


def log_error(request_id: str, exc: AiosdError) -> None:
    """One line per error answered: INFO for the client's fault, WARNING for the rest; a missing or
    wrong key at most one line per interval (the rest counted in a line of their own)."""
    if isinstance(exc, AuthenticationFailed):
        _refused_auth_log()("request %s: %d %s: %s", request_id, exc.status, exc.code, exc.message,
                            what="requests refused for a missing or wrong API key")
        return
    level = logging.INFO if isinstance(exc, ClientError) else logging.WARNING
    log.log(level, "request %s: %d %s: %s", request_id, exc.status, exc.code, exc.message)


def _refused_auth_log() -> RateLimitedLog:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # called outside a loop (a tool's or a test's direct call): a limiter of its own
        return RateLimitedLog(logging.INFO, logger=log)
    limiter = _refused_auth_logs.get(loop)
    if limiter is None:
        limiter = _refused_auth_logs[loop] = RateLimitedLog(logging.INFO, logger=log)
    return limiter


def internal_error(request_id: str) -> AiosdError:
    """The 500 for a bug in aiosd, logged with its traceback (call it inside the ``except``)."""
    log.exception("request %s: unexpected error; answering 500", request_id)
    return AiosdError(f"internal error in aiosd (request id {request_id}; details in aiosd's log)")


def error_headers(exc: AiosdError) -> Headers:
    """Retry-After, and which kernel calls the request made (X-Aiosd-Attempts, X-Aiosd-Kernels)."""
    headers: Headers = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    if exc.attempts:
        headers.append((b"x-aiosd-attempts", str(exc.attempts).encode()))
    if exc.kernels:  # pool kernel names: from the config, plain ASCII
        headers.append((b"x-aiosd-kernels", ",".join(exc.kernels).encode()))
    return headers


async def send_error(send: Send, exc: AiosdError, body_of: ErrorBody) -> None:
    """Answer ``exc`` on a raw ASGI ``send``, its body written by ``body_of`` (the route's dialect)."""
    await send_response(send, exc.status, [*error_headers(exc), (b"content-type", JSON)], body_of(exc))


async def send_response(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """A whole response in one body message; ``content-length`` is added to ``headers``."""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
