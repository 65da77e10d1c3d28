"""Raw HTTP/1.1 over a socket for the connection-layer tests: request heads, parsing answers, reading until closed."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def request_head(path: str = "/v1/models", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n".encode() + extra


def parse_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def split_responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Every answer in ``raw`` (several pipelined answers on one connection), each with a content-length body."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, headers, _ = parse_response(head + b"\r\n\r\n")
        length = int(headers.get("content-length", 0))
        answers.append((status, headers, rest[:length]))
        raw = rest[length:]
    return answers


def statuses(raw: bytes) -> list[int]:
    """The status codes of the answers in ``raw``, in order."""
    return [int(code) for code in _STATUS_LINE.findall(raw)]


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (AssertionError if it does not)."""
    try:
        return await asyncio.wait_for(reader.read(-1), timeout)
    except TimeoutError:
        raise AssertionError(f"aiosd did not close the connection within {timeout}s") from None


def assert_json_error(raw: bytes, status: int, code: str) -> dict:
    got, headers, body = parse_response(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == code
    return error


def connection_guard(aiosd: Any) -> Any:
    """The ``ConnectionGuard`` of a ``serve_aiosd`` server (its per-connection bounds can be lowered)."""
    return aiosd.server.config.http.guard
