"""Per-request plumbing: the request id header and cancelling work when the client goes away."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class ClientDisconnected(Exception):
    """The client hung up before aiosd answered; its kernel call was cancelled."""


def request_id_middleware(app):
    """ASGI middleware: every HTTP response carries X-Request-Id (the client's, if sane, else a new one)."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER and _SAFE_ID.match(value):
                request_id = value
                break
        if request_id is None:
            request_id = ("req_" + secrets.token_hex(8)).encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        return await app(scope, receive, send_with_id)

    return middleware


async def until_disconnect(receive) -> None:
    """Return once the client disconnects (the body must already have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(receive, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (queue place, retry wait, kernel call)."""
    work_task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnect(receive))
    try:
        done, _ = await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work_task.cancel()
        watcher.cancel()
        raise
    if work_task in done:
        watcher.cancel()
        return work_task.result()
    work_task.cancel()
    try:
        await work_task
    except (asyncio.CancelledError, Exception):
        pass
    raise ClientDisconnected()
