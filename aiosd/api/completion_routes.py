"""The two completion routes (/v1/chat/completions, /v1/messages) as raw ASGI apps.

Each does auth, body, forwarding, the answer, errors, metrics and the per-request log line.

Why raw ASGI: these routes carry every agent turn (60 KB bodies), and Litestar's per-request
machinery (signature model, Request and Response objects, its exception middleware) cost as much
CPU as aiosd's own work on them. ``build_app`` answers POSTs to these two paths before Litestar's
router (``completion_dispatch``) and also registers them as Litestar routes that return the same
ASGI apps, so they keep their OpenAPI description and any path variant Litestar matches.

What does not live here: parsing (``chat_request``, ``anthropic_messages``), the kernel trip
(``forwarding``), body encoding (``responses``), the other routes (``app``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiosd.api import anthropic_messages as anthropic
from aiosd.api.asgi import ASGIApp, Headers, Receive, Scope, Send
from aiosd.api.error_response import JSON, internal_error, log_error, send_error, send_response
from aiosd.api.request_context import (
    ClientDisconnected,
    cancel_on_disconnect,
    read_body,
)
from aiosd.api.responses import (
    SseFrames,
    Usage,
    completion_body,
    error_body,
    estimate_usage,
    sse_stream,
)
from aiosd.api.session_header import session_id
from aiosd.errors import AiosdError
from aiosd.service.forwarding import Completion, complete
from aiosd.service.history import Trip
from aiosd.service.metrics import UNKNOWN_MODEL
from aiosd.translate.chat_request import ChatRequest, parse_chat_request
from aiosd.translate.query import KernelCall
from aiosd.translate.reply import Reply

if TYPE_CHECKING:
    from aiosd.service.runtime import Runtime

log = logging.getLogger("aiosd.http")

# Raises AuthenticationFailed for a request without a valid key; else the index of the key presented (None: no auth).
CheckAuth = Callable[[Headers], "int | None"]

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"

# What Litestar sent for text/event-stream; clients and tests see the same bytes as before.
_EVENT_STREAM = b"text/event-stream; charset=utf-8"
_STREAM_HEADERS = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))

OUTCOME_BY_CODE = {
    "invalid_request": "invalid_request",
    "invalid_api_key": "unauthorized",
    "model_not_found": "unknown_model",
    "request_too_large": "too_large",
    "rate_limit_exceeded": "rate_limited",
    "kernel_timeout": "kernel_timeout",
    "kernel_unreachable": "kernel_unreachable",
    "queue_timeout": "queue_timeout",
}


class StreamFrames(Protocol):
    """A stream's frames written piece by piece (``SseFrames``, ``MessageEvents``)."""

    def opening(self) -> bytes: ...
    def text(self, delta: str) -> bytes: ...
    def rest(self, reply: Reply, usage: Usage, *, sent: int = 0) -> Iterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one API shape parses its body and writes its answers; the trip in between is shared."""

    parse: Callable[[bytes], ChatRequest]
    # (chat, completion, usage, request id) -> (body, is an event stream)
    answer: Callable[[ChatRequest, Completion, Usage, str], tuple[bytes, bool]]
    error_body: Callable[[AiosdError], bytes]
    # (the first kernel call, request id) -> the frames of a stream sent before the answer is complete
    frames: Callable[[KernelCall, str], StreamFrames]


def _openai_answer(chat: ChatRequest, completion: Completion, usage: Usage, request_id: str) -> tuple[bytes, bool]:
    completion_id = "chatcmpl-" + request_id.removeprefix("req_")
    model_id, reply, created = completion.model.id, completion.reply, int(time.time())
    if chat.is_stream:
        # The kernel answers all at once, so the frames go out as one body.
        frames = sse_stream(reply, model_id=model_id, completion_id=completion_id, created=created, usage=usage)
        return b"".join(frames), True
    return completion_body(reply, model_id=model_id, completion_id=completion_id, created=created, usage=usage), False


def _anthropic_answer(chat: ChatRequest, completion: Completion, usage: Usage, request_id: str) -> tuple[bytes, bool]:
    message_id = "msg_" + request_id.removeprefix("req_")
    model_id, reply = completion.model.id, completion.reply
    if chat.is_stream:
        events = anthropic.iter_message_events(reply, model_id=model_id, message_id=message_id, usage=usage)
        return b"".join(events), True
    return anthropic.message_body(reply, model_id=model_id, message_id=message_id, usage=usage), False


def _openai_frames(call: KernelCall, request_id: str) -> StreamFrames:
    return SseFrames(model_id=call.model.id, completion_id="chatcmpl-" + request_id.removeprefix("req_"),
                     created=int(time.time()))


def _anthropic_frames(call: KernelCall, request_id: str) -> StreamFrames:
    return anthropic.MessageEvents(model_id=call.model.id, message_id="msg_" + request_id.removeprefix("req_"),
                                   input_tokens=estimate_usage(call, Reply("")).prompt_tokens)


OPENAI = Dialect(parse_chat_request, _openai_answer, error_body, _openai_frames)
ANTHROPIC = Dialect(anthropic.parse_messages_request, _anthropic_answer, anthropic.error_body, _anthropic_frames)


class EarlyStream:
    """A stream whose answer the kernel cut: it starts when the first piece arrives and sends the
    final text of each piece as it comes (``service.continuation``); ``finish`` sends the rest."""

    def __init__(self, send: Send, dialect: Dialect, request_id: str) -> None:
        self._send = send
        self._dialect = dialect
        self._request_id = request_id
        self._frames: StreamFrames | None = None
        self.sent = 0  # characters of the content sent

    @property
    def started(self) -> bool:
        return self._frames is not None

    async def __call__(self, certain: str, call: KernelCall) -> None:
        body = b""
        if self._frames is None:
            self._frames = self._dialect.frames(call, self._request_id)
            # The count of continuations is not known yet: the log line, /metrics and the status page have it.
            headers = [(b"x-aiosd-usage", b"estimated"), (b"x-aiosd-model", call.model.id.encode()),
                       *_STREAM_HEADERS, (b"content-type", _EVENT_STREAM)]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            body = self._frames.opening()
        if len(certain) > self.sent:
            body += self._frames.text(certain[self.sent:])
            self.sent = len(certain)
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def finish(self, reply: Reply, usage: Usage) -> None:
        assert self._frames is not None  # only a started stream is finished
        rest = b"".join(self._frames.rest(reply, usage, sent=self.sent))
        await self._send({"type": "http.response.body", "body": rest, "more_body": False})

    async def abort(self) -> None:
        """End a started stream that cannot be finished (no [DONE], no stop: the client sees it broke)."""
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


def completion_app(runtime: Runtime, dialect: Dialect, check_auth: CheckAuth) -> ASGIApp:
    """The raw ASGI app answering one completion route in ``dialect``'s shape; ``check_auth(headers)``
    raises ``AuthenticationFailed`` for a request without a valid key, else returns the key's index."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id: str = scope["state"]["request_id"]
        trip = runtime.history.begin(request_id)
        early = EarlyStream(send, dialect, request_id)
        try:
            chat, completion = await _complete(runtime, dialect, check_auth, scope["headers"], receive, trip, early)
        except ClientDisconnected:
            _count_failure(runtime, trip, 499, "client_disconnected", None, started)
            log.info("request %s: client disconnected before the answer; its queue place or kernel call was "
                     "cancelled", request_id)
            if not early.started:
                await send_response(send, 499, [], b"")
            return
        except AiosdError as exc:
            _count_failure(runtime, trip, exc.status, OUTCOME_BY_CODE.get(exc.code, "kernel_error"), exc, started)
            log_error(request_id, exc)
            await (early.abort() if early.started else send_error(send, exc, dialect.error_body))
            return
        except Exception:
            error = internal_error(request_id)
            _count_failure(runtime, trip, 500, "internal_error", None, started)
            await (early.abort() if early.started else send_error(send, error, dialect.error_body))
            return
        await _answer(runtime, dialect, send, request_id, chat, completion, trip, started, early)

    return serve


async def _complete(runtime: Runtime, dialect: Dialect, check_auth: CheckAuth, headers: Headers, receive: Receive,
                    trip: Trip, early: EarlyStream) -> tuple[ChatRequest, Completion]:
    """Auth, the body, parsing and the kernel trip: everything that may fail with an error to answer."""
    key_index = check_auth(headers)
    session = session_id(headers)
    trip.key = runtime.config.auth.client_at(key_index).name
    content_length = None
    for name, value in headers:
        if name == b"content-length":
            content_length = value.decode("latin-1")
            break
    body = await read_body(receive, content_length, runtime.config.server.max_body_bytes)
    chat = dialect.parse(body)
    del body  # 60 KB less held while the kernel answers
    trip.model = chat.model
    completion = await cancel_on_disconnect(receive, complete(
        runtime, chat, trip.request_id, key_index=key_index, headers=headers, trip=trip, session_id=session,
        sink=early if chat.is_stream else None))
    return chat, completion


def _count_failure(runtime: Runtime, trip: Trip, status: int, outcome: str, exc: AiosdError | None,
                   started: float) -> None:
    """Metrics and the status page's record of a request that got no answer from a model.

    Only an ``AiosdError`` says which model it was for, and only then is its duration observed."""
    elapsed = time.perf_counter() - started
    model_id = exc.model_id if exc is not None else None
    runtime.metrics.requests_child(model_id or UNKNOWN_MODEL, outcome).inc()
    runtime.history.finish(trip, status=status, outcome=outcome, model=model_id, total=elapsed)
    if exc is not None:
        runtime.metrics.request_duration_child(model_id or UNKNOWN_MODEL).observe(elapsed)


async def _answer(runtime: Runtime, dialect: Dialect, send: Send, request_id: str, chat: ChatRequest,
                  completion: Completion, trip: Trip, started: float, early: EarlyStream) -> None:
    """Count, log and send a model's answer."""
    model, reply = completion.model, completion.reply
    elapsed = time.perf_counter() - started
    metrics = runtime.metrics
    metrics.requests_child(model.id, "ok").inc()
    metrics.request_duration_child(model.id).observe(elapsed)
    metrics.overhead.observe(max(0.0, elapsed - completion.waiting))
    kernels = ",".join(completion.kernels)
    runtime.history.finish(trip, status=200, outcome="ok", model=model.id, total=elapsed)
    log.info(
        "request %s: model %s answered in %.2fs (%d attempt%s on %s, finish %s%s%s)",
        request_id, model.id, elapsed, completion.attempts, "s" if completion.attempts != 1 else "",
        kernels or "-", reply.finish_reason, f", {len(reply.tool_calls)} tool call(s)" if reply.tool_calls else "",
        f", session {completion.session}" if completion.session else "",
    )
    usage = estimate_usage(completion.call, reply)
    if early.started:
        await early.finish(reply, usage)
        return
    body, is_stream = dialect.answer(chat, completion, usage, request_id)
    headers = [
        (b"x-aiosd-attempts", str(completion.attempts).encode()),
        (b"x-aiosd-usage", b"estimated"),
        (b"x-aiosd-model", model.id.encode()),
        (b"x-aiosd-kernels", kernels.encode()),
    ]
    if completion.continuations:
        headers.append((b"x-aiosd-continuations", str(completion.continuations).encode()))
        if completion.stopped:
            headers.append((b"x-aiosd-continuation-stopped", completion.stopped.encode()))
    if is_stream:
        headers.extend(_STREAM_HEADERS)
        headers.append((b"content-type", _EVENT_STREAM))
    else:
        headers.append((b"content-type", JSON))
    await send_response(send, 200, headers, body)


def completion_dispatch(routes: dict[str, ASGIApp], fallback: ASGIApp) -> ASGIApp:
    """ASGI: POSTs to a path in ``routes`` go straight to its app, everything else to ``fallback`` (Litestar)."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = routes.get(scope["path"])
            if route is not None:
                return await route(scope, receive, send)
        return await fallback(scope, receive, send)

    return dispatch
