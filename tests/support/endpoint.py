"""Helpers for the endpoint tests: a fake kernel plus a real aiosd on loopback, and strict SSE reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import httpx

from tests.support.aiosd_harness import config_for, merge_yaml, serve_aiosd
from tests.support.fake_kernel import FakeKernel

# OpenClaw's recorded requests name "mock-model"; "sonnet" is the harness's own id.
MODELS_YAML = """
models:
  map:
    mock-model: {kernel_model: "gpt-4o-mini", backend: "openai"}
"""

# Two tools (one with typed parameters, one without) and a reply that calls both in prompt mode.
TOOLS = [
    {"type": "function", "function": {
        "name": "read", "description": "Read a file.",
        "parameters": {"type": "object", "required": ["path"],
                       "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}}}}},
    {"type": "function", "function": {"name": "ls", "description": "List files.",
                                      "parameters": {"type": "object", "properties": {}}}},
]

MODEL_CALLS = (
    "Let me look.\n"
    "<function_calls>\n"
    '<invoke name="read"><parameter name="path">a <b> & c.txt</parameter>'
    '<parameter name="limit">20</parameter></invoke>\n'
    '<invoke name="ls"/>\n'
    "</function_calls>"
)


@dataclass
class Stack:
    kernel: FakeKernel
    aiosd: object  # aiosd_harness.RunningAiosd
    client: httpx.AsyncClient

    @property
    def runtime(self):
        return self.aiosd.runtime

    def query_data(self, index: int = -1) -> dict:
        """What the kernel received in /query number ``index``."""
        return self.kernel.queries[index]["query_data"]


@contextlib.asynccontextmanager
async def stack(tmp_path, extra: str = "", *, kernel: FakeKernel | None = None, **client_options):
    """A FakeKernel (unless given), aiosd serving on it, and an httpx client on aiosd's /v1."""
    own = kernel is None
    kernel = kernel or FakeKernel()
    if own:
        kernel.start()
    try:
        config = config_for(tmp_path, kernel.url, merge_yaml(MODELS_YAML, extra))
        async with (
            serve_aiosd(config) as aiosd,
            httpx.AsyncClient(base_url=aiosd.base_url, timeout=10, **client_options) as client,
        ):
            yield Stack(kernel, aiosd, client)
    finally:
        if own:
            kernel.stop()


def chat(content: str = "hello", model: str = "mock-model", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@dataclass
class SSE:
    chunks: list[dict]
    content: str
    tool_calls: list[dict]  # merged by index: {"id", "name", "arguments"}
    finish_reasons: list[str]
    usage: dict | None


def read_sse(text: str) -> SSE:
    """Parse an SSE body strictly: ``data: <one JSON line>\\n\\n`` frames, ending with ``data: [DONE]``."""
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    frames = text.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    chunks = []
    for frame in frames[:-2]:
        assert frame.startswith("data: ") and "\n" not in frame, frame[:200]
        chunks.append(json.loads(frame[len("data: "):]))
    content, calls, finish, usage = "", {}, [], None
    ids = {(c["id"], c["object"], c["created"], c["model"]) for c in chunks}
    assert len(ids) == 1 and next(iter(ids))[1] == "chat.completion.chunk"
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            if choice.get("finish_reason"):
                finish.append(choice["finish_reason"])
            for call in delta.get("tool_calls") or ():
                if call["index"] not in calls:
                    assert call["id"] and call["type"] == "function" and call["function"]["name"]
                    calls[call["index"]] = {"id": call["id"], "name": call["function"]["name"], "arguments": ""}
                calls[call["index"]]["arguments"] += call["function"].get("arguments") or ""
    return SSE(chunks, content, [calls[i] for i in sorted(calls)], finish, usage)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is ``status`` with an OpenAI error body (JSON, not SSE); returns the error object."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll an in-process predicate on the event loop (for aiosd's own gauges)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
