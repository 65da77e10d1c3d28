"""The status page's routes: its static files under /ui/, its JSON under /ui/api/, and who may see them.

The headers that lock the page down live here too.

Who may see it: with ``auth.keys`` set, the JSON needs one of the keys (the page asks for it once
and keeps it for the browser session); the static files hold no data and are served to anyone,
so the page can ask. Without keys, everything here answers loopback clients only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from typing import Annotated

from litestar import Request, Response, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Redirect

from aiosd.api.dashboard_data import LiveState, RequestLog, live_state, request_log
from aiosd.api.request_guard import is_loopback_client
from aiosd.errors import ClientError, InvalidRequest
from aiosd.service.runtime import Runtime

UI_PATH = "/ui"
# Nothing the page does not need: its own script and style, JSON from its own origin, no frames,
# no forms, no inline code (so text that slipped into the DOM as markup still could not run).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
_STATIC = {  # file name -> content type
    "index.html": "text/html",  # Litestar adds "; charset=utf-8" to text/*
    "app.js": "text/javascript",
    "app.css": "text/css",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # what request_context accepts as an id


def _static_files() -> dict[str, bytes]:
    folder = resources.files("aiosd.api") / "ui"
    return {name: (folder / name).read_bytes() for name in _STATIC}


def dashboard_router(runtime: Runtime, check_request: Callable[[Request], object]) -> list[Router | HTTPRouteHandler]:
    """The route handlers of the status page; ``check_request(request)`` raises for a request without a valid key."""
    files = _static_files()

    def allow_page(request: Request) -> None:
        if not runtime.config.auth.keys and not is_loopback_client(request.scope):
            raise ClientError("the status page answers only on loopback while auth.keys is empty; "
                              "add auth.keys to reach it from elsewhere", status=403, code="forbidden")

    def allow_data(request: Request) -> None:
        allow_page(request)
        check_request(request)

    def static(name: str) -> HTTPRouteHandler:
        @get(f"/{name}" if name != "index.html" else "/", media_type=_STATIC[name],
             summary=f"The status page: {name}", cache_control=None, include_in_schema=True,
             name=f"ui-{name}", sync_to_thread=False)
        def serve(request: Request) -> Response[bytes]:
            allow_page(request)
            return Response(files[name], media_type=_STATIC[name], headers={"cache-control": "no-cache"})

        return serve

    @get("/api/live", summary="The status page's data: kernels, queue, recent requests and per-second history",
         description="Poll once a second. `requests_after` and `history_after` are the `requests_seq` and "
                     "`history_second` of the previous answer: only newer rows and buckets are sent again. "
                     "Never carries prompt or answer text, nor any key.",
         sync_to_thread=False)
    def live(
        request: Request,
        requests_after: Annotated[int, Parameter(ge=0, description="the previous answer's requests_seq")] = 0,
        history_after: Annotated[
            int | None, Parameter(ge=0, description="the previous answer's history_second")] = None,
    ) -> Response[LiveState]:
        allow_data(request)
        state = live_state(runtime, requests_after=requests_after, history_after=history_after)
        return Response(state, headers={"cache-control": "no-store"})

    @get("/api/requests/{request_id:str}/log", summary="A recent request's log lines, by request id",
         description="The lines aiosd logged about the request, while they are in the in-memory ring "
                     "of recent request log lines.", sync_to_thread=False)
    def log_lines(
        request: Request,
        request_id: Annotated[str, Parameter(description="the X-Request-Id aiosd answered with", max_length=64)],
    ) -> Response[RequestLog]:
        allow_data(request)
        if not _REQUEST_ID.match(request_id):
            raise InvalidRequest("a request id is 1 to 64 letters, digits and . _ : -")
        return Response(request_log(runtime, request_id), headers={"cache-control": "no-store"})

    @get("/", summary="Redirects to the status page", include_in_schema=False, sync_to_thread=False)
    def root() -> Redirect:
        return Redirect(path=UI_PATH + "/", headers=SECURITY_HEADERS)

    ui = Router(path=UI_PATH, route_handlers=[*(static(name) for name in _STATIC), live, log_lines],
                response_headers=SECURITY_HEADERS)
    return [ui, root]
