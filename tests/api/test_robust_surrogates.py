"""Lone UTF-16 surrogates (half an emoji, legal JSON) in requests, kernel answers and errors, in both dialects."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel, RawResponse, Text, ToolCall, ToolCalls

LONE = "a\\ud83d b"  # as JSON text: a high surrogate with no low one after it
REPAIRED = "a\ufffd b"
JSON_HEADERS = {"content-type": "application/json"}
BODIES = {
    "/v1/chat/completions": '{"model": "sonnet", "messages": [{"role": "user", "content": "%s"}]%s}',
    "/v1/messages": '{"model": "sonnet", "max_tokens": 100, "messages": [{"role": "user", "content": "%s"}]%s}',
}


def body(path: str, text: str = "hi", stream: bool = False) -> str:
    return BODIES[path] % (text, ', "stream": true' if stream else "")


def answer_text(path: str, response: httpx.Response) -> str:
    """The answer's text, from a JSON body or an event stream, in either dialect."""
    if response.headers["content-type"].startswith("text/event-stream"):
        pieces = []
        for frame in response.text.split("\n\n"):
            for line in frame.splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = json.loads(line[6:])
                    delta = (event.get("delta") or {}) if path == "/v1/messages" else \
                        ((event.get("choices") or [{}])[0].get("delta") or {})
                    pieces.append(delta.get("text") or delta.get("content") or delta.get("partial_json") or "")
                    pieces.extend(call["function"].get("arguments", "") for call in delta.get("tool_calls") or [])
        return "".join(pieces)
    document = response.json()
    if path == "/v1/messages":
        return "".join(block.get("text", json.dumps(block.get("input"), ensure_ascii=False))
                       for block in document["content"])
    message = document["choices"][0]["message"]
    return (message["content"] or "") + "".join(c["function"]["arguments"] for c in message.get("tool_calls") or [])


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_a_lone_surrogate_in_a_request_is_repaired_in_both_dialects(tmp_path, kernel, path):
    """Issue 18 item 2: "a\\ud83d b" in a message reaches the kernel as "a\\ufffd b" and is answered 200 on
    both routes; before, /v1/messages answered 500 with a traceback at error."""
    async with serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd, \
            httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.post(path, content=body(path, LONE), headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    sent = json.dumps(kernel.queries[-1], ensure_ascii=False)
    assert REPAIRED in sent and "\\ud83d" not in sent


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("path", sorted(BODIES))
@pytest.mark.parametrize("output", [Text("x\ud83dy"), ToolCalls([ToolCall("read", '{"path": "x\ud83dy"}')])],
                         ids=["text", "tool-call"])
async def test_a_lone_surrogate_in_a_kernel_answer_is_repaired_in_both_dialects(tmp_path, kernel, path, stream,
                                                                                 output):
    """Issue 18 item 2: a kernel answer holding a lone surrogate reaches the client as U+FFFD with 200, in
    either dialect, streamed or not; before, /v1/messages answered 500 while the status page said ok."""
    kernel.script(output)
    extra = "models: {defaults: {tools: native}}" if isinstance(output, ToolCalls) else ""
    tools = (', "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]'
             if path == "/v1/chat/completions" else ', "tools": [{"name": "read", "input_schema": {"type": "object"}}]')
    text = body(path, "hi", stream)
    if extra:
        text = text[:-1] + tools + "}"
    async with serve_aiosd(config_for(tmp_path, kernel.url, extra)) as aiosd, \
            httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.post(path, content=text, headers=JSON_HEADERS)
        recorded = aiosd.runtime.history.recent[-1]
    assert response.status_code == 200, response.text[:500]
    assert "x\ufffdy" in answer_text(path, response)
    assert (recorded.status, recorded.outcome) == (200, "ok")


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_a_lone_surrogate_in_a_kernel_error_is_a_json_error_in_both_dialects(tmp_path, kernel, path):
    """Issue 18 item 2: a kernel error text holding a lone surrogate is answered in the route's JSON error
    shape with the status the page records; before, /v1/messages gave uvicorn's plain-text 500."""
    kernel.script(RawResponse(500, '{"detail": "handler failed: x\\ud83dy"}', [("content-type", "application/json")]))
    config = config_for(tmp_path, kernel.url, "retry: {max_retries: 0}")
    async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url) as client:
        response = await client.post(path, content=body(path), headers=JSON_HEADERS)
        recorded = aiosd.runtime.history.recent[-1]
    assert response.headers["content-type"] == "application/json", response.text[:300]
    assert response.status_code == recorded.status and response.status_code >= 500
    message = response.json()["error"]["message"]
    assert "\ud83d" not in message
