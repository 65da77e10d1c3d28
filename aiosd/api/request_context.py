"""Per-request plumbing: the request id header, the body within its size limit, cancelling work on a disconnect."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable
from typing import TypeVar

from aiosd.api.asgi import ASGIApp, Message, Receive, Scope, Send
from aiosd.errors import RequestTooLarge

T = TypeVar("T")

# aiosd's own request ids: unique, not secret (they name log lines and the status page's rows, both
# behind the same auth as everything else), so the process-wide generator seeded from os.urandom is
# enough, without a getrandom() call per request as secrets would make.
_ids = random.Random()

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
# aiosd's own ids are "req_" + 16 hex digits; a client's id in that form could pass for one of them.
_OWN_FORM = re.compile(rb"^req_", re.IGNORECASE)


class ClientDisconnected(Exception):
    """The client hung up before aiosd answered; its kernel call was cancelled."""


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: every HTTP response carries X-Request-Id: the client's, if sane and not in the form of
    aiosd's own ids (``req_...``), else a new one."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER and _SAFE_ID.match(value) and not _OWN_FORM.match(value):
                request_id = value
                break
        if request_id is None:
            request_id = b"req_%016x" % _ids.getrandbits(64)
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        return await app(scope, receive, send_with_id)

    return middleware


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (read per request, so a reloaded
    ``server.max_body_bytes`` applies at once); ``RequestTooLarge`` past it, ``ClientDisconnected``
    if the client leaves before the body is complete."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        # Refuse before reading anything: the client announced too much.
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"request body too large: the limit is {limit} bytes (server.max_body_bytes)")


async def until_disconnect(receive: Receive) -> None:
    """Return once the client disconnects (the body must already have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


# A request answered within this many seconds never starts its disconnect watcher (a task, its first
# step and its cancellation: the largest cost around a quick kernel call); a client that hangs up
# sooner is noticed this much later at most.
WATCH_AFTER = 0.05


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (queue place, retry wait, kernel call).

    ``work`` runs in the calling task (one task per request fewer than running it beside the
    watcher); the watcher, started once ``work`` has run ``WATCH_AFTER`` seconds, cancels the
    calling task when the client goes away.
    """
    caller = asyncio.current_task()
    assert caller is not None, "cancel_on_disconnect runs inside the request's task"
    disconnected = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal disconnected
        await until_disconnect(receive)
        disconnected = True
        caller.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        # uncancel() leaves 0 when the watcher's cancel was the only one: the server shutting
        # down (or anyone else) cancelling the request still propagates as a cancellation.
        if disconnected and caller.uncancel() == 0:
            raise ClientDisconnected() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
