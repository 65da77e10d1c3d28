"""The request bodies the bench sends: OpenClaw's recorded 60 KB turn, and the /query body aiosd makes of it."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from aiosd.config.settings import Config
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call

FIXTURE = Path(__file__).resolve().parents[1] / "tests/fixtures/openclaw/chat-completions-text-turn.jsonl"
# The model id OpenClaw sent in the recording; the bench config maps it to a kernel model.
FIXTURE_MODEL = "mock-model"


def recorded_turn() -> dict:
    """The recorded OpenClaw chat-completions body (a text turn: 50 KB system prompt, 12 tools)."""
    with FIXTURE.open() as handle:
        return json.loads(handle.readline())["body"]


def chat_body(*, stream: bool) -> bytes:
    """The recorded body as OpenClaw sends it (``stream`` true), or the same turn not streamed."""
    body = recorded_turn()
    body["stream"] = stream
    if not stream:
        body.pop("stream_options", None)
    return json.dumps(body).encode()


def query_body(config: Config) -> bytes:
    """Exactly the /query body aiosd sends the kernel for the recorded turn under ``config``."""
    request = parse_chat_request(chat_body(stream=False))
    model = next(spec for spec in config.models.map if spec.id == request.model)
    call = build_kernel_call(request, model, config.kernel.agent_name)
    return msgspec.json.encode(call.body)


def write_bodies(directory: Path, config: Config) -> dict[str, Path]:
    """The three bodies as files (wrk reads its body from a file)."""
    paths = {
        "chat_stream": directory / "chat-stream.json",
        "chat_plain": directory / "chat-plain.json",
        "query": directory / "query.json",
    }
    paths["chat_stream"].write_bytes(chat_body(stream=True))
    paths["chat_plain"].write_bytes(chat_body(stream=False))
    paths["query"].write_bytes(query_body(config))
    return paths
