"""Prompt-mode tool calling: tools described in the system prompt, calls read out of the text.

The kernel loses text answers whenever tools are passed to it natively, so by default aiosd never
passes them: it tells the model to write calls as ``<function_calls>`` blocks, turns earlier calls
and results in the history into text in the same format, and parses the blocks out of the reply.

The format (the same one the seed plugin used and Claude-family models know)::

    <function_calls>
    <invoke name="read"><parameter name="path">a.txt</parameter></invoke>
    <invoke name="ls"/>
    </function_calls>

String values are written verbatim (no quoting, no escaping: file contents with ``<`` and ``&``
stay intact); other values are JSON and are converted to the types the tool's JSON Schema declares.

Decisions on the reply side (``parse_reply_text``):

- Calls from every well-formed block are returned, in order. Text before the first block is the
  content. Text after the first block is dropped: the model was told to stop there, and what it
  writes next is at best a guess at the results (often an invented ``<function_results>``).
- A ``<function_calls>`` that does not parse (e.g. the model mentions the tag in prose) is plain
  text, never an error. If no block parses, the whole reply is returned unchanged as text.
- A block cut off in the middle of an invoke (the kernel caps every answer at 1000 tokens, so a long
  ``write`` gets truncated) yields no calls: the text is returned with finish reason ``length``,
  so nothing half-written is executed. (``service.continuation`` first asks the kernel for the
  rest and parses the joined answer once.) A block whose invokes are complete but whose closing
  ``</function_calls>`` is missing is accepted.
- Calls to tools that were not offered are still returned: OpenClaw answers them with a "tool not
  found" result, which lets the model correct itself; dropping them would silently lose the turn.
- Parsing takes time linear in the reply's length, however it is crafted (``_ReplyScan``), and a
  reply longer than ``MAX_PARSED_REPLY_CHARS`` is not parsed at all: it is returned whole as text,
  with a warning for the log, so nothing is lost and nothing half-read is run.

This module also renders history for the ``none`` mode (tools not offered, earlier calls and
results still shown as text), because the rewriting is the same.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from aiosd.translate.byte_cache import ByteBoundedCache
from aiosd.translate.chat_request import (
    ChatRequest,
    DeveloperMessage,
    SystemMessage,
    Tool,
    ToolCallIn,
    ToolMessage,
    UserMessage,
    content_builtins,
    text_of,
)
from aiosd.translate.reply import Reply, ToolCall, new_call_id

# --- the system prompt ---------------------------------------------------------------------

_INSTRUCTIONS = """\
# Calling tools

You can call tools. To call tools, write a <function_calls> block in exactly this format:

<function_calls>
<invoke name="TOOL_NAME">
<parameter name="PARAMETER_NAME">VALUE</parameter>
</invoke>
<invoke name="TOOL_WITHOUT_PARAMETERS"/>
</function_calls>

- Write string values exactly as they are: no quotes around them, no escaping (newlines, <, > and & stay as they are).
- Write numbers, booleans, arrays and objects as JSON.
- Put several <invoke> elements in one block to call several tools; they run in order.
- Stop writing right after </function_calls>. The results come back to you in a <function_results> message; \
never write results yourself.
- Only call the tools listed below, with the parameters their JSON Schema declares.
- To answer without calling a tool, just write your answer as text."""


def render_tool_instructions(request: ChatRequest) -> str:
    """The text appended to the system prompt: how to call tools, tool_choice, and the tools."""
    rendered = _rendered(request.tools or ())
    lines = []
    forced = request.forced_tool
    if forced is not None:
        lines.append(f"- In this answer you must call the tool {forced}.")
    elif request.tool_choice_mode == "required":
        lines.append("- In this answer you must call at least one tool.")
    if request.parallel_tool_calls is False:
        lines.append("- Call at most one tool per answer.")
    if not lines:  # OpenClaw's turns: the same text every time
        return rendered.instructions
    return "\n".join((_INSTRUCTIONS, *lines, rendered.block))


class _Rendered(NamedTuple):
    tools: Sequence[Tool]
    block: str  # the <tools> block
    instructions: str  # the whole text when tool_choice is auto and parallel calls are allowed
    instructions_json: bytes  # that text as a JSON string, to append to a system prompt kept as JSON


# Rendered <tools> blocks by the identity of the tools list. parse_chat_request hands every request
# with the same raw tools the same (never changed) list, so OpenClaw's 12 tools with their ~10 KB of
# JSON Schemas are rendered once, not every turn (and the instructions around them, and their JSON:
# ~9 us a turn, mostly escaping the schemas' quotes). Each entry keeps its list alive, so an id is
# never reused while its entry exists. Bounded by the bytes it holds: an entry over
# BLOCK_CACHE_ENTRY_BYTES is rendered for its request only (issue 18 item 5). A block is rendered
# only for a request whose model was found: a refused request leaves nothing here.
BLOCK_CACHE_BYTES = 1024 * 1024
BLOCK_CACHE_ENTRY_BYTES = 256 * 1024
_BLOCKS: ByteBoundedCache[int, _Rendered] = ByteBoundedCache(
    max_entries=16, max_bytes=BLOCK_CACHE_BYTES, max_entry_bytes=BLOCK_CACHE_ENTRY_BYTES)


def _tools_block(tools: Sequence[Tool]) -> str:
    return _rendered(tools).block


def _rendered(tools: Sequence[Tool]) -> _Rendered:
    entry = _BLOCKS.get(id(tools))
    if entry is not None and entry.tools is tools:
        return entry
    lines = ["\nAvailable tools:\n<tools>"]
    for tool in tools:
        fn = tool.function
        lines.append(f'<tool name="{fn.name}">')
        if fn.description:
            lines.append(f"<description>{fn.description}</description>")
        if fn.parameters:
            # Compact JSON: the schemas are ~10 KB of OpenClaw's prompt; spaces are tokens.
            lines.append(f"<parameters>{compact_json(fn.parameters)}</parameters>")
        lines.append("</tool>")
    lines.append("</tools>")
    block = "\n".join(lines)
    instructions = f"{_INSTRUCTIONS}\n{block}"
    rendered = _Rendered(tools, block, instructions, _encode_json(instructions))
    _BLOCKS.put(id(tools), rendered, len(block) + len(instructions) + len(rendered.instructions_json))
    return rendered


def _json_string(text: str, tools: Sequence[Tool]) -> bytes:
    """``text`` as a JSON string: for the instructions ``render_tool_instructions`` gave for ``tools``,
    the one encoded when they were rendered."""
    entry = _BLOCKS.get(id(tools))
    if entry is not None and entry.instructions is text:
        return entry.instructions_json
    return _encode_json(text)


# --- history as text -----------------------------------------------------------------------


def history_as_text(request: ChatRequest, *, tool_instructions: str | None) -> list[dict]:
    """Kernel messages with no ``tool`` role and no ``tool_calls``: calls and results as text.

    ``tool_instructions`` (prompt mode) is appended to the first system/developer message, or
    becomes a new system message at the front. ``developer`` is sent as ``system`` (the kernel
    would do that anyway; doing it here keeps the kernel body honest in logs and tests).
    """
    out: list[dict] = []
    pending_calls: list[tuple[str, str]] = []  # (id, alphanumerics only; name) of the last calls
    results: list[str] = []
    instructions_placed = tool_instructions is None

    def flush_results() -> None:
        if results:
            joined = "\n".join(results)
            out.append({"role": "user", "content": f"<function_results>\n{joined}\n</function_results>"})
            results.clear()

    for message in request.messages:
        if isinstance(message, ToolMessage):
            name = _claim_call_name(pending_calls, message.tool_call_id)
            results.append(_render_result(name, text_of(message.content)))
            continue
        flush_results()
        if isinstance(message, (SystemMessage, DeveloperMessage)):
            content = content_builtins(message.content)
            if not instructions_placed and tool_instructions is not None:
                content = _append_text(content, tool_instructions, request.tools or ())
                instructions_placed = True
            out.append({"role": "system", "content": content})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": content_builtins(message.content)})
        else:  # AssistantMessage
            text = text_of(message.content)
            calls = message.tool_calls or []
            pending_calls = [(_alnum(call.id), call.function.name) for call in calls]
            if calls:
                block = render_calls(calls)
                text = f"{text.rstrip()}\n\n{block}" if text.strip() else block
            out.append({"role": "assistant", "content": text})
    flush_results()
    if not instructions_placed:
        out.insert(0, {"role": "system", "content": tool_instructions})
    return out


def render_calls(calls: Sequence[ToolCallIn]) -> str:
    """Earlier tool calls as the ``<function_calls>`` block the model would have written."""
    parts = ["<function_calls>"]
    for call in calls:
        name = call.function.name
        args = _arguments_object(call.function.arguments)
        if args is None:  # not a JSON object: show it whole rather than lose it
            shown = call.function.arguments
            parts.append(f'<invoke name="{name}">\n<parameter name="arguments">{shown}</parameter>\n</invoke>')
        elif not args:
            parts.append(f'<invoke name="{name}"/>')
        else:
            parts.append(f'<invoke name="{name}">')
            for key, value in args.items():
                shown = value if isinstance(value, str) else compact_json(value)
                parts.append(f'<parameter name="{key}">{shown}</parameter>')
            parts.append("</invoke>")
    parts.append("</function_calls>")
    return "\n".join(parts)


def _render_result(name: str | None, content: str) -> str:
    opening = f'<result name="{name}">' if name else "<result>"
    return f"{opening}\n{content}\n</result>"


def _claim_call_name(pending: list[tuple[str, str]], tool_call_id: str) -> str | None:
    """The tool name a result answers. OpenClaw strips non-alphanumerics from the ids it replays,
    so ids are compared on alphanumerics only; failing that, results answer calls in order."""
    if not pending:
        return None
    wanted = _alnum(tool_call_id)
    for i, (call_id, name) in enumerate(pending):
        if call_id == wanted:
            del pending[i]
            return name
    return pending.pop(0)[1]


def _alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def _append_text(
    content: str | list[dict] | msgspec.Raw, addition: str, tools: Sequence[Tool]
) -> str | list[dict] | msgspec.Raw:
    """``content`` + a blank line + ``addition``; a JSON string (the client's system prompt passed as
    is) stays JSON: OpenClaw's is ~50 KB, and decoding it to append text costs ~40 us per request."""
    if isinstance(content, msgspec.Raw):
        if len(content) == 2:  # ""
            return addition
        # Adjacent JSON strings join by dropping the quotes between them (an escape never spans one).
        added = memoryview(_json_string(addition, tools))
        return msgspec.Raw(b"".join((memoryview(content)[:-1], _BLANK_LINE_JSON, added[1:])))
    if isinstance(content, str):
        return f"{content}\n\n{addition}" if content else addition
    return [*content, {"type": "text", "text": addition}]


_BLANK_LINE_JSON = b"\\n\\n"  # "\n\n" as written inside a JSON string


def _arguments_object(arguments: str) -> dict | None:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def compact_json(value: Any) -> str:
    """Compact JSON text, key order kept (msgspec: ~5x faster than json.dumps on OpenClaw's schemas)."""
    try:
        return _encode_json(value).decode()
    except (TypeError, UnicodeEncodeError, OverflowError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_encode_json = msgspec.json.Encoder().encode


# --- reading calls out of the reply --------------------------------------------------------

# Replies longer than this are not searched for tool calls: they come back whole, as text, with a
# warning in the log (nothing is lost, nothing half-read is run). The kernel asks its LLM for at
# most 1000 tokens (about 4 KB); 512 Ki characters (~128k tokens) is above any model's output
# limit, and even a crafted reply that long parses in about a tenth of a second.
MAX_PARSED_REPLY_CHARS = 512 * 1024

_BLOCK_OPEN = "<function_calls>"
_BLOCK_CLOSE = "</function_calls>"
_INVOKE_CLOSE = "</invoke>"
_PARAM_CLOSE = "</parameter>"
_NAME_ATTR = r"""\s+name\s*=\s*(?:"([^"<>]*)"|'([^'<>]*)')\s*"""
_INVOKE_OPEN = re.compile(r"<invoke" + _NAME_ATTR + r"(/?)>")
_PARAM_OPEN = re.compile(r"<parameter" + _NAME_ATTR + r">")
# A value ends at the </parameter> that is followed by what may follow a parameter, so a
# value that itself contains "</parameter>" (a file about this format) survives.
_AFTER_PARAM = re.compile(r"\s*(?:<parameter\s|</invoke>|</function_calls>|$)")
_WHITESPACE = re.compile(r"\s*")
_TRAILING_FENCE = re.compile(r"\n?```[A-Za-z]*\s*$")
# The tags as translate.stitch reads them when it joins the pieces of an answer the kernel cut.
BLOCK_OPEN, BLOCK_CLOSE, INVOKE_CLOSE, PARAM_CLOSE = _BLOCK_OPEN, _BLOCK_CLOSE, _INVOKE_CLOSE, _PARAM_CLOSE
INVOKE_OPEN, PARAM_OPEN = _INVOKE_OPEN, _PARAM_OPEN


class _Malformed(Exception):
    """This <function_calls> is not a block: leave it in the text."""


class _Truncated(Exception):
    """The text ends inside an invoke: the answer was cut off."""


def parse_reply_text(text: str, tools: Sequence[Tool] | None, *, max_chars: int = MAX_PARSED_REPLY_CHARS) -> Reply:
    """The model's reply as content + tool calls (see the module docstring for the rules).

    A reply longer than ``max_chars`` is returned as text, unparsed, with a warning."""
    if len(text) > max_chars:
        return Reply(
            content=text,
            warning=(f"the reply ({len(text)} characters) is longer than the {max_chars} characters aiosd reads "
                     "tool calls from; returned as text, any tool calls in it are not run"),
            generated_chars=len(text),
        )
    schemas = {tool.function.name: tool.function.parameters for tool in tools or ()}
    scan = _ReplyScan(text)
    calls: list[tuple[str, dict[str, str]]] = []
    first_block_at: int | None = None
    truncated = False
    search_from = 0
    while (start := text.find(_BLOCK_OPEN, search_from)) != -1:
        try:
            block_calls, end = scan.block(start + len(_BLOCK_OPEN))
        except _Malformed:
            search_from = start + 1
            continue
        except _Truncated:
            truncated = True
            break
        if block_calls and first_block_at is None:
            first_block_at = start
        calls.extend(block_calls)
        search_from = end
    if not calls:
        return Reply(
            content=text,
            finish_reason="length" if truncated else "stop",
            warning="the reply ends inside a <function_calls> block (cut off?)" if truncated else None,
            generated_chars=len(text),
        )
    assert first_block_at is not None
    content = _TRAILING_FENCE.sub("", text[:first_block_at]).rstrip()
    tool_calls = [
        ToolCall(id=new_call_id(), name=name, arguments_json=compact_json(_typed_arguments(params, schemas.get(name))))
        for name, params in calls
    ]
    return Reply(content=content or None, tool_calls=tool_calls, finish_reason="tool_calls", generated_chars=len(text))


class _ReplyScan:
    """One reply's parse, linear in its length however it is crafted.

    A ``<function_calls>`` that turns out malformed is searched again from the next one, which may
    lie inside a parameter value of the first: the naive way re-reads the same tokens (and re-scans
    for the end of each value) from every such start, quadratic in the reply's length (a crafted
    1 MB reply blocked the event loop for 11 s). Here every place a value can end is found once, in
    one pass, and looked up by bisection; values are kept as offsets until their block is accepted
    (accepted blocks never overlap); and a token position from which a block turned out malformed
    is remembered, so a later attempt reaching it stops there: from a given position at a given
    depth (between invokes, or between parameters) the parse always ends the same way.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._closes: list[int] | None = None  # every "</parameter>", in order
        self._value_ends: list[int] = []  # those followed by what may follow a parameter
        self._dead_invoke_level: set[int] = set()
        self._dead_param_level: set[int] = set()

    def block(self, pos: int) -> tuple[list[tuple[str, dict[str, str]]], int]:
        """The invokes of one block starting after ``<function_calls>``, and where the block ends."""
        visited_invoke: list[int] = []
        visited_param: list[int] = []
        try:
            calls, end = self._block(pos, visited_invoke, visited_param)
        except _Malformed:
            self._dead_invoke_level.update(visited_invoke)
            self._dead_param_level.update(visited_param)
            raise
        text = self.text
        found = [(name, {key: text[a:b] for key, (a, b) in params.items()} if params else {}) for name, params in calls]
        return found, end

    def _block(
        self, pos: int, visited_invoke: list[int], visited_param: list[int]
    ) -> tuple[list[tuple[str, dict[str, tuple[int, int]] | None]], int]:
        text = self.text
        calls: list[tuple[str, dict[str, tuple[int, int]] | None]] = []  # None: no parameters
        end = len(text)
        while True:
            pos = _skip_space(text, pos)
            if pos == end:
                if calls:  # complete invokes, closing tag missing: accept
                    return calls, pos
                raise _Truncated
            if pos in self._dead_invoke_level:
                raise _Malformed
            visited_invoke.append(pos)
            if text.startswith(_BLOCK_CLOSE, pos):
                return calls, pos + len(_BLOCK_CLOSE)
            invoke = _INVOKE_OPEN.match(text, pos)
            if invoke is None:
                if _is_cut_tag(text, pos, ("<invoke", _BLOCK_CLOSE)):
                    raise _Truncated
                raise _Malformed
            name = invoke[1] if invoke[1] is not None else invoke[2]
            if not name:
                raise _Malformed
            pos = invoke.end()
            if invoke[3]:  # <invoke name="x"/>
                calls.append((name, None))
                continue
            params: dict[str, tuple[int, int]] = {}
            calls.append((name, params))
            while True:
                pos = _skip_space(text, pos)
                if pos == end:
                    raise _Truncated
                if pos in self._dead_param_level:
                    raise _Malformed
                visited_param.append(pos)
                if text.startswith(_INVOKE_CLOSE, pos):
                    pos += len(_INVOKE_CLOSE)
                    break
                if text.startswith(_BLOCK_CLOSE, pos):  # </invoke> forgotten
                    break
                param = _PARAM_OPEN.match(text, pos)
                if param is None:
                    if _is_cut_tag(text, pos, ("<parameter", _INVOKE_CLOSE, _BLOCK_CLOSE)):
                        raise _Truncated
                    raise _Malformed
                key = param[1] if param[1] is not None else param[2]
                value_start = param.end()
                value_end = self._value_end(value_start)
                if value_end is None:
                    raise _Truncated
                params[key] = (value_start, value_end)
                pos = value_end + len(_PARAM_CLOSE)

    def _value_end(self, start: int) -> int | None:
        """Where the value starting at ``start`` ends: the first ``</parameter>`` followed by what may
        follow a parameter, else the first ``</parameter>`` at all; None when there is none."""
        closes = self._closes if self._closes is not None else self._index_closes()
        i = bisect.bisect_left(self._value_ends, start)
        if i < len(self._value_ends):
            return self._value_ends[i]
        i = bisect.bisect_left(closes, start)
        return closes[i] if i < len(closes) else None

    def _index_closes(self) -> list[int]:
        text = self.text
        closes: list[int] = []
        at = text.find(_PARAM_CLOSE)
        while at != -1:
            closes.append(at)
            if _AFTER_PARAM.match(text, at + len(_PARAM_CLOSE)):
                self._value_ends.append(at)
            at = text.find(_PARAM_CLOSE, at + len(_PARAM_CLOSE))
        self._closes = closes
        return closes


def _skip_space(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not whitespace."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match is not None else pos


def _is_cut_tag(text: str, pos: int, tags: tuple[str, ...]) -> bool:
    """Whether the text ends in the middle of one of ``tags`` (e.g. ``<invoke name="wri``)."""
    if text.find(">", pos) != -1:
        return False
    rest = text[pos:]
    return any(rest.startswith(tag) or tag.startswith(rest) for tag in tags)


def _typed_arguments(params: dict[str, str], schema: Any) -> dict[str, Any]:
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        properties = {}
    return {key: convert_value(raw, properties.get(key)) for key, raw in params.items()}


_MISSING = object()


def convert_value(raw: str, schema: Any) -> Any:
    """A parameter's text as the type its JSON Schema declares; unconvertible text stays a string
    (OpenClaw validates arguments and tells the model what was wrong)."""
    types = _declared_types(schema)
    stripped = raw.strip()
    if types is None:  # undeclared or untyped: only unmistakable JSON containers are parsed
        if stripped[:1] in ("{", "["):
            value = _strict_json(stripped)
            if isinstance(value, (dict, list)):
                return value
        return raw
    if types <= {"string"}:
        return raw
    value = _strict_json(stripped)
    if value is not _MISSING:
        kind = _json_type(value)
        if kind in types:
            return value
        if kind == "integer" and "number" in types:
            return value
        if kind == "number" and "integer" in types and value.is_integer():
            return int(value)
    if "boolean" in types and stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return raw


def _declared_types(schema: Any) -> set[str] | None:
    """The JSON types a schema allows, or None when it does not say (no type, $ref, {})."""
    if not isinstance(schema, Mapping):
        return None
    types: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(t for t in declared if isinstance(t, str))
    for key in ("anyOf", "oneOf"):
        alternatives = schema.get(key)
        if isinstance(alternatives, list):
            for alternative in alternatives:
                sub = _declared_types(alternative)
                if sub is None:
                    return None
                types |= sub
    if not types:
        if "const" in schema:
            types.add(_json_type(schema["const"]))
        elif isinstance(schema.get("enum"), list) and schema["enum"]:
            types.update(_json_type(v) for v in schema["enum"])
        elif "properties" in schema:
            types.add("object")
        elif "items" in schema:
            types.add("array")
    return types or None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_json(text: str) -> Any:
    """json.loads without NaN/Infinity (they would make the arguments invalid JSON)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _MISSING
