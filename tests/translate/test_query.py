"""What the kernel gets for OpenClaw's recorded requests in each tool mode, and how its answers are read."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosd.errors import AiosdError, KernelBadAnswer, KernelTextDropped
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call
from tests.support.chat_fixtures import (
    MODEL,
    body,
    model,
    openclaw_tools,
    recorded_body,
    recorded_requests,
)

RECORDED = recorded_requests()
MODES = ("prompt", "native", "none")
# The read tool's result in the recorded round trip, as the kernel's user message shows it.
READ_RESULT = '<function_results>\n<result name="read">\nhello from MOCK_README\n\n</result>\n</function_results>'


def kernel_answer(message, tool_calls=None, error=None):
    return {"response_class": "llm", "response_message": message, "tool_calls": tool_calls,
            "finished": True, "error": error, "status_code": 200}


def roundtrip_request():
    return parse_chat_request(json.dumps(recorded_body("chat-completions-tool-roundtrip", 1)).encode())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "raw"), RECORDED, ids=[name for name, _ in RECORDED])
def test_recorded_requests_become_a_well_formed_kernel_query(name, raw, mode):
    sent = json.loads(raw)
    call = build_kernel_call(parse_chat_request(raw), model(tools=mode), "openclaw")
    assert call.tool_mode == mode
    assert set(call.body) == {"agent_name", "query_type", "query_data"}
    assert call.body["agent_name"] == "openclaw" and call.body["query_type"] == "llm"
    data = call.body["query_data"]
    assert set(data) == {"messages", "llms", "tools", "action_type", "message_return_type"}
    assert data["llms"] == [{"name": "claude-sonnet", "backend": "anthropic"}]
    assert data["action_type"] == "chat" and data["message_return_type"] == "text"
    messages = data["messages"]
    json.dumps(call.body)  # plain JSON values only
    # the system prompt and the runtime-context message (last, a list of parts) arrive intact
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith(sent["messages"][0]["content"])
    assert messages[-1] == sent["messages"][-1]
    assert not {"temperature", "max_tokens", "max_new_tokens", "tool_choice"} & set(data)  # the kernel drops them
    system = messages[0]["content"]
    if mode == "native":
        assert data["tools"] == sent["tools"]
        assert system == sent["messages"][0]["content"]
    else:
        assert data["tools"] == []
        assert all(m["role"] in ("system", "user", "assistant") and "tool_calls" not in m for m in messages)
        described = all(f'<tool name="{t["function"]["name"]}">' in system for t in sent["tools"])
        assert described == (mode == "prompt")


@pytest.mark.parametrize("mode", ("prompt", "none"))
def test_round_trip_history_is_rendered_as_text(mode):
    messages = build_kernel_call(roundtrip_request(), model(tools=mode), "openclaw").body["query_data"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    assert messages[2]["content"] == (
        '<function_calls>\n<invoke name="read">\n<parameter name="path">MOCK_README.txt</parameter>\n'
        "</invoke>\n</function_calls>"
    )
    assert messages[3]["content"] == READ_RESULT


def test_round_trip_history_is_passed_natively_in_native_mode():
    messages = build_kernel_call(roundtrip_request(), model(tools="native"), "openclaw").body["query_data"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[2]["tool_calls"][0]["function"] == {"name": "read", "arguments": '{"path":"MOCK_README.txt"}'}
    assert messages[3] == {"role": "tool", "tool_call_id": "calla4f6d485f4e2", "content": "hello from MOCK_README\n"}


def test_developer_is_sent_as_system():
    raw = body([{"role": "developer", "content": "D"}, {"role": "user", "content": "hi"}], tools=openclaw_tools())
    for mode in MODES:
        messages = build_kernel_call(parse_chat_request(raw), model(tools=mode), "a").body["query_data"]["messages"]
        assert messages[0]["role"] == "system" and messages[0]["content"].startswith("D")


def test_native_falls_back_to_prompt_for_backends_whose_tool_path_is_broken():
    for backend in ("vllm", "sglang"):
        call = build_kernel_call(roundtrip_request(), model(tools="native", backend=backend), "a")
        assert call.tool_mode == "prompt" and call.body["query_data"]["tools"] == []
        assert backend in call.note


def test_no_tools_or_tool_choice_none_offers_no_tools():
    plain = parse_chat_request(body([{"role": "user", "content": "hi"}]))
    refused = parse_chat_request(body([{"role": "user", "content": "hi"}], tools=openclaw_tools(), tool_choice="none"))
    for request in (plain, refused):
        for mode in MODES:
            call = build_kernel_call(request, model(tools=mode), "a")
            assert call.tool_mode == "none" and call.body["query_data"]["tools"] == []
            assert call.body["query_data"]["messages"] == [{"role": "user", "content": "hi"}]


def test_retry_without_tools_override_resends_the_same_conversation_as_text():
    call = build_kernel_call(roundtrip_request(), model(tools="native"), "a", tool_mode_override="none")
    data = call.body["query_data"]
    assert call.tool_mode == "none" and data["tools"] == []
    assert "<function_calls>" in data["messages"][2]["content"]


def test_an_unknown_backend_is_not_sent_and_an_empty_kernel_model_is_refused():
    call = build_kernel_call(roundtrip_request(), model(backend=None), "a")
    assert call.body["query_data"]["llms"] == [{"name": "claude-sonnet"}]
    with pytest.raises(AiosdError):  # an llms entry without a name hangs the kernel's batch
        build_kernel_call(roundtrip_request(), model(kernel_model=""), "a")


# --- decoding ------------------------------------------------------------------------------


def first_turn_call(mode):
    raw = json.dumps(recorded_body("chat-completions-tool-roundtrip", 0)).encode()
    return build_kernel_call(parse_chat_request(raw), model(tools=mode), "openclaw")


def test_full_round_trip_through_prompt_mode():
    # 1. the model asks for a tool in text
    reply = first_turn_call("prompt").decode(kernel_answer(
        'Let me read it.\n<function_calls>\n<invoke name="read">\n<parameter name="path">MOCK_README.txt</parameter>\n'
        '<parameter name="offset">1</parameter>\n</invoke>\n</function_calls>'
    ))
    assert reply.finish_reason == "tool_calls" and reply.content == "Let me read it."
    (call,) = reply.tool_calls
    assert call.name == "read" and json.loads(call.arguments_json) == {"path": "MOCK_README.txt", "offset": 1}
    # 2. OpenClaw replays the call (id without punctuation) and the result
    first = recorded_body("chat-completions-tool-roundtrip", 0)
    replay = dict(first, messages=[
        *first["messages"][:2],
        {"role": "assistant", "content": reply.content, "tool_calls": [
            {"id": call.id.replace("_", ""), "type": "function",
             "function": {"name": call.name, "arguments": call.arguments_json}}]},
        {"role": "tool", "tool_call_id": call.id.replace("_", ""), "content": "hello from MOCK_README\n"},
        first["messages"][2],
    ])
    replayed = build_kernel_call(parse_chat_request(json.dumps(replay).encode()), MODEL, "openclaw")
    messages = replayed.body["query_data"]["messages"]
    assert messages[2] == {"role": "assistant", "content": (
        'Let me read it.\n\n<function_calls>\n<invoke name="read">\n'
        '<parameter name="path">MOCK_README.txt</parameter>\n'
        '<parameter name="offset">1</parameter>\n</invoke>\n</function_calls>')}
    assert messages[3]["content"] == READ_RESULT
    # 3. the final text answer
    final = build_kernel_call(parse_chat_request(json.dumps(replay).encode()), MODEL, "openclaw").decode(
        kernel_answer("It says hello."))
    assert final.content == "It says hello." and final.finish_reason == "stop" and final.tool_calls == []


def test_none_mode_never_turns_text_into_calls():
    request = first_turn_call("prompt").request
    none_call = build_kernel_call(request, MODEL, "a", tool_mode_override="none")
    text = '<function_calls><invoke name="ls"/></function_calls>'
    assert none_call.decode(kernel_answer(text)).content == text


def test_native_decode_maps_calls_and_detects_dropped_text():
    call = first_turn_call("native")
    reply = call.decode(kernel_answer(None, [{"name": "read", "parameters": {"path": "a"}, "id": "call_9"}]))
    assert reply.finish_reason == "tool_calls" and reply.tool_calls[0].arguments_json == '{"path":"a"}'
    with pytest.raises(KernelTextDropped):
        call.decode(kernel_answer(None, []))


def test_the_kernels_literal_None_means_no_content_when_it_warns():
    reply = first_turn_call("prompt").decode(kernel_answer("None", error="LLM returned no content"))
    assert reply.content == "" and reply.finish_reason == "stop" and reply.tool_calls == []
    assert "no content" in reply.warning
    # without the kernel's warning, "None" is what the model said
    assert first_turn_call("prompt").decode(kernel_answer("None")).content == "None"


@pytest.mark.parametrize("answer", [[], {"response_message": 5}, "text"])
def test_answers_that_are_not_answers_are_bad_answers(answer):
    with pytest.raises(KernelBadAnswer):
        first_turn_call("prompt").decode(answer)


# --- fuzzing: whatever parses, builds and decodes without surprises -------------------------

part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}) | st.fixed_dictionaries(
    {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": st.text(max_size=10)})})
tool_call = st.fixed_dictionaries({
    "id": st.text(max_size=8), "type": st.just("function"),
    "function": st.fixed_dictionaries(
        {"name": st.sampled_from(["read", "ls", "a/b", "x__y", "?"]), "arguments": st.text(max_size=20)}
    ),
})
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": st.text(max_size=20)}),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=20) | st.lists(part, max_size=3)}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none() | st.text(max_size=20),
                           "tool_calls": st.none() | st.lists(tool_call, max_size=3)}),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "tool_call_id": st.text(max_size=8), "content": st.text(max_size=20)}
    ),
)
fuzz_tools = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["read", "ls", "a/b", "x__y"]),
     "parameters": st.just({"type": "object", "properties": {"n": {"type": "integer"}}})})}),
    max_size=3)


@settings(max_examples=200)
@given(st.lists(message, min_size=1, max_size=6), fuzz_tools, st.sampled_from(MODES),
       st.text(max_size=60)
       | st.just('<function_calls><invoke name="read"><parameter name="n">3</parameter></invoke></function_calls>'))
def test_fuzz_conversations_build_and_decode(messages, tools, mode, answer):
    request = parse_chat_request(body(messages, tools=tools or None))
    call = build_kernel_call(request, model(tools=mode), "openclaw")
    json.dumps(call.body)
    if call.tool_mode != "native":
        assert all(m["role"] != "tool" and "tool_calls" not in m for m in call.body["query_data"]["messages"])
        reply = call.decode(kernel_answer(answer))
    else:
        reply = call.decode(kernel_answer(answer or "x"))
    for tc in reply.tool_calls:
        assert isinstance(json.loads(tc.arguments_json), dict)
