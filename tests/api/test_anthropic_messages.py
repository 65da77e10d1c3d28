"""OpenClaw's anthropic-messages dialect: the recorded /v1/messages request through aiosd and back."""

from __future__ import annotations

import json

import httpx
import pytest

from aiosd.api.anthropic_messages import to_openai_chat
from aiosd.errors import InvalidRequest
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.chat_fixtures import FIXTURES
from tests.support.fake_kernel import FakeKernel, Text

FIXTURE = FIXTURES / "anthropic-messages-text-turn.jsonl"


def recorded() -> tuple[dict, dict]:
    record = json.loads(FIXTURE.read_text().splitlines()[0])
    body = dict(record["body"], model="sonnet")
    return body, record["headers"]


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for frame in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_recorded_anthropic_turn_streams_anthropic_events(tmp_path):
    body, headers = recorded()
    with FakeKernel() as kernel:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            response = await client.post("/v1/messages", json=body, headers={"x-api-key": headers["x-api-key"]})
        sent = kernel.queries[-1]["query_data"]["messages"]
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text.startswith("echo: ")
    # The system blocks became the system prompt, with aiosd's tool instructions for the 12 tools.
    assert sent[0]["role"] == "system" and "You are a personal assistant running inside OpenClaw" in sent[0]["content"]
    assert "<function_calls>" in sent[0]["content"]
    assert all(m["role"] in ("system", "user", "assistant") for m in sent)


async def test_tool_use_comes_back_as_tool_use_blocks_and_tool_results_go_to_the_model(tmp_path):
    body, _ = recorded()
    written = '<function_calls><invoke name="read"><parameter name="path">a.txt</parameter></invoke></function_calls>'
    with FakeKernel() as kernel:
        kernel.script(Text("Let me look." + written), Text("It says hi."))
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            first = await client.post("/v1/messages", json=dict(body, stream=False))
            message = first.json()
            assert message["stop_reason"] == "tool_use"
            assert message["content"][0] == {"type": "text", "text": "Let me look."}
            call = message["content"][1]
            assert call["type"] == "tool_use" and call["name"] == "read" and call["input"] == {"path": "a.txt"}
            follow_up = dict(body, stream=False, messages=[
                *body["messages"],
                {"role": "assistant", "content": message["content"]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "hi"}]},
            ])
            second = await client.post("/v1/messages", json=follow_up)
        history = json.dumps(kernel.queries[-1]["query_data"]["messages"])
    assert second.json()["content"] == [{"type": "text", "text": "It says hi."}]
    assert "a.txt" in history and "hi" in history


async def test_errors_use_anthropics_error_shape(tmp_path):
    with FakeKernel() as kernel:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            unknown = await client.post("/v1/messages", json={"model": "nope", "max_tokens": 10,
                                                               "messages": [{"role": "user", "content": "x"}]})
            broken = await client.post("/v1/messages", content=b"{not json",
                                       headers={"content-type": "application/json"})
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "error" and unknown.json()["error"]["type"] == "not_found_error"
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"


def test_unsupported_blocks_are_a_clear_400_naming_the_block():
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[0\]: unsupported block type 'audio'"):
        to_openai_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]})


@pytest.mark.parametrize("body", [
    b"[" * 5000 + b"]" * 5000,
    b'{"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "metadata": '
    + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    b'{"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "t",'
    b' "input_schema": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}]}",
], ids=["whole-body", "in-metadata", "in-tool-schema"])
async def test_deeply_nested_messages_body_is_a_400_not_a_500(tmp_path, body):
    with FakeKernel() as kernel:
        async with (
            serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd,
            httpx.AsyncClient(base_url=aiosd.url) as client,
        ):
            response = await client.post("/v1/messages", content=body,
                                         headers={"content-type": "application/json"})
        assert kernel.queries == []
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "nested too deeply" in error["error"]["message"]
