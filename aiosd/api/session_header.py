"""The conversation a request belongs to: OpenClaw's session headers, bounded and checked before use.

OpenClaw 2026.9.6 sends its session id (``<uuid>:0``) as ``x-session-affinity``, ``session_id`` and
``x-client-request-id`` when the model row has ``compat.sendSessionAffinityHeaders`` (aiosd writes
it); its OpenRouter flavour sends ``x-session-id``. ``x-client-request-id`` is not read: other
OpenAI clients send a new one per request. What does not live here: what a session gets
(``kernel.scheduler``, ``kernel.sessions``).
"""

from __future__ import annotations

import re

from aiosd.api.asgi import Headers
from aiosd.errors import InvalidRequest

# Checked in this order; the first one present names the session.
SESSION_HEADERS = (b"x-session-affinity", b"session_id", b"x-session-id")
_NAMES = frozenset(SESSION_HEADERS)
MAX_SESSION_ID = 128
_VALID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,%d}" % MAX_SESSION_ID)


def session_id(headers: Headers) -> str | None:
    """The request's session id, None without one (or an empty one); ``InvalidRequest`` for a value
    longer than ``MAX_SESSION_ID`` or with other characters than ``A-Z a-z 0-9 . _ : @ / + = -``."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _NAMES and name not in found:
            found[name] = value.strip()
    if not found:
        return None
    for name in SESSION_HEADERS:
        value = found.get(name, b"")
        if not value:
            continue
        if _VALID.fullmatch(value) is None:
            raise InvalidRequest(
                f"Invalid request: header {name.decode()}: a session id is 1 to {MAX_SESSION_ID} of the characters "
                f"A-Z a-z 0-9 . _ : @ / + = - (got {len(value)} bytes{_other_characters(value)})")
        return value.decode("ascii")
    return None


def _other_characters(value: bytes) -> str:
    return "" if re.fullmatch(rb"[A-Za-z0-9._:@/+=-]*", value) else ", some of them not allowed"
