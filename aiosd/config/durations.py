"""Parsing the durations the config file uses ("250ms", "30s", "5m", "1.5h", or plain seconds)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# How a valid duration looks, for every message that refuses one.
DURATION_FORMS = "a duration like 30s, 5m or 1.5h (units ms, s, m, h; a plain number is seconds)"


def parse_duration(value: float | int | str) -> float:
    """Seconds for a duration value; raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_FORMS}, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected {DURATION_FORMS}, got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """A short human form for logs and status ("250ms", "20s", "5m")."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"
