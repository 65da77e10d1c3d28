"""A recording HTTP proxy on loopback (uvicorn in a thread): every request is kept (method, path,
headers as sent, body) and forwarded to ``upstream``, whose answer streams back untouched.

Put it between a client and aiosd to see exactly what the client sent, e.g. OpenClaw's session
affinity headers: point the client's base URL at ``proxy.url`` instead of aiosd's.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

# Hop-by-hop headers, and the ones httpx sets itself for the upstream request.
_NOT_FORWARDED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
                  "proxy-connection", "te", "trailer"}
_NOT_RETURNED = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # lower-cased names, in the order they came
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None; several values joined by ", "."""
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    @property
    def header_dict(self) -> dict[str, str]:
        return {k: self.header(k) or "" for k, _ in self.headers}


class RecordingProxy:
    """``with RecordingProxy("http://127.0.0.1:8700") as proxy:`` ... ``proxy.requests``."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> RecordingProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, interface="asgi3", lifespan="off", log_config=None,
                                access_log=False, ws="none", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name=f"recording-proxy:{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the recording proxy did not start")
            time.sleep(0.01)
        return self

    def _run(self, sock: socket.socket) -> None:
        asyncio.run(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5))
        try:
            await self._server.serve(sockets=[sock])
        finally:
            await self._client.aclose()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._thread = None

    # ------------------------------------------------------------------ observation

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def matching(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    # ------------------------------------------------------------------ the proxy

    async def _app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        query = scope.get("query_string", b"").decode("latin-1")
        with self._lock:
            self.requests.append(RecordedRequest(scope["method"], scope["path"], query, headers, body))
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        forwarded = [(k, v) for k, v in headers if k not in _NOT_FORWARDED]
        request = self._client.build_request(scope["method"], url, headers=forwarded, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            text = f"recording proxy: upstream {self.upstream} failed: {exc!r}".encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
            await send({"type": "http.response.body", "body": text})
            return
        try:
            out_headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _NOT_RETURNED]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
