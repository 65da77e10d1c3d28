"""The decoded answer of one kernel call (``Reply``, ``ToolCall``): what ``responses`` renders."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "tool_calls", "length"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    # Always a JSON object as a string, "{}" for no arguments: OpenClaw fails a turn on "".
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Reply:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    # Something worth a log line (e.g. the LLM answered nothing); never shown to the client.
    warning: str | None = None
    # Characters the model generated (incl. call markup), for the completion token estimate.
    generated_chars: int = 0


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id, alphanumeric after the prefix (OpenClaw strips the rest)."""
    return "call_" + secrets.token_hex(12)
