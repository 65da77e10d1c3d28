"""Decoding the kernel's JSON bodies: every failure (not JSON, not UTF-8, nested too deeply) one ``ValueError``.

What does not live here: what the decoded values mean (``client`` and ``errors``).

A real /query answer is nested a few levels deep (tool call arguments add the LLM's own, rarely
more than ten). An answer nested thousands of levels deep makes ``json.loads`` raise
``RecursionError``, and one just under the interpreter's limit decodes but makes every later
recursive step (encoding the reply, ``repr`` in an error message) raise it instead: a 500 and a
traceback where a 502 belongs. So nesting is bounded here, once, right after decoding.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

# Deeper than any real answer, far below the interpreter's recursion limit (1000 frames), so the
# code that handles a decoded answer can recurse through it safely.
MAX_NESTING = 64


class UnreadableJSON(ValueError):
    """The body is not JSON aiosd will handle; ``why`` is a short human reason."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def loads_answer(body: bytes) -> Any:
    """``body`` decoded as JSON, nested at most ``MAX_NESTING`` levels; ``UnreadableJSON`` otherwise."""
    try:
        # msgspec reads what it takes ~5x faster; what it refuses (a lone surrogate's escape, NaN, a
        # float out of range, deep nesting) goes to json, which decides as it always did.
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # the last: msgspec < 0.19 on bad UTF-8
        value = _stdlib_loads(body)
    return _bounded(body, value)


def _stdlib_loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise UnreadableJSON(f"is nested more than {MAX_NESTING} levels deep") from None
    except ValueError:  # UnicodeDecodeError included
        raise UnreadableJSON("is not JSON") from None


def _bounded(body: bytes, value: Any) -> Any:
    """``value`` unless it nests deeper than ``MAX_NESTING``."""
    # Containers cannot nest deeper than there are brackets: most answers are checked by two C-speed counts.
    if body.count(b"[") + body.count(b"{") > MAX_NESTING and nesting_exceeds(value, MAX_NESTING):
        raise UnreadableJSON(f"is nested more than {MAX_NESTING} levels deep")
    return value


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
