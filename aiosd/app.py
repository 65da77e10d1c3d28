"""The HTTP surface: OpenAI-compatible routes, health and metrics, and errors in OpenAI's shape."""

from __future__ import annotations

import hmac
import logging
import time

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from aiosd import __version__
from aiosd import anthropic_messages as anthropic
from aiosd.chat_request import parse_chat_request
from aiosd.errors import AiosdError, AuthenticationFailed, ClientError
from aiosd.forwarding import complete
from aiosd.metrics import UNKNOWN_MODEL
from aiosd.openapi_docs import ChatCompletionOperation
from aiosd.request_context import ClientDisconnected, cancel_on_disconnect, read_body, request_id_middleware
from aiosd.responses import completion_body, estimate_usage, sse_stream

log = logging.getLogger("aiosd.http")

JSON = "application/json"
_OUTCOME_BY_CODE = {
    "invalid_request": "invalid_request",
    "invalid_api_key": "unauthorized",
    "model_not_found": "unknown_model",
    "request_too_large": "too_large",
    "rate_limit_exceeded": "rate_limited",
    "kernel_timeout": "kernel_timeout",
    "kernel_unreachable": "kernel_unreachable",
    "queue_timeout": "queue_timeout",
}


def build_app(runtime) -> Litestar:
    """The Litestar app serving ``runtime`` (which the daemon swaps configs inside)."""

    def check_auth(request: Request) -> None:
        keys = runtime.config.auth.keys
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        if not presented:  # Anthropic clients send the key as x-api-key
            presented = request.headers.get("x-api-key", "").strip().encode()
        # Compare against every key, always, so timing says nothing about which one nearly matched.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(presented, key.encode())
        if not matched:
            raise AuthenticationFailed(
                "missing or wrong API key: send 'Authorization: Bearer <key>' with one of aiosd's auth.keys"
            )

    async def run_completion(request: Request, parse):
        """Auth, parse with ``parse``, forward; returns (chat, completion, usage, headers) or a 499 Response."""
        started = time.perf_counter()
        request_id = request.scope["state"]["request_id"]
        metrics = runtime.metrics
        try:
            check_auth(request)
            body = await read_body(request.receive, request.headers.get("content-length"),
                                   runtime.config.server.max_body_bytes)
            chat = parse(body)
            completion = await cancel_on_disconnect(request.receive, complete(runtime, chat, request_id))
        except ClientDisconnected:
            metrics.requests.labels(UNKNOWN_MODEL, "client_disconnected").inc()
            log.info("request %s: client disconnected before the answer; its queue place or kernel call was cancelled", request_id)
            return Response(b"", status_code=499)
        except AiosdError as exc:
            model_label = getattr(exc, "model_id", None) or UNKNOWN_MODEL
            metrics.requests.labels(model_label, _OUTCOME_BY_CODE.get(exc.code, "kernel_error")).inc()
            metrics.request_duration.labels(model_label).observe(time.perf_counter() - started)
            raise
        model = completion.model
        reply = completion.reply
        headers = {
            "x-aiosd-attempts": str(completion.attempts),
            "x-aiosd-usage": "estimated",
            "x-aiosd-model": model.id,
        }
        elapsed = time.perf_counter() - started
        metrics.requests.labels(model.id, "ok").inc()
        metrics.request_duration.labels(model.id).observe(elapsed)
        metrics.overhead.observe(max(0.0, elapsed - completion.waiting))
        log.info(
            "request %s: model %s answered in %.2fs (%d attempt%s, finish %s%s)",
            request_id, model.id, elapsed, completion.attempts, "s" if completion.attempts != 1 else "",
            reply.finish_reason, f", {len(reply.tool_calls)} tool call(s)" if reply.tool_calls else "",
        )
        if chat.is_stream:
            headers["cache-control"] = "no-cache"
            headers["x-accel-buffering"] = "no"
        return chat, completion, estimate_usage(completion.call, reply), headers

    @post("/v1/chat/completions", status_code=200, summary="Create a chat completion (OpenAI-compatible)",
          operation_class=ChatCompletionOperation)
    async def chat_completions(request: Request) -> Response:
        outcome = await run_completion(request, parse_chat_request)
        if isinstance(outcome, Response):
            return outcome
        chat, completion, usage, headers = outcome
        model_id, reply = completion.model.id, completion.reply
        completion_id = "chatcmpl-" + request.scope["state"]["request_id"].removeprefix("req_")
        created = int(time.time())
        if chat.is_stream:
            frames = sse_stream(reply, model_id=model_id, completion_id=completion_id, created=created, usage=usage)
            # The kernel answers all at once, so the frames go out as one body: Litestar's Stream
            # runs a sync iterator on a worker thread, one hop per frame (2x the CPU of a plain answer).
            return Response(b"".join(frames), media_type="text/event-stream", headers=headers)
        body = completion_body(reply, model_id=model_id, completion_id=completion_id, created=created, usage=usage)
        return Response(body, media_type=JSON, headers=headers)

    @post("/v1/messages", status_code=200, summary="Create a message (Anthropic Messages dialect)")
    async def messages(request: Request) -> Response:
        try:
            outcome = await run_completion(request, anthropic.parse_messages_request)
        except AiosdError as exc:
            log_error(request, exc)
            return _error_response(exc, body=anthropic.error_body(exc))
        except HTTPException as exc:
            error = _from_http_exception(exc)
            return _error_response(error, body=anthropic.error_body(error))
        if isinstance(outcome, Response):
            return outcome
        chat, completion, usage, headers = outcome
        model_id, reply = completion.model.id, completion.reply
        message_id = "msg_" + request.scope["state"]["request_id"].removeprefix("req_")
        if chat.is_stream:
            events = anthropic.iter_message_events(reply, model_id=model_id, message_id=message_id, usage=usage)
            return Response(b"".join(events), media_type="text/event-stream", headers=headers)  # as above
        body = anthropic.message_body(reply, model_id=model_id, message_id=message_id, usage=usage)
        return Response(body, media_type=JSON, headers=headers)

    @get("/v1/models", summary="List the models aiosd exposes (OpenAI-compatible)")
    async def list_models(request: Request) -> Response:
        check_auth(request)
        created = int(runtime.started_wall)
        data = [{"id": m.id, "object": "model", "created": created, "owned_by": f"aios:{m.source}"}
                for m in runtime.catalog.models()]
        return Response({"object": "list", "data": data}, media_type=JSON)

    @get("/healthz", summary="Liveness: 200 while the event loop answers")
    async def healthz() -> Response:
        return Response({"status": "ok"}, media_type=JSON)

    @get("/readyz", summary="Readiness: 200 when the config is valid and the kernel answered recently")
    async def readyz() -> Response:
        ready, reason = runtime.readiness()
        return Response({"ready": ready, "reason": reason}, status_code=200 if ready else 503, media_type=JSON)

    @get("/status", summary="The daemon's status as JSON (what `aiosd status` shows)")
    async def status(request: Request) -> Response:
        check_auth(request)
        return Response(runtime.status(), media_type=JSON)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain")
    async def metrics_endpoint() -> Response:
        body, content_type = runtime.metrics.render()
        # As a header: media_type="text/..." would get a second "; charset=utf-8" from Litestar.
        return Response(body, headers={"content-type": content_type})

    app = Litestar(
        route_handlers=[chat_completions, messages, list_models, healthz, readyz, status, metrics_endpoint],
        exception_handlers={AiosdError: aiosd_error_response, HTTPException: http_error_response,
                            Exception: unexpected_error_response},
        request_max_body_size=runtime.config.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="aiosd", version=__version__, path="/openapi"),
        debug=False,
        logging_config=None,
    )
    # Litestar runs middleware=[...] only once a route matched; around its ASGI handler, 404s and
    # 405s get an X-Request-Id too.
    app.asgi_handler = request_id_middleware(app.asgi_handler)
    return app


def _error_response(exc: AiosdError, *, body: bytes | None = None) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, int(round(exc.retry_after))))
    attempts = getattr(exc, "attempts", None)
    if attempts:
        headers["x-aiosd-attempts"] = str(attempts)
    return Response(exc.to_body() if body is None else body, status_code=exc.status, media_type=JSON, headers=headers)


def log_error(request: Request, exc: AiosdError) -> None:
    level = logging.INFO if isinstance(exc, ClientError) else logging.WARNING
    log.log(level, "request %s: %d %s: %s", request.scope.get("state", {}).get("request_id", "-"),
            exc.status, exc.code, exc.message)


def aiosd_error_response(request: Request, exc: AiosdError) -> Response:
    log_error(request, exc)
    return _error_response(exc)


_HTTP_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def http_error_response(request: Request, exc: HTTPException) -> Response:
    return _error_response(_from_http_exception(exc))


def _from_http_exception(exc: HTTPException) -> AiosdError:
    status = exc.status_code
    error = AiosdError(str(exc.detail), status=status, code=_HTTP_CODES.get(status, "invalid_request"))
    if status == 413:
        error.message = "request body too large (server.max_body_bytes)"
    error.type = "invalid_request_error" if status < 500 else "server_error"
    return error


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.exception("request %s: unexpected error; answering 500", request_id)
    error = AiosdError(f"internal error in aiosd (request id {request_id}; details in aiosd's log)")
    return _error_response(error)
