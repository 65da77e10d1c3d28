"""Property-based: any JSON value in any field of a chat request gets a 200 or a 4xx OpenAI error, never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.aiosd_harness import config_for
from tests.support.fake_kernel import FakeKernel
from tests.support.robust import AiosdInThread, assert_openai_error

REQUEST_FIELDS = [
    "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options",
    "max_completion_tokens", "max_tokens", "temperature", "top_p",
    # fields OpenClaw or other SDKs send that aiosd does not model: must be ignored or refused cleanly
    "n", "stop", "user", "seed", "response_format", "store", "metadata", "reasoning_effort",
]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal"]
TOOL_FIELDS = ["type", "function"]
FUNCTION_FIELDS = ["name", "description", "parameters", "strict"]

BASE = {
    "model": "sonnet",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "read a"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "read", "arguments": "{\"path\": \"a\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "file a"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [{"type": "function", "function": {"name": "read", "description": "Read a file",
                                                 "parameters": {"type": "object",
                                                                "properties": {"path": {"type": "string"}}}}}],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["sonnet", "user", "assistant", "tool", "system", "developer", "function", "auto", "none",
                       "required", "text", "image_url", "call_1", "read", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "name", "function", "arguments", "id", "image_url", "url"])
        | st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def aiosd_url(tmp_path_factory):
    with FakeKernel(record=False) as kernel:
        config = config_for(tmp_path_factory.mktemp("fuzz"), kernel.url,
                            'kernel: {timeout: "5s"}\nretry: {max_retries: 0}')
        with AiosdInThread(config) as aiosd, httpx.Client(base_url=aiosd.base_url, timeout=30) as client:
            yield client


def check(client: httpx.Client, body: dict | list) -> None:
    raw = json.dumps(body).encode()
    response = client.post("/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert "Traceback" not in response.text
    if response.status_code == 200:
        return
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500], raw[:500])
    assert_openai_error(response, response.status_code)


def replaced(path: list, value) -> dict:
    body = json.loads(json.dumps(BASE))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(field=st.sampled_from(REQUEST_FIELDS), value=json_values)
def test_any_value_in_any_request_field(aiosd_url, field, value):
    check(aiosd_url, replaced([field], value))


@FUZZ
@given(index=st.integers(0, len(BASE["messages"]) - 1), field=st.sampled_from(MESSAGE_FIELDS), value=json_values)
def test_any_value_in_any_message_field(aiosd_url, index, field, value):
    check(aiosd_url, replaced(["messages", index, field], value))


@FUZZ
@given(index=st.integers(0, len(BASE["messages"]) - 1), value=json_values)
def test_any_value_as_a_whole_message(aiosd_url, index, value):
    check(aiosd_url, replaced(["messages", index], value))


@FUZZ
@given(field=st.sampled_from(TOOL_FIELDS + [f"function.{f}" for f in FUNCTION_FIELDS]), value=json_values,
       whole=st.booleans())
def test_any_value_in_any_tool_field_or_as_a_whole_tool(aiosd_url, field, value, whole):
    if whole:
        check(aiosd_url, replaced(["tools", 0], value))
    else:
        check(aiosd_url, replaced(["tools", 0, *field.split(".")], value))


@FUZZ
@given(body=json_values)
def test_any_json_document_as_the_body(aiosd_url, body):
    check(aiosd_url, body)
