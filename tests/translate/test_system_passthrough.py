"""The system prompt goes to the kernel as the client's own JSON (not decoded and encoded again), same meaning."""

from __future__ import annotations

import json

import msgspec
import pytest

from aiosd.errors import InvalidRequest
from aiosd.translate.chat_request import parse_chat_request, raw_content
from aiosd.translate.query import build_kernel_call
from tests.support.chat_fixtures import model, openclaw_tools, recorded_body

# Non-ASCII, quotes, backslashes, newlines, a control character, an escaped emoji pair and a
# \u escape of plain ASCII: every way a client may write the same text.
SYSTEM_JSON = '"Tu es l\\u2019agent \\"Oz\\" \\\\ \u00e9t\u00e9\\n\\tfin \\u0001 \\ud83d\\ude00 \\u0041 \U0001f600 —"'


def body_with_system(role: str = "system", tools: bool = True, system_json: str = SYSTEM_JSON) -> bytes:
    messages = f'[{{"role": "{role}", "content": {system_json}}}, {{"role": "user", "content": "hi"}}]'
    extra = f', "tools": {json.dumps(openclaw_tools())}' if tools else ""
    return f'{{"model": "sonnet", "messages": {messages}{extra}}}'.encode()


@pytest.mark.parametrize("role", ["system", "developer"])
@pytest.mark.parametrize("tools", [True, False])
@pytest.mark.parametrize("mode", ["prompt", "native", "none"])
def test_the_kernel_gets_exactly_the_text_the_client_sent(role, tools, mode):
    request = parse_chat_request(body_with_system(role, tools))
    text = json.loads(SYSTEM_JSON)
    assert request.messages[0].content == text
    sent = json.loads(build_kernel_call(request, model(tools=mode), "aiosd").content)
    system = sent["query_data"]["messages"][0]
    assert system["role"] == "system"
    if tools and mode == "prompt":
        assert system["content"].startswith(text + "\n\n")
        assert "<tools>" in system["content"] or "read" in system["content"]
    else:
        assert system["content"] == text
    assert sent["query_data"]["messages"][1] == {"role": "user", "content": "hi"}


def test_the_passed_through_body_is_the_one_a_fresh_encoding_would_make():
    # The recorded OpenClaw turn (50 KB, not ASCII): the spliced bytes decode to what encoding the
    # decoded text would have produced.
    raw = json.dumps(recorded_body("chat-completions-text-turn", 0)).encode()
    request = parse_chat_request(raw)
    assert raw_content(request.messages[0]) is not None
    call = build_kernel_call(request, model(tools="prompt"), "aiosd")
    sent = msgspec.json.decode(call.content)
    # Rebuild without the pass-through: the same request, its system message's raw JSON dropped.
    del request.messages[0].raw_content
    rebuilt = build_kernel_call(request, model(tools="prompt"), "aiosd")
    assert sent == msgspec.json.decode(rebuilt.content)
    assert call.prompt_bytes == pytest.approx(rebuilt.prompt_bytes, rel=0.05)


def test_a_system_prompt_of_text_parts_or_of_the_wrong_type_is_not_passed_through():
    parts = parse_chat_request(body_with_system(system_json='[{"type": "text", "text": "x\\u00e9"}]'))
    assert raw_content(parts.messages[0]) is None
    sent = json.loads(build_kernel_call(parts, model(tools="prompt"), "aiosd").content)
    assert sent["query_data"]["messages"][0]["content"][0] == {"type": "text", "text": "x\u00e9"}
    with pytest.raises(InvalidRequest, match=r"messages\[0\]"):
        parse_chat_request(body_with_system(system_json="42"))


def test_a_lone_surrogate_in_the_system_prompt_is_still_repaired():
    request = parse_chat_request(body_with_system(system_json='"cut \\ud83d here"'))
    assert request.messages[0].content == "cut \ufffd here"
    sent = json.loads(build_kernel_call(request, model(tools="none"), "aiosd").content)
    assert sent["query_data"]["messages"][0]["content"] == "cut \ufffd here"
