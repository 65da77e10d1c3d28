"""The system prompt goes to the kernel as the client's own JSON (never decoded on the way), same meaning."""

from __future__ import annotations

import json

import msgspec
import pytest

from aiosd.api.responses import estimate_usage
from aiosd.errors import InvalidRequest
from aiosd.translate import chat_request
from aiosd.translate.chat_request import JsonText, SystemMessage, parse_chat_request, text_of
from aiosd.translate.query import build_kernel_call
from aiosd.translate.reply import Reply
from aiosd.translate.tool_prompt import render_tool_instructions
from tests.support.chat_fixtures import model, openclaw_tools, recorded_body

# Non-ASCII, quotes, backslashes, newlines, a control character, an escaped emoji pair, a \u
# escape of plain ASCII, an escaped slash: every way a client may write the same text.
SYSTEM_JSON = ('"Tu es l\\u2019agent \\"Oz\\" \\\\ \u00e9t\u00e9\\n\\tfin \\u0001 \\ud83d\\ude00 \\u0041 \\/ '
               '\U0001f600 —"')


def body_with_system(role: str = "system", tools: bool = True, system_json: str = SYSTEM_JSON) -> bytes:
    messages = f'[{{"role": "{role}", "content": {system_json}}}, {{"role": "user", "content": "hi"}}]'
    extra = f', "tools": {json.dumps(openclaw_tools())}' if tools else ""
    return f'{{"model": "sonnet", "messages": {messages}{extra}}}'.encode()


def sent_messages(request, mode: str) -> list[dict]:
    return json.loads(build_kernel_call(request, model(tools=mode), "aiosd").content)["query_data"]["messages"]


@pytest.mark.parametrize("role", ["system", "developer"])
@pytest.mark.parametrize("tools", [True, False])
@pytest.mark.parametrize("mode", ["prompt", "native", "none"])
def test_the_kernel_gets_exactly_the_text_the_client_sent(role, tools, mode):
    request = parse_chat_request(body_with_system(role, tools))
    text = json.loads(SYSTEM_JSON)
    content = request.messages[0].content
    assert isinstance(content, JsonText) and content.text == text and text_of(content) == text
    system, user = sent_messages(request, mode)
    assert system["role"] == "system"
    if tools and mode == "prompt":
        assert system["content"].startswith(text + "\n\n# Calling tools\n")
        assert system["content"].endswith("</tools>") and '<tool name="read">' in system["content"]
    else:
        assert system["content"] == text
    assert user == {"role": "user", "content": "hi"}


def test_the_client_json_is_written_into_the_query_body_as_it_came():
    # Escapes the client chose (\u2019, \/) stay as written: the bytes were never decoded.
    request = parse_chat_request(body_with_system())
    assert SYSTEM_JSON[:-1].encode() in build_kernel_call(request, model(tools="prompt"), "aiosd").content
    for mode in ("native", "none"):
        assert SYSTEM_JSON.encode() in build_kernel_call(request, model(tools=mode), "aiosd").content


def recorded_as_msgspec_writes_it() -> bytes:
    # The recorded OpenClaw turn (50 KB system prompt, not ASCII) as compact UTF-8 JSON with
    # msgspec's escapes (as OpenClaw's JSON.stringify writes it), so a fresh encoding of the
    # decoded text is byte for byte what the client sent.
    return msgspec.json.encode(recorded_body("chat-completions-text-turn", 0))


@pytest.mark.parametrize("mode", ["prompt", "native", "none"])
def test_the_recorded_turn_is_byte_identical_to_a_fresh_encoding(mode):
    request = parse_chat_request(recorded_as_msgspec_writes_it())
    content = request.messages[0].content
    assert isinstance(content, JsonText) and len(content.raw) > 40_000
    call = build_kernel_call(request, model(tools=mode), "aiosd")
    # The same request with the system prompt decoded (a str goes through the full encoding).
    request.messages[0] = SystemMessage(content.text)
    fresh = build_kernel_call(request, model(tools=mode), "aiosd")
    assert call.content == fresh.content
    assert call.prompt_bytes == pytest.approx(fresh.prompt_bytes, rel=0.05)  # JSON size: an estimate


@pytest.mark.parametrize("mode", ["prompt", "native", "none"])
def test_the_recorded_turn_written_with_other_escapes_means_the_same(mode):
    # json.dumps writes every non-ASCII character as a \u escape (what bench/ sends).
    raw = json.dumps(recorded_body("chat-completions-text-turn", 0)).encode()
    request = parse_chat_request(raw)
    content = request.messages[0].content
    assert isinstance(content, JsonText)
    call = build_kernel_call(request, model(tools=mode), "aiosd")
    request.messages[0] = SystemMessage(content.text)
    fresh = build_kernel_call(request, model(tools=mode), "aiosd")
    assert msgspec.json.decode(call.content) == msgspec.json.decode(fresh.content)
    assert call.prompt_bytes == pytest.approx(fresh.prompt_bytes, rel=0.05)  # JSON size: an estimate


def test_usage_is_estimated_from_the_json_size_of_the_system_prompt():
    request = parse_chat_request(recorded_as_msgspec_writes_it())
    content = request.messages[0].content
    from_json = estimate_usage(request, Reply("")).prompt_tokens
    sent = estimate_usage(build_kernel_call(request, model(tools="native"), "aiosd"), Reply("")).prompt_tokens
    request.messages[0] = SystemMessage(content.text)
    from_text = estimate_usage(request, Reply("")).prompt_tokens
    assert from_text > 12_000
    assert from_json == pytest.approx(from_text, rel=0.05)
    assert abs(sent - from_json) < 500


@pytest.mark.parametrize("choice", [
    {"tool_choice": "auto"}, {"tool_choice": "required"}, {"parallel_tool_calls": False},
    {"tool_choice": {"type": "function", "function": {"name": "read"}}},
])
def test_the_tool_instructions_for_each_tool_choice_follow_the_system_prompt(choice):
    raw = body_with_system().replace(b'"model": "sonnet"', b'"model": "sonnet", ' + json.dumps(choice)[1:-1].encode())
    request = parse_chat_request(raw)
    instructions = render_tool_instructions(request)
    assert sent_messages(request, "prompt")[0]["content"] == f"{json.loads(SYSTEM_JSON)}\n\n{instructions}"


def test_an_empty_system_prompt_becomes_the_tool_instructions_alone():
    request = parse_chat_request(body_with_system(system_json='""'))
    system = sent_messages(request, "prompt")[0]
    assert system["content"].startswith("# Calling tools\n")
    assert sent_messages(request, "none")[0] == {"role": "system", "content": ""}


def test_only_the_first_system_prompt_gets_the_tool_instructions():
    raw = body_with_system(system_json='"one"').replace(
        b'{"role": "user"', b'{"role": "developer", "content": "two"}, {"role": "user"')
    request = parse_chat_request(raw)
    assert all(isinstance(m.content, JsonText) for m in request.messages[:2])
    first, second, _user = sent_messages(request, "prompt")
    assert first["content"].startswith("one\n\n# Calling tools\n")
    assert second == {"role": "system", "content": "two"}


def test_a_system_prompt_in_plain_utf8_is_passed_byte_for_byte():
    prompt = '"été → naïve \U0001f600 \\n"'
    raw = body_with_system(system_json=prompt)
    request = parse_chat_request(raw)
    assert request.messages[0].content.text == "été → naïve \U0001f600 \n"
    assert prompt.encode() in build_kernel_call(request, model(tools="native"), "aiosd").content


@pytest.mark.parametrize("role", ["system", "developer"])
@pytest.mark.parametrize("bad", [b'"ok \xff"', b'"cut \xc3"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"'])
def test_a_system_prompt_that_is_not_utf8_is_refused_as_before(role, bad):
    raw = body_with_system(role, system_json="SYSTEM").replace(b"SYSTEM", bad)
    with pytest.raises(InvalidRequest, match=r"^Invalid request: body is not valid JSON \(Invalid UTF-8"):
        parse_chat_request(raw)


def test_a_system_prompt_like_one_already_checked_is_checked_again():
    # Prompts found valid are remembered by length (OpenClaw sends the same one every turn).
    good = body_with_system(system_json='"ok \u00e9 ok"')
    assert parse_chat_request(good).messages[0].content.text == "ok \u00e9 ok"
    bad = good.replace("\u00e9".encode(), b"\xff\xfe")
    assert len(bad) == len(good)
    with pytest.raises(InvalidRequest, match="Invalid UTF-8"):
        parse_chat_request(bad)
    assert parse_chat_request(good).messages[0].content.text == "ok \u00e9 ok"


def test_the_checked_prompts_held_stay_bounded():
    for size in range(12):
        parse_chat_request(body_with_system(system_json=json.dumps("\u00e9" * (40_000 + size), ensure_ascii=False)))
    assert 0 < chat_request._CHECKED_PROMPTS.size <= chat_request.CHECKED_PROMPTS_BYTES


def test_a_system_prompt_of_text_parts_is_sent_as_parts():
    parts = parse_chat_request(body_with_system(system_json='[{"type": "text", "text": "x\\u00e9"}]'))
    assert not isinstance(parts.messages[0].content, JsonText)
    assert sent_messages(parts, "prompt")[0]["content"][0] == {"type": "text", "text": "x\u00e9"}
    assert sent_messages(parts, "native")[0]["content"] == [{"type": "text", "text": "x\u00e9"}]


@pytest.mark.parametrize("role", ["system", "developer"])
@pytest.mark.parametrize(("content", "error"), [
    ("42", "messages[0].content: expected str | array, got int"),
    ('{"text": "x"}', "messages[0].content: expected str | array, got object"),
    ("true", "messages[0].content: expected str | array, got bool"),
    ("null", "messages[0].content: expected str | array, got null"),
    ('[{"type": "image_url", "image_url": {"url": "x"}}]', "messages[0].content[0].type: invalid value 'image_url'"),
    ('"a\\x"', "body is not valid JSON (JSON is malformed: invalid escape character in string"),
])
def test_a_system_prompt_of_the_wrong_type_is_refused_naming_the_field(role, content, error):
    with pytest.raises(InvalidRequest) as refused:
        parse_chat_request(body_with_system(role, system_json=content))
    assert str(refused.value).startswith("Invalid request: " + error)


@pytest.mark.parametrize(("written", "text"), [
    ('"cut \\ud83d here"', "cut \ufffd here"),
    ('"\\ude00 low"', "\ufffd low"),
    ('"\\ud83d\\u0041"', "\ufffdA"),
    ('"end \\ud83d"', "end \ufffd"),
])
@pytest.mark.parametrize("mode", ["prompt", "none"])
def test_a_lone_surrogate_in_the_system_prompt_is_still_repaired(written, text, mode):
    request = parse_chat_request(body_with_system(system_json=written))
    assert request.messages[0].content == text  # the repairing path decodes it: a str
    assert sent_messages(request, mode)[0]["content"].startswith(text)
