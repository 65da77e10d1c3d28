"""The HTTP surface: OpenAI-compatible routes, health and metrics, and errors in OpenAI's shape."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, cast

from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp as LitestarASGIApp

from aiosd import __version__
from aiosd.api import completion_routes
from aiosd.api.anthropic_messages import error_body as anthropic_error_body
from aiosd.api.asgi import ASGIApp, Message, Receive, Scope, Send
from aiosd.api.dashboard import dashboard_router
from aiosd.api.error_response import error_headers, internal_error, log_error
from aiosd.api.openapi_docs import ChatCompletionOperation, MessagesOperation, OpenAPIJson
from aiosd.api.request_context import request_id_middleware
from aiosd.api.request_guard import GuardSettings, guard_settings, is_loopback_client, request_guard
from aiosd.api.responses import error_body as openai_error_body
from aiosd.errors import AiosdError, AuthenticationFailed

if TYPE_CHECKING:
    from aiosd.config.settings import Config
    from aiosd.service.runtime import Runtime

log = logging.getLogger("aiosd.http")

JSON = "application/json"


def build_app(runtime: Runtime) -> ASGIApp:
    """The ASGI app serving ``runtime`` (which the daemon swaps configs inside).

    Litestar serves every route but the two completion POSTs; in front of it, plain ASGI wrappers
    that must see every request (404s and 405s included, which Litestar's ``middleware=[...]`` never
    sees): the request id, the Host/Origin/Content-Type guard, and the dispatch of the completion
    POSTs to their raw apps."""

    def check_headers(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
        return check_auth(runtime.config.auth.keys, headers)

    chat_app = completion_routes.completion_app(runtime, completion_routes.OPENAI, check_headers)
    messages_app = completion_routes.completion_app(runtime, completion_routes.ANTHROPIC, check_headers)
    app = Litestar(
        route_handlers=[*_route_handlers(runtime, chat_app, messages_app),
                        *dashboard_router(runtime, lambda request: check_headers(request.scope["headers"]))],
        exception_handlers={AiosdError: aiosd_error_response, HTTPException: http_error_response,
                            Exception: unexpected_error_response},
        request_max_body_size=runtime.config.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="aiosd", version=__version__, path="/openapi",
                                     render_plugins=[OpenAPIJson(frozenset({completion_routes.MESSAGES_PATH}))]),
        debug=False,
        logging_config=None,
    )
    routes = {completion_routes.CHAT_PATH: chat_app, completion_routes.MESSAGES_PATH: messages_app}
    # The cast: Litestar's own scope types are TypedDicts, narrower than the mappings aiosd's wrappers pass.
    # HEAD and /openapi never reach the completion POSTs: their wrappers sit on Litestar's side, a
    # layer fewer on every completion.
    dispatch = completion_routes.completion_dispatch(routes, _head_as_get(_locked_down_documents(cast("ASGIApp", app))))
    guarded = request_guard(dispatch, _guard_settings_of(runtime), _error_body_for_path)
    return request_id_middleware(guarded)


# What /openapi/* may do in a browser: nothing (it is JSON; no script, style or frame of any origin).
_DOCUMENT_HEADERS = [(b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
                     (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


def _locked_down_documents(app: ASGIApp) -> ASGIApp:
    """ASGI: the OpenAPI document's answers carry a Content-Security-Policy that lets nothing run."""

    async def locked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/openapi"):
            return await app(scope, receive, send)

        async def send_locked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_DOCUMENT_HEADERS]
            await send(message)

        return await app(scope, receive, send_locked)

    return locked


def _head_as_get(app: ASGIApp) -> ASGIApp:
    """ASGI: HEAD on a GET route answers as GET does, status and headers, without the body (uvicorn
    leaves it out: its own copy of the scope still says HEAD)."""

    async def head(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        return await app(scope, receive, send)

    return head


def _route_handlers(runtime: Runtime, chat_app: ASGIApp, messages_app: ASGIApp) -> list[HTTPRouteHandler]:
    """Litestar's routes: the completion routes' descriptions, the model list, health, status and metrics."""

    def check_request(request: Request) -> None:
        check_auth(runtime.config.auth.keys, request.scope["headers"])

    def check_probe(request: Request) -> None:
        """/metrics and /readyz: a key like /status, unless server.open_metrics lets loopback clients in."""
        config = runtime.config
        if config.server.open_metrics == "loopback" and is_loopback_client(request.scope):
            return
        check_auth(config.auth.keys, request.scope["headers"])

    # POSTs to these exact paths never reach these two handlers: completion_dispatch hands them to
    # the same ASGI apps before Litestar. They give the routes their OpenAPI description and serve
    # any path variant Litestar matches (a trailing slash). Litestar relays a returned ASGI app when
    # the return annotation is its own ``ASGIApp``.
    @post(completion_routes.CHAT_PATH, status_code=200, summary="Create a chat completion (OpenAI-compatible)",
          operation_class=ChatCompletionOperation)
    async def chat_completions() -> LitestarASGIApp:
        return cast("LitestarASGIApp", chat_app)  # the same callable; Litestar's types name its own scope shapes

    @post(completion_routes.MESSAGES_PATH, status_code=200, summary="Create a message (Anthropic Messages dialect)",
          operation_class=MessagesOperation)
    async def messages() -> LitestarASGIApp:
        return cast("LitestarASGIApp", messages_app)

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
    async def readyz(request: Request) -> Response:
        check_probe(request)
        ready, reason = runtime.readiness()
        return Response({"ready": ready, "reason": reason}, status_code=200 if ready else 503, media_type=JSON)

    @get("/status", summary="The daemon's status as JSON (what `aiosd status` shows)")
    async def status(request: Request) -> Response:
        check_request(request)
        return Response(runtime.status(), media_type=JSON)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain")
    async def metrics_endpoint(request: Request) -> Response:
        check_probe(request)
        body, content_type = runtime.metrics.render()
        # As a header: media_type="text/..." would get a second "; charset=utf-8" from Litestar.
        return Response(body, headers={"content-type": content_type})

    return [chat_completions, messages, list_models, healthz, readyz, status, metrics_endpoint]


def _guard_settings_of(runtime: Runtime) -> Callable[[], GuardSettings]:
    """The request guard's settings for the generation serving now, built once per generation."""
    built_for: Config | None = None
    built: GuardSettings | None = None

    def settings() -> GuardSettings:
        nonlocal built_for, built
        config = runtime.config
        if built is None or built_for is not config:
            built = guard_settings(runtime.bound_host, config.server.allowed_hosts, config.server.allowed_origins)
            built_for = config
        return built

    return settings


def _error_body_for_path(path: str, error: AiosdError) -> bytes:
    if path.rstrip("/") == completion_routes.MESSAGES_PATH:
        return anthropic_error_body(error)
    return openai_error_body(error)


def check_auth(keys: Sequence[str], headers: Iterable[tuple[bytes, bytes]]) -> int | None:
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


def _error_response(exc: AiosdError, more_headers: dict[str, str] | None = None) -> Response:
    """``exc`` in OpenAI's shape with the headers every error carries (``error_response`` writes them)."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in error_headers(exc)}
    return Response(openai_error_body(exc), status_code=exc.status, media_type=JSON,
                    headers={**(more_headers or {}), **headers})


def _request_id(request: Request) -> str:
    request_id: str = request.scope.get("state", {}).get("request_id", "-")
    return request_id


def aiosd_error_response(request: Request, exc: AiosdError) -> Response:
    log_error(_request_id(request), exc)
    return _error_response(exc)


_HTTP_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def http_error_response(request: Request, exc: HTTPException) -> Response:
    headers = {}
    allow = (exc.headers or {}).get("allow")
    if allow is not None:  # a 405 says which methods the path takes; HEAD goes wherever GET does
        methods = [m.strip() for m in allow.split(",") if m.strip()]
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")
        headers["allow"] = ", ".join(methods)
    return _error_response(_from_http_exception(exc), headers)


def _from_http_exception(exc: HTTPException) -> AiosdError:
    status = exc.status_code
    error = AiosdError(str(exc.detail), status=status, code=_HTTP_CODES.get(status, "invalid_request"))
    if status == 413:
        error.message = "request body too large (server.max_body_bytes)"
    error.type = "invalid_request_error" if status < 500 else "server_error"
    return error


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    return _error_response(internal_error(_request_id(request)))
