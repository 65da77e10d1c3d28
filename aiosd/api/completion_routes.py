"""The two completion routes (/v1/chat/completions, /v1/messages) as raw ASGI apps: auth, body, forwarding, the answer, errors, metrics and the per-request log line.

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
from collections.abc import Callable
from dataclasses import dataclass

from aiosd.api import anthropic_messages as anthropic
from aiosd.api.request_context import (
    ClientDisconnected,
    cancel_on_disconnect,
    read_body,
)
from aiosd.api.responses import (
    Usage,
    completion_body,
    error_body,
    estimate_usage,
    sse_stream,
)
from aiosd.errors import AiosdError, ClientError
from aiosd.service.forwarding import Completion, complete
from aiosd.service.metrics import UNKNOWN_MODEL
from aiosd.translate.chat_request import ChatRequest, parse_chat_request

log = logging.getLogger("aiosd.http")

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"

_JSON = b"application/json"
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


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one API shape parses its body and writes its answers; the trip in between is shared."""

    parse: Callable[[bytes], ChatRequest]
    # (chat, completion, usage, request id) -> (body, is an event stream)
    answer: Callable[[ChatRequest, Completion, Usage, str], tuple[bytes, bool]]
    error_body: Callable[[AiosdError], bytes]


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


OPENAI = Dialect(parse_chat_request, _openai_answer, error_body)
ANTHROPIC = Dialect(anthropic.parse_messages_request, _anthropic_answer, anthropic.error_body)


def log_error(request_id: str, exc: AiosdError) -> None:
    level = logging.INFO if isinstance(exc, ClientError) else logging.WARNING
    log.log(level, "request %s: %d %s: %s", request_id, exc.status, exc.code, exc.message)


def error_headers(exc: AiosdError) -> list[tuple[bytes, bytes]]:
    headers = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, int(round(exc.retry_after)))).encode()))
    attempts = getattr(exc, "attempts", None)
    if attempts:
        headers.append((b"x-aiosd-attempts", str(attempts).encode()))
    kernels = getattr(exc, "kernels", None)
    if kernels:  # pool kernel names: from the config, plain ASCII
        headers.append((b"x-aiosd-kernels", ",".join(kernels).encode()))
    return headers


async def _send(send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def completion_app(runtime, dialect: Dialect, check_auth: Callable[[list], int | None]):
    """The raw ASGI app answering one completion route in ``dialect``'s shape; ``check_auth(headers)``
    raises ``AuthenticationFailed`` for a request without a valid key, else returns the key's index."""

    async def serve(scope, receive, send) -> None:
        started = time.perf_counter()
        request_id = scope["state"]["request_id"]
        metrics = runtime.metrics
        history = runtime.history
        trip = history.begin(request_id)
        try:
            headers = scope["headers"]
            key_index = check_auth(headers)
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
                runtime, chat, request_id, key_index=key_index, headers=headers, trip=trip))
        except ClientDisconnected:
            metrics.requests_child(UNKNOWN_MODEL, "client_disconnected").inc()
            history.finish(trip, status=499, outcome="client_disconnected", total=time.perf_counter() - started)
            log.info("request %s: client disconnected before the answer; its queue place or kernel call was cancelled", request_id)
            await _send(send, 499, [], b"")
            return
        except AiosdError as exc:
            model_label = getattr(exc, "model_id", None) or UNKNOWN_MODEL
            metrics.requests_child(model_label, OUTCOME_BY_CODE.get(exc.code, "kernel_error")).inc()
            history.finish(trip, status=exc.status, outcome=OUTCOME_BY_CODE.get(exc.code, "kernel_error"),
                           model=getattr(exc, "model_id", None), total=time.perf_counter() - started)
            metrics.request_duration_child(model_label).observe(time.perf_counter() - started)
            log_error(request_id, exc)
            await _send(send, exc.status, [*error_headers(exc), (b"content-type", _JSON)], dialect.error_body(exc))
            return
        except Exception:
            log.exception("request %s: unexpected error; answering 500", request_id)
            metrics.requests_child(UNKNOWN_MODEL, "internal_error").inc()
            history.finish(trip, status=500, outcome="internal_error", total=time.perf_counter() - started)
            error = AiosdError(f"internal error in aiosd (request id {request_id}; details in aiosd's log)")
            await _send(send, 500, [(b"content-type", _JSON)], dialect.error_body(error))
            return
        model, reply = completion.model, completion.reply
        elapsed = time.perf_counter() - started
        metrics.requests_child(model.id, "ok").inc()
        metrics.request_duration_child(model.id).observe(elapsed)
        metrics.overhead.observe(max(0.0, elapsed - completion.waiting))
        kernels = ",".join(completion.kernels)
        history.finish(trip, status=200, outcome="ok", model=model.id, total=elapsed)
        log.info(
            "request %s: model %s answered in %.2fs (%d attempt%s on %s, finish %s%s)",
            request_id, model.id, elapsed, completion.attempts, "s" if completion.attempts != 1 else "",
            kernels or "-", reply.finish_reason, f", {len(reply.tool_calls)} tool call(s)" if reply.tool_calls else "",
        )
        body, is_stream = dialect.answer(chat, completion, estimate_usage(completion.call, reply), request_id)
        headers = [
            (b"x-aiosd-attempts", str(completion.attempts).encode()),
            (b"x-aiosd-usage", b"estimated"),
            (b"x-aiosd-model", model.id.encode()),
            (b"x-aiosd-kernels", kernels.encode()),
        ]
        if is_stream:
            headers.extend(_STREAM_HEADERS)
            headers.append((b"content-type", _EVENT_STREAM))
        else:
            headers.append((b"content-type", _JSON))
        await _send(send, 200, headers, body)

    return serve


def completion_dispatch(routes: dict[str, object], fallback):
    """ASGI: POSTs to a path in ``routes`` go straight to its app, everything else to ``fallback`` (Litestar)."""

    async def dispatch(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            route = routes.get(scope["path"])
            if route is not None:
                return await route(scope, receive, send)
        return await fallback(scope, receive, send)

    return dispatch
