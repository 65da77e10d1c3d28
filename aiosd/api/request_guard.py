"""Which requests aiosd answers at all: its own Host names, allowed browser Origins, JSON bodies on POSTs.

Host names guard against DNS rebinding, Origins against cross-site pages.

Why: with the default setup (loopback, no keys) any web page the user opens can reach aiosd. A
page on another site sends an ``Origin`` it cannot forge; a rebinding page (attacker.example
re-pointed at 127.0.0.1) sends ``Host: attacker.example``; and a "simple" cross-site POST, the only
kind a browser sends without asking first, cannot carry ``Content-Type: application/json``.
Non-browser clients (OpenClaw's undici, the OpenAI SDKs, curl) send an IP or localhost as Host, no
Origin, and a JSON content type, so none of this touches them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiosd.api.asgi import ASGIApp, Message, Receive, Scope, Send
from aiosd.api.error_response import JSON, send_response
from aiosd.errors import (
    AiosdError,
    HostNotAllowed,
    OriginNotAllowed,
    UnsupportedMediaType,
)
from aiosd.service.logs import RateLimitedLog

# Names that always mean this machine and that no outside DNS can re-point.
_OWN_NAMES = frozenset(("localhost", "127.0.0.1", "::1"))
_CORS_METHODS = b"GET, POST, OPTIONS"
_CORS_MAX_AGE = b"600"


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """What the guard accepts, from one config generation and the address aiosd is bound to."""

    hosts: frozenset[str]  # lower-case names and IP literals in their canonical form
    any_host: bool  # server.allowed_hosts holds "*"
    origins: frozenset[str]  # lower-case "scheme://host[:port]"


def guard_settings(bound_host: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> GuardSettings:
    hosts = set(_OWN_NAMES)
    hosts.add(_canonical(bound_host))
    hosts.update(_canonical(h) for h in allowed_hosts if h != "*")
    return GuardSettings(frozenset(hosts), "*" in allowed_hosts,
                         frozenset(o.lower().rstrip("/") for o in allowed_origins))


def request_guard(app: ASGIApp, settings: Callable[[], GuardSettings],
                  error_body: Callable[[str, AiosdError], bytes]) -> ASGIApp:
    """ASGI middleware refusing, before anything else reads the request, a Host that is not one of
    aiosd's names (421), a browser Origin that is not allowed (403), and a POST whose body is not
    declared JSON (415); a preflight from an allowed Origin gets its CORS answer (204).
    ``error_body(path, error)`` writes the refusal in the shape of the route asked for."""

    log_refused = RateLimitedLog(logging.INFO)
    accepted = AcceptedHosts()

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        host = origin = content_type = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value if host is None else host
            elif name == b"origin":
                origin = value if origin is None else origin
            elif name == b"content-type":
                content_type = value if content_type is None else content_type
        allowed = settings()
        error: AiosdError | None = None
        if host is not None and not accepted.allowed(host, allowed, scope.get("server")):
            error = HostNotAllowed(
                f"Host {_shown(host)} is not one of aiosd's names (localhost, its IP addresses, "
                "server.allowed_hosts); refused to guard against DNS rebinding. Reaching aiosd by another "
                "name? Add it to server.allowed_hosts")
        elif origin is not None and not _origin_allowed(origin, host, allowed):
            error = OriginNotAllowed(
                f"browser requests from Origin {_shown(origin)} are not allowed (server.allowed_origins); "
                "a web page may not use aiosd unless its origin is listed there")
        elif scope["method"] == "OPTIONS" and origin is not None:
            return await _preflight(scope, send, origin)
        elif scope["method"] == "POST" and not _is_json(content_type):
            error = UnsupportedMediaType(
                f"Content-Type {_shown(content_type) if content_type else '(none)'} is not supported: send the "
                "body as JSON with 'Content-Type: application/json'")
        if error is not None:
            log_refused("request %s: %d %s: %s", scope.get("state", {}).get("request_id", "-"), error.status,
                        error.code, error.message, what="requests refused for their Host, Origin or Content-Type")
            await send_response(send, error.status, [(b"content-type", JSON)], error_body(scope["path"], error))
            return None
        if origin is None:
            return await app(scope, receive, send)

        async def send_with_cors(message: Message) -> None:  # an allowed browser page may read the answer
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"access-control-allow-origin", origin),
                                      (b"vary", b"origin")]
            await send(message)

        return await app(scope, receive, send_with_cors)

    return guard


async def _preflight(scope: Scope, send: Send, origin: bytes) -> None:
    requested = b""
    for name, value in scope["headers"]:
        if name == b"access-control-request-headers":
            requested = value
            break
    headers = [(b"access-control-allow-origin", origin), (b"access-control-allow-methods", _CORS_METHODS),
               (b"access-control-max-age", _CORS_MAX_AGE), (b"vary", b"origin"), (b"content-length", b"0")]
    if requested:
        headers.append((b"access-control-allow-headers", requested))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def is_loopback_client(scope: Mapping[str, object]) -> bool:
    """Whether the request (an ASGI scope) came from this machine's loopback (127.0.0.0/8, ::1)."""
    client = scope.get("client")
    if not isinstance(client, (tuple, list)) or not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class AcceptedHosts:
    """Whether a Host header names aiosd, remembering the raw values found to be one of its names
    (parsing one with ``ipaddress`` costs more than the rest of the guard) for one settings generation.

    Bounded whatever clients send: values longer than ``KEY_BYTES`` are never kept, and past
    ``ENTRIES`` values the memory starts over (a stream of distinct Hosts, such as every port after
    ``localhost:``, only costs the parse again). Refused values are never kept."""

    ENTRIES = 64
    KEY_BYTES = 255

    def __init__(self) -> None:
        self._settings: GuardSettings | None = None
        self._hosts: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._hosts)

    def allowed(self, host: bytes, settings: GuardSettings, server: tuple[str, int | None] | None) -> bool:
        if settings is not self._settings:  # a reload may have taken a name away
            self._settings, self._hosts = settings, set()
        if host in self._hosts or settings.any_host:
            return True
        name = _host_name(host)
        if name is None:
            return False
        if name in settings.hosts:
            if len(host) <= self.KEY_BYTES:
                if len(self._hosts) >= self.ENTRIES:
                    self._hosts.clear()
                self._hosts.add(host)
            return True
        # An IP literal cannot be re-pointed by DNS: the address the connection arrived on is ours
        # (not remembered: another connection may arrive on another address).
        return server is not None and name == _canonical(str(server[0]))


def _origin_allowed(origin: bytes, host: bytes | None, allowed: GuardSettings) -> bool:
    text = origin.decode("latin-1").lower().rstrip("/")
    if text in allowed.origins:
        return True
    # A page aiosd served itself (same origin; the Host was already checked).
    return host is not None and text in (f"http://{host.decode('latin-1').lower()}",
                                         f"https://{host.decode('latin-1').lower()}")


def _host_name(host: bytes) -> str | None:
    """The name part of a Host header ("[::1]:8700" -> "::1"), canonical; None when malformed."""
    try:
        text = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        name, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = text.rpartition(":")
        if not colon:
            name = text
        elif not port.isdigit():
            return None
    return _canonical(name)


def _canonical(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _shown(value: bytes) -> str:
    """A header value as it may appear in an error: printable, bounded."""
    text = value[:100].decode("latin-1")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text + ("..." if len(value) > 100 else ""))
