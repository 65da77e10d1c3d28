"""Prompt mode: tools described in the system prompt, calls written and read back as <function_calls> text."""

from __future__ import annotations

import json
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.tool_prompt import (
    MAX_PARSED_REPLY_CHARS,
    convert_value,
    history_as_text,
    parse_reply_text,
    render_tool_instructions,
)
from tests.support.chat_fixtures import body, openclaw_tools

TOOLS = parse_chat_request(body([{"role": "user", "content": "x"}], tools=openclaw_tools())).tools


def request(messages, **extra):
    return parse_chat_request(body(messages, **extra))


# --- the instructions ----------------------------------------------------------------------


def test_instructions_describe_every_tool_with_its_schema_and_the_call_format():
    text = render_tool_instructions(request([{"role": "user", "content": "x"}], tools=openclaw_tools()))
    for tool in openclaw_tools():
        fn = tool["function"]
        assert f'<tool name="{fn["name"]}">' in text
        assert fn["description"] in text
        assert json.dumps(fn["parameters"], separators=(",", ":")) in text
    assert '<invoke name="TOOL_WITHOUT_PARAMETERS"/>' in text
    assert "<function_calls>" in text and "</function_calls>" in text
    assert "must call" not in text


def test_instructions_follow_tool_choice():
    tools = [{"type": "function", "function": {"name": "read"}}, {"type": "function", "function": {"name": "ls"}}]
    msgs = [{"role": "user", "content": "x"}]
    assert "must call at least one tool" in render_tool_instructions(request(msgs, tools=tools, tool_choice="required"))
    ls_only = {"type": "function", "function": {"name": "ls"}}
    named = render_tool_instructions(request(msgs, tools=tools, tool_choice=ls_only))
    assert "must call the tool ls" in named
    assert "at most one tool" in render_tool_instructions(request(msgs, tools=tools, parallel_tool_calls=False))


def test_instructions_go_at_the_end_of_the_first_system_message():
    req = request(
        [{"role": "developer", "content": "SYSTEM"}, {"role": "user", "content": "hi"}], tools=openclaw_tools()
    )
    out = history_as_text(req, tool_instructions="TOOLS HERE")
    # As the kernel reads them (the system prompt goes as the client's own JSON, a msgspec.Raw).
    sent = msgspec.json.decode(msgspec.json.encode(out))
    assert sent == [{"role": "system", "content": "SYSTEM\n\nTOOLS HERE"}, {"role": "user", "content": "hi"}]


def test_instructions_become_a_system_message_when_there_is_none():
    out = history_as_text(request([{"role": "user", "content": "hi"}]), tool_instructions="TOOLS HERE")
    assert out[0] == {"role": "system", "content": "TOOLS HERE"}


def test_instructions_are_a_new_text_part_when_the_system_prompt_is_a_list():
    req = request([{"role": "system", "content": [{"type": "text", "text": "S"}]}, {"role": "user", "content": "hi"}])
    out = history_as_text(req, tool_instructions="TOOLS")
    assert out[0]["content"] == [{"type": "text", "text": "S"}, {"type": "text", "text": "TOOLS"}]


# --- history -------------------------------------------------------------------------------


def _call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_history_calls_and_results_become_text_without_tool_roles():
    req = request(
        [
            {"role": "user", "content": "look around"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                _call("call_a1", "ls", "{}"),
                _call("call_b2", "read", json.dumps({"path": "a.txt", "offset": 3})),
            ]},
            {"role": "tool", "tool_call_id": "calla1", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "callb2", "content": "hello <b> & bye"},
            {"role": "user", "content": [{"type": "text", "text": "runtime context"}]},
        ]
    )
    out = history_as_text(req, tool_instructions=None)
    assert [m["role"] for m in out] == ["user", "assistant", "user", "user"]
    assert all("tool_calls" not in m for m in out)
    assert out[1]["content"] == (
        "Let me look.\n\n<function_calls>\n<invoke name=\"ls\"/>\n<invoke name=\"read\">\n"
        '<parameter name="path">a.txt</parameter>\n<parameter name="offset">3</parameter>\n</invoke>\n</function_calls>'
    )
    assert out[2]["content"] == (
        '<function_results>\n<result name="ls">\na.txt\n</result>\n'
        '<result name="read">\nhello <b> & bye\n</result>\n</function_results>'
    )
    assert out[3]["content"] == [{"type": "text", "text": "runtime context"}]


def test_results_are_matched_by_stripped_id_then_by_position():
    req = request(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [_call("call_1-a", "ls", "{}"), _call("call_2-b", "read", "{}")],
            },
            # OpenClaw replays ids without punctuation, and here in the other order
            {"role": "tool", "tool_call_id": "call2b", "content": "R"},
            {"role": "tool", "tool_call_id": "completely-different", "content": "L"},
        ]
    )
    results = history_as_text(req, tool_instructions=None)[2]["content"]
    assert '<result name="read">\nR\n</result>\n<result name="ls">\nL\n</result>' in results


def test_arguments_that_are_not_an_object_are_shown_not_lost():
    req = request(
        [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [_call("c", "exec", "ls -la")]}]
    )
    rendered = history_as_text(req, tool_instructions=None)[1]["content"]
    assert '<parameter name="arguments">ls -la</parameter>' in rendered


def test_arguments_nested_deeper_than_json_can_follow_are_shown_not_a_crash():
    deep = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it
    req = request([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [_call("c", "exec", deep)]}])
    rendered = history_as_text(req, tool_instructions=None)[1]["content"]
    assert f'<parameter name="arguments">{deep}</parameter>' in rendered


# --- parsing the reply ---------------------------------------------------------------------


def _args(reply):
    return [(call.name, json.loads(call.arguments_json)) for call in reply.tool_calls]


def test_several_calls_several_blocks_self_closing_and_text_before():
    text = (
        "I'll check.\n<function_calls>\n<invoke name=\"read\">\n<parameter name=\"path\">a.txt</parameter>\n</invoke>\n"
        "<invoke name=\"ls\"/>\n</function_calls>\nand also\n"
        "<function_calls><invoke name=\"ls\"></invoke></function_calls>"
        "\n<function_results>invented</function_results>"
    )
    reply = parse_reply_text(text, TOOLS)
    assert reply.content == "I'll check."
    assert reply.finish_reason == "tool_calls"
    assert _args(reply) == [("read", {"path": "a.txt"}), ("ls", {}), ("ls", {})]
    assert [c.arguments_json for c in reply.tool_calls][1:] == ["{}", "{}"]
    ids = [c.id for c in reply.tool_calls]
    assert len(set(ids)) == 3 and all(i.startswith("call_") for i in ids)


def test_a_reply_that_is_only_calls_has_no_content():
    reply = parse_reply_text('<function_calls><invoke name="ls"/></function_calls>', TOOLS)
    assert reply.content is None and _args(reply) == [("ls", {})]


def test_plain_text_is_returned_unchanged():
    text = "  Hello <b>world</b> & friends\n"
    reply = parse_reply_text(text, TOOLS)
    assert reply.content == text and reply.tool_calls == [] and reply.finish_reason == "stop"


def test_values_are_converted_to_the_types_the_schema_declares():
    text = (
        "<function_calls>"
        '<invoke name="read"><parameter name="path">007</parameter><parameter name="offset"> 12 </parameter>'
        '<parameter name="limit">2.5</parameter><parameter name="optional">True</parameter></invoke>'
        '<invoke name="process"><parameter name="action">list</parameter>'
        '<parameter name="keys">["C-c", "Enter"]</parameter>'
        '<parameter name="eof">false</parameter></invoke>'
        '<invoke name="exec"><parameter name="command">echo 1</parameter><parameter name="env">{"A": "1"}</parameter>'
        '<parameter name="timeoutSeconds">30</parameter></invoke>'
        '<invoke name="tool_search"><parameter name="query">null</parameter>'
        '<parameter name="limit">5</parameter></invoke>'
        "</function_calls>"
    )
    assert _args(parse_reply_text(text, TOOLS)) == [
        ("read", {"path": "007", "offset": 12, "limit": 2.5, "optional": True}),
        ("process", {"action": "list", "keys": ["C-c", "Enter"], "eof": False}),
        ("exec", {"command": "echo 1", "env": {"A": "1"}, "timeoutSeconds": 30}),
        ("tool_search", {"query": None, "limit": 5}),
    ]


def test_string_values_are_kept_verbatim_with_newlines_and_markup():
    content = "\n<html>\n  a < b && c > d\n  &amp; </parameter> stays\n</html>\n"
    text = (
        '<function_calls><invoke name="write"><parameter name="path">x.html</parameter>'
        f'<parameter name="content">{content}</parameter></invoke></function_calls>'
    )
    assert _args(parse_reply_text(text, TOOLS)) == [("write", {"path": "x.html", "content": content})]


@pytest.mark.parametrize(
    ("raw", "schema", "expected"),
    [
        ("5", {"type": "integer"}, 5),
        ("5.0", {"type": "integer"}, 5),
        ("five", {"type": "integer"}, "five"),  # left for OpenClaw's validation to report
        ("-3", {"type": "number"}, -3),
        ("NaN", {"type": "number"}, "NaN"),
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ("not json", {"type": "object"}, "not json"),
        ("true", {"const": True}, True),
        ("message", {"type": "string", "const": "message"}, "message"),
        ("42", {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}, 42),
        ("42", {"type": ["string", "null"]}, "42"),
        ("42", {"type": "string"}, "42"),
        ('{"k": 1}', {}, {"k": 1}),  # untyped: unmistakable JSON containers only
        ("42", {}, "42"),
        ("42", None, "42"),  # undeclared parameter
        ("x", {"enum": ["x", "y"]}, "x"),
    ],
)
def test_convert_value(raw, schema, expected):
    assert convert_value(raw, schema) == expected
    assert type(convert_value(raw, schema)) is type(expected)


def test_unknown_tools_are_returned_for_openclaw_to_report():
    reply = parse_reply_text(
        '<function_calls><invoke name="no_such_tool"><parameter name="n">1</parameter></invoke></function_calls>', TOOLS
    )
    assert _args(reply) == [("no_such_tool", {"n": "1"})]


def test_a_mention_of_the_tag_in_prose_is_text_and_a_later_block_still_counts():
    text = 'Blocks start with `<function_calls>` as you know.\n<function_calls><invoke name="ls"/></function_calls>'
    reply = parse_reply_text(text, TOOLS)
    assert reply.content == "Blocks start with `<function_calls>` as you know."
    assert _args(reply) == [("ls", {})]


@pytest.mark.parametrize(
    "text",
    [
        "<function_calls>oops</function_calls>",
        '<function_calls><invoke name="">x</invoke></function_calls>',
        '<function_calls><invoke name="ls"><param>1</param></invoke></function_calls>',
        "<function_calls></function_calls>",
    ],
)
def test_malformed_blocks_are_plain_text(text):
    reply = parse_reply_text(text, TOOLS)
    assert reply.content == text and reply.tool_calls == [] and reply.finish_reason == "stop"


def test_a_block_cut_off_mid_invoke_is_text_with_finish_length():
    text = (
        'Writing it.\n<function_calls><invoke name="write"><parameter name="path">a</parameter>'
        '<parameter name="content">half a fi'
    )
    reply = parse_reply_text(text, TOOLS)
    assert reply.tool_calls == [] and reply.content == text and reply.finish_reason == "length"
    assert reply.warning


def test_a_missing_closing_tag_after_complete_invokes_is_accepted():
    reply = parse_reply_text('Go.\n<function_calls>\n<invoke name="ls"/>\n', TOOLS)
    assert _args(reply) == [("ls", {})] and reply.content == "Go."


def test_a_code_fence_around_the_block_does_not_leak_into_the_content():
    reply = parse_reply_text('Here:\n```xml\n<function_calls><invoke name="ls"/></function_calls>\n```', TOOLS)
    assert reply.content == "Here:"


def test_rendered_history_parses_back_to_the_same_calls():
    calls = [
        _call("c1", "exec", json.dumps({"command": "cat <<EOF\na & b\nEOF", "timeoutSeconds": 5, "env": {"X": "1"}})),
        _call("c2", "ls", ""),
    ]
    req = request([{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": calls}])
    rendered = history_as_text(req, tool_instructions=None)[1]["content"]
    assert _args(parse_reply_text(rendered, TOOLS)) == [
        ("exec", {"command": "cat <<EOF\na & b\nEOF", "timeoutSeconds": 5, "env": {"X": "1"}}),
        ("ls", {}),
    ]


# --- fuzzing: malformed call text never raises ----------------------------------------------

FRAGMENTS = st.sampled_from(
    ["<function_calls>", "</function_calls>", '<invoke name="read">', '<invoke name="ls"/>', "<invoke name='x'>",
     "</invoke>", '<parameter name="path">', '<parameter name="offset">', '<parameter name="optional">',
     "</parameter>", "<invoke", "<parameter", '"', "<", ">", "/", "\n", " ", "1", "true", "[1,", "{}", "text", "&", "`"]
)


@settings(max_examples=400)
@given(st.lists(FRAGMENTS | st.text(max_size=5), max_size=30).map("".join))
def test_fuzz_reply_text_never_raises_and_output_is_well_formed(text):
    reply = parse_reply_text(text, TOOLS)
    if reply.tool_calls:
        assert reply.finish_reason == "tool_calls"
        for call in reply.tool_calls:
            assert isinstance(json.loads(call.arguments_json), dict)
            assert call.name
    else:
        assert reply.content == text
        assert reply.finish_reason in ("stop", "length")


# --- hostile replies: linear time, bounded size ---------------------------------------------------

MIB = 1 << 20


def crafted_reply(kind: str, size: int) -> str:
    """Worst cases for a parser that re-reads: many ``<function_calls>`` that turn out malformed only
    after scanning far ahead, or that all lead into the same long run of tokens before failing."""
    half = size // 2
    opener = '<function_calls><invoke name="a"><parameter name="p">'
    if kind == "value_end_far_ahead":
        unit = '<function_calls><invoke name="a"><parameter name="p">x</parameter>y'
        return (unit * (size // len(unit) + 1))[:size]
    if kind == "converging_invokes":
        unit = '<invoke name="b"/>'
        return opener * (half // len(opener)) + "</parameter></invoke>" + unit * (half // len(unit)) + "junk"
    unit = '<parameter name="q">v</parameter>'  # converging_params
    return opener * (half // len(opener)) + "</parameter>" + unit * (half // len(unit)) + "junk"


def parse_seconds(*texts: str, rounds: int = 5) -> list[float]:
    """CPU seconds of this thread to parse each text: the least of ``rounds`` interleaved runs (other
    processes on the machine only ever add time, and interleaving exposes every text to the same)."""
    best = [float("inf")] * len(texts)
    for _ in range(rounds):
        for i, text in enumerate(texts):
            started = time.thread_time()
            reply = parse_reply_text(text, TOOLS, max_chars=len(text))
            best[i] = min(best[i], time.thread_time() - started)
            assert reply.tool_calls == [] and reply.content == text  # all of it malformed: text, unchanged
    return best


@pytest.mark.timeout(120)  # the quadratic parser needed minutes for the 1 MB replies
@pytest.mark.parametrize("kind", ["value_end_far_ahead", "converging_invokes", "converging_params"])
def test_crafted_replies_parse_in_time_linear_in_their_size(kind):
    small, large = parse_seconds(crafted_reply(kind, MIB), crafted_reply(kind, 2 * MIB))
    assert large <= 2.5 * small, f"1 MB: {small:.3f}s, 2 MB: {large:.3f}s"


def test_a_reply_over_the_size_limit_is_returned_as_text_unparsed_with_a_warning():
    call = '<function_calls><invoke name="ls"/></function_calls>'
    at_limit = "x" * (MAX_PARSED_REPLY_CHARS - len(call)) + call
    assert _args(parse_reply_text(at_limit, TOOLS)) == [("ls", {})]
    over = "x" + at_limit
    reply = parse_reply_text(over, TOOLS)
    assert reply.tool_calls == [] and reply.content == over and reply.finish_reason == "stop"
    assert f"longer than the {MAX_PARSED_REPLY_CHARS} characters" in reply.warning
    # A crafted reply over the limit costs nothing to handle.
    started = time.perf_counter()
    reply = parse_reply_text(crafted_reply("converging_invokes", 4 * MIB), TOOLS)
    assert reply.warning and time.perf_counter() - started < 0.05
