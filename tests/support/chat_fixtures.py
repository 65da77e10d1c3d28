"""Recorded OpenClaw chat-completions requests and model specs for the translation-layer tests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from aiosd.config.settings import ModelSpec
from tests.support.model_specs import model_spec

# Requests OpenClaw really sent, and its config schema, recorded into the repository.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openclaw"


def recorded_requests() -> list[tuple[str, bytes]]:
    """(name, body bytes) of every recorded POST /v1/chat/completions."""
    found = []
    for path in sorted(FIXTURES.glob("chat-completions-*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines()):
            record = json.loads(line)
            if record["path"].endswith("/chat/completions"):
                found.append((f"{path.stem}#{number}", json.dumps(record["body"]).encode()))
    return found


def recorded_body(name: str, number: int = 0) -> dict:
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()
    return json.loads(lines[number])["body"]


def openclaw_tools() -> list[dict]:
    return recorded_body("chat-completions-text-turn")["tools"]


MODEL = model_spec("sonnet", kernel_model="claude-sonnet", backend="anthropic")


def model(**changes) -> ModelSpec:
    return replace(MODEL, **changes)


def body(messages: list[dict], **extra) -> bytes:
    return json.dumps({"model": "sonnet", "messages": messages, **extra}).encode()
