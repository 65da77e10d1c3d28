"""The HTTP surface: OpenAI-compatible routes, health and metrics, and errors in OpenAI's shape."""

from __future__ import annotations

import hmac
import logging

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp

from aiosd import __version__
from aiosd.api import completion_routes
from aiosd.api.completion_routes import log_error
from aiosd.api.dashboard import dashboard_router
from aiosd.api.openapi_docs import ChatCompletionOperation
from aiosd.api.anthropic_messages import error_body as anthropic_error_body
from aiosd.api.request_context import request_id_middleware
from aiosd.api.request_guard import GuardSettings, guard_settings, request_guard
from aiosd.api.responses import error_body as openai_error_body
from aiosd.errors import AiosdError, AuthenticationFailed

log = logging.getLogger("aiosd.http")

JSON = "application/json"


def build_app(runtime) -> Litestar:
    """The Litestar app serving ``runtime`` (which the daemon swaps configs inside)."""

    def check_headers(headers) -> int | None:
        return check_auth(runtime.config.auth.keys, headers)

    def check_request(request: Request) -> None:
        check_auth(runtime.config.auth.keys, request.scope["headers"])

    chat_app = completion_routes.completion_app(runtime, completion_routes.OPENAI, check_headers)
    messages_app = completion_routes.completion_app(runtime, completion_routes.ANTHROPIC, check_headers)

    # POSTs to these exact paths never reach these two handlers: completion_dispatch (below) hands
    # them to the same ASGI apps before Litestar's router. They give the routes their OpenAPI
    # description and serve any path variant Litestar matches (a trailing slash).
    @post(completion_routes.CHAT_PATH, status_code=200, summary="Create a chat completion (OpenAI-compatible)",
          operation_class=ChatCompletionOperation)
    async def chat_completions() -> ASGIApp:
        return chat_app

    @post(completion_routes.MESSAGES_PATH, status_code=200, summary="Create a message (Anthropic Messages dialect)")
    async def messages() -> ASGIApp:
        return messages_app

    @get("/v1/models", summary="List the models aiosd exposes (OpenAI-compatible)")
    async def list_models(request: Request) -> Response:
        check_request(request)
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
        check_request(request)
        return Response(runtime.status(), media_type=JSON)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain")
    async def metrics_endpoint() -> Response:
        body, content_type = runtime.metrics.render()
        # As a header: media_type="text/..." would get a second "; charset=utf-8" from Litestar.
        return Response(body, headers={"content-type": content_type})

    app = Litestar(
        route_handlers=[chat_completions, messages, list_models, healthz, readyz, status, metrics_endpoint,
                        *dashboard_router(runtime, check_request)],
        exception_handlers={AiosdError: aiosd_error_response, HTTPException: http_error_response,
                            Exception: unexpected_error_response},
        request_max_body_size=runtime.config.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="aiosd", version=__version__, path="/openapi"),
        debug=False,
        logging_config=None,
    )
    # Litestar runs middleware=[...] only once a route matched; around its ASGI handler, 404s and
    # 405s get an X-Request-Id too.
    routes = {completion_routes.CHAT_PATH: chat_app, completion_routes.MESSAGES_PATH: messages_app}
    guarded = request_guard(completion_routes.completion_dispatch(routes, app.asgi_handler),
                            _guard_settings_of(runtime), _error_body_for_path)
    app.asgi_handler = request_id_middleware(guarded)
    return app


def _guard_settings_of(runtime):
    """The request guard's settings for the generation serving now, built once per generation."""
    cached: list = [None, None]  # (config, settings)

    def settings() -> GuardSettings:
        config = runtime.config
        if cached[0] is not config:
            cached[1] = guard_settings(runtime.bound_host, config.server.allowed_hosts, config.server.allowed_origins)
            cached[0] = config
        return cached[1]

    return settings


def _error_body_for_path(path: str, error: AiosdError) -> bytes:
    if path.rstrip("/") == completion_routes.MESSAGES_PATH:
        return anthropic_error_body(error)
    return openai_error_body(error)


def check_auth(keys, headers) -> int | None:
    """``AuthenticationFailed`` unless ``headers`` (ASGI pairs) carry one of ``keys`` (none: no auth).
    Returns the index of the key presented (None when auth is off), for the scheduler."""
    if not keys:
        return None
    authorization = api_key = b""
    for name, value in headers:  # the first of each, as Litestar's Headers.get gives
        if name == b"authorization" and not authorization:
            authorization = value
        elif name == b"x-api-key" and not api_key:
            api_key = value
    scheme, _, token = authorization.partition(b" ")
    presented = token.strip() if scheme.lower() == b"bearer" else b""
    if not presented:  # Anthropic clients send the key as x-api-key
        presented = api_key.strip()
    # Compare against every key, always, so timing says nothing about which one nearly matched.
    matched = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(presented, key.encode()) and matched is None:
            matched = index
    if matched is None:
        raise AuthenticationFailed(
            "missing or wrong API key: send 'Authorization: Bearer <key>' with one of aiosd's auth.keys"
        )
    return matched


def _error_response(exc: AiosdError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, int(round(exc.retry_after))))
    attempts = getattr(exc, "attempts", None)
    if attempts:
        headers["x-aiosd-attempts"] = str(attempts)
    kernels = getattr(exc, "kernels", None)
    if kernels:
        headers["x-aiosd-kernels"] = ",".join(kernels)
    return Response(exc.to_body(), status_code=exc.status, media_type=JSON, headers=headers)


def aiosd_error_response(request: Request, exc: AiosdError) -> Response:
    log_error(request.scope.get("state", {}).get("request_id", "-"), exc)
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
