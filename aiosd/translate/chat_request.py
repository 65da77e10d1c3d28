"""The incoming OpenAI chat completion request: its typed shape and ``parse_chat_request``.

Only parsing and validation live here (no I/O, no kernel knowledge). Validation is strict about
types because the kernel is not: an integer ``content`` comes back as a fake 503 and an empty
``messages`` list as a 400 buried in a 200. Unknown fields anywhere are ignored, as OpenAI does,
so newer OpenClaw versions keep working.

Decoding uses ``msgspec`` typed structs: one pass over the bytes that both parses and checks
types. On the 61 KB OpenClaw fixture it takes about 85 us, less than ``json.loads`` alone
(about 110 us) before any hand check, and its errors carry the JSON path of the bad field.
The ``tools`` array is first kept as raw JSON and decoded once per distinct list (OpenClaw sends
the same ~10 KB of tools every turn), and a system or developer prompt written as a string is never
decoded: it stays the client's JSON (``JsonText``) all the way into the /query body (OpenClaw's is
~50 KB; decoding it cost ~40 us a turn). A body with any problem is decoded again fully typed, so
its error names the field exactly as a one-pass decode would.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Literal

import msgspec

from aiosd.errors import InvalidRequest
from aiosd.translate.byte_cache import ByteBoundedCache

# --- content parts -------------------------------------------------------------------------


class TextPart(msgspec.Struct, tag_field="type", tag="text", omit_defaults=True):
    text: str


class ImageURL(msgspec.Struct, omit_defaults=True):
    url: str
    detail: str | None = None


class ImagePart(msgspec.Struct, tag_field="type", tag="image_url", omit_defaults=True):
    image_url: ImageURL


class RefusalPart(msgspec.Struct, tag_field="type", tag="refusal", omit_defaults=True):
    """Only in assistant history: OpenAI lets an earlier refusal be replayed."""

    refusal: str


UserPart = TextPart | ImagePart
AssistantPart = TextPart | RefusalPart

# --- messages ------------------------------------------------------------------------------


class FunctionCallIn(msgspec.Struct):
    name: str
    # OpenAI sends a JSON string; kept as sent (it may be "" or not even JSON).
    arguments: str = ""


class ToolCallIn(msgspec.Struct):
    """An earlier tool call replayed in the history (``id`` may have lost its punctuation)."""

    function: FunctionCallIn
    id: str = ""
    type: Literal["function"] = "function"


class JsonText:
    """A string ``content`` kept as the JSON string the client sent (quotes and escapes included).

    ``parse_chat_request`` keeps a system or developer prompt so rather than decode it: OpenClaw's
    is ~50 KB, sent every turn, and only ever written back into the /query body, where it goes as
    is (``content_builtins`` gives the ``msgspec.Raw``; prompt mode appends the tool instructions to
    the JSON). ``raw`` is valid JSON and valid UTF-8, with no lone surrogate (``_system_from``).
    ``text`` decodes it, for the rare reader that wants the text itself.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: msgspec.Raw) -> None:
        self.raw: Final = raw

    @property
    def text(self) -> str:
        """The string itself (decoded on each call: nothing on the request path reads it)."""
        return _str_decoder.decode(self.raw)

    def __repr__(self) -> str:
        return f"JsonText({len(self.raw)} bytes of JSON)"


SystemContent = str | list[TextPart] | JsonText


class SystemMessage(msgspec.Struct, tag_field="role", tag="system"):
    """``content`` is a ``JsonText`` when the client sent a string (see ``parse_chat_request``)."""

    content: SystemContent
    name: str | None = None


class DeveloperMessage(msgspec.Struct, tag_field="role", tag="developer"):
    """As ``SystemMessage``."""

    content: SystemContent
    name: str | None = None


class UserMessage(msgspec.Struct, tag_field="role", tag="user"):
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(msgspec.Struct, tag_field="role", tag="assistant"):
    content: str | list[AssistantPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    name: str | None = None


class ToolMessage(msgspec.Struct, tag_field="role", tag="tool"):
    content: str | list[TextPart]
    tool_call_id: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage

# --- tools ---------------------------------------------------------------------------------


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    # The JSON Schema of the arguments; free-form, only read to convert prompt-mode values.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tool name must not be empty")


class Tool(msgspec.Struct):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: NamedFunction
    type: Literal["function"] = "function"


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


# --- the request ---------------------------------------------------------------------------


class ChatRequest(msgspec.Struct):
    """A validated chat completion request. Build it with ``parse_chat_request``.

    Optional fields accept ``null`` as OpenAI does. Read the derived values through the
    properties (``tool_choice_mode``, ``forced_tool``, ``include_usage``, ``max_output_tokens``)
    rather than the raw fields.
    """

    model: str
    messages: list[Message]
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    # Kept for logging and a future kernel that honours them; today's kernel drops both.
    temperature: float | None = None
    top_p: float | None = None

    @property
    def is_stream(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def max_output_tokens(self) -> int | None:
        """``max_completion_tokens`` (current SDKs) or else the legacy ``max_tokens``."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def tool_choice_mode(self) -> Literal["auto", "none", "required"]:
        """``auto`` | ``none`` | ``required``; a named function counts as ``required``."""
        choice = self.tool_choice
        if choice is None:
            return "auto"
        if isinstance(choice, NamedToolChoice):
            return "required"
        return choice  # type: ignore[return-value]  # checked by parse_chat_request

    @property
    def forced_tool(self) -> str | None:
        """The tool the client demands by name (``tool_choice: {"type":"function",...}``)."""
        choice = self.tool_choice
        return choice.function.name if isinstance(choice, NamedToolChoice) else None

    @property
    def offers_tools(self) -> bool:
        """Whether the model may call tools in this answer."""
        return bool(self.tools) and self.tool_choice_mode != "none"


class _WireSystemMessage(msgspec.Struct, tag_field="role", tag="system"):
    content: msgspec.Raw
    name: str | None = None


class _WireDeveloperMessage(msgspec.Struct, tag_field="role", tag="developer"):
    content: msgspec.Raw
    name: str | None = None


class _WireChatRequest(ChatRequest):
    """ChatRequest as decoded from the wire: ``tools`` kept as its raw JSON, for ``_tools_from``, and the
    system prompts' content too (``_system_from``)."""

    messages: list[  # type: ignore[assignment]  # the wire's shape; parse_chat_request makes Message of each
        _WireSystemMessage | _WireDeveloperMessage | UserMessage | AssistantMessage | ToolMessage]
    tools: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # type: ignore[assignment]


class _TypedSystemMessage(SystemMessage, tag="system"):
    """A system message decoded fully typed (a string stays a str): msgspec cannot decode ``JsonText``."""

    content: str | list[TextPart]


class _TypedDeveloperMessage(DeveloperMessage, tag="developer"):
    content: str | list[TextPart]


class _TypedChatRequest(ChatRequest):
    """ChatRequest decoded in one typed pass (the slow path: bad input, lone surrogates)."""

    messages: list[  # type: ignore[assignment]  # each of these is a Message
        _TypedSystemMessage | _TypedDeveloperMessage | UserMessage | AssistantMessage | ToolMessage]


_wire_decoder = msgspec.json.Decoder(_WireChatRequest)
_decoder = msgspec.json.Decoder(_TypedChatRequest)
_tools_decoder = msgspec.json.Decoder(list[Tool] | None)
_system_content_decoder = msgspec.json.Decoder(str | list[TextPart])
_str_decoder = msgspec.json.Decoder(str)
# Decoded tool lists by their raw JSON. OpenClaw sends the same ~10 KB of tools every turn; decoding
# them into structs (and rendering them for prompt mode, see tool_prompt) is then done once. The
# lists are shared between requests: nothing may change them. Bounded by the raw bytes it holds: a
# list over TOOLS_CACHE_ENTRY_BYTES is decoded for its request only, and a list is kept only the
# second time it is seen (_TOOLS_SEEN holds the hashes of recent ones), so requests with one-off
# tools (refused, or hostile) leave nothing behind (issue 18 item 5: 18 distinct 24 MB lists were
# 900 MB held for good).
TOOLS_CACHE_BYTES = 1024 * 1024
TOOLS_CACHE_ENTRY_BYTES = 256 * 1024
_TOOLS_CACHE: ByteBoundedCache[bytes, list[Tool]] = ByteBoundedCache(
    max_entries=16, max_bytes=TOOLS_CACHE_BYTES, max_entry_bytes=TOOLS_CACHE_ENTRY_BYTES)
_TOOLS_SEEN: dict[int, None] = {}
_TOOLS_SEEN_SIZE = 64
_TOOL_CHOICE_WORDS = frozenset(("auto", "none", "required"))
# A JSON \\u escape of a UTF-16 surrogate (lone ones are legal JSON that msgspec refuses).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_chat_request(body: bytes) -> ChatRequest:
    """Parse and validate a request body; any problem raises ``InvalidRequest`` naming the field."""
    try:
        wire = _wire_decoder.decode(body)
        tools = _tools_from(wire.tools)
        request = ChatRequest(
            wire.model, [_system_from(m) if isinstance(m, _SYSTEMS) else m for m in wire.messages], tools,
            wire.tool_choice, wire.parallel_tool_calls, wire.stream, wire.stream_options,
            wire.max_completion_tokens, wire.max_tokens, wire.temperature, wire.top_p,
        )
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # Bad input (or lone surrogates): the fully typed decoder's answer, with its exact message.
        request = _parse_typed(body)
    _check_semantics(request)
    return request


_SYSTEMS = (_WireSystemMessage, _WireDeveloperMessage)


def _system_from(wire: _WireSystemMessage | _WireDeveloperMessage) -> SystemMessage | DeveloperMessage:
    """The typed message; a string content stays the client's JSON (``JsonText``), not decoded.

    msgspec checked that JSON while skipping it for the ``Raw`` (escapes, control characters,
    surrogate pairs: a lone ``\\ud83d`` fails the whole wire decode and takes the repairing path)
    but not its UTF-8, checked here. Content of another type is decoded as before: the wrong type
    raises ValidationError, bad UTF-8 DecodeError, and the caller decodes the body again typed for
    the exact message.
    """
    raw = wire.content
    content: SystemContent
    if memoryview(raw)[0] == _QUOTE:
        _check_utf8(raw)
        content = JsonText(raw)
    else:
        content = _system_content_decoder.decode(raw)
    if isinstance(wire, _WireSystemMessage):
        return SystemMessage(content, wire.name)
    return DeveloperMessage(content, wire.name)


_QUOTE = ord('"')
# System prompts found valid UTF-8, by their length. OpenClaw sends the same ~50 KB prompt every
# turn: comparing it with the one checked last time (~1 us) costs less than checking it again (~15 us
# when it is not ASCII, ~4 us when it is; decoding the JSON string took ~40). Bounded by the bytes
# it holds, as the tools cache is; each entry is its own copy (not the body it came in).
CHECKED_PROMPTS_BYTES = 512 * 1024
_CHECKED_PROMPTS: ByteBoundedCache[int, msgspec.Raw] = ByteBoundedCache(
    max_entries=8, max_bytes=CHECKED_PROMPTS_BYTES, max_entry_bytes=CHECKED_PROMPTS_BYTES // 2)


def _check_utf8(raw: msgspec.Raw) -> None:
    """Raise DecodeError (as decoding the string would) unless ``raw`` is valid UTF-8."""
    size = len(raw)
    checked = _CHECKED_PROMPTS.get(size)
    if checked is not None and checked == raw:
        return
    try:
        str(raw, "utf-8")
    except UnicodeDecodeError:
        raise msgspec.DecodeError("Invalid UTF-8 encoded string") from None
    _CHECKED_PROMPTS.put(size, raw.copy(), size)


def _parse_typed(body: bytes) -> ChatRequest:
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(_describe_validation_error(exc)) from None
    except msgspec.DecodeError as exc:
        return _decode_with_lone_surrogates(body, exc)
    except RecursionError:
        raise InvalidRequest("Invalid request: JSON nested too deeply") from None
    except UnicodeDecodeError:  # msgspec before 0.19 (the floor is 0.18.6) raises it for a string not UTF-8
        raise InvalidRequest("Invalid request: body is not valid JSON (Invalid UTF-8 encoded string)") from None


def _tools_from(raw: msgspec.Raw) -> list[Tool] | None:
    """The typed tools for their raw JSON, decoded once per distinct tools list (see _TOOLS_CACHE)."""
    if not raw:
        return None
    key = bytes(raw)
    tools = _TOOLS_CACHE.get(key)
    if tools is None:
        tools = _tools_decoder.decode(key)
        if tools is None:  # "tools": null
            return None
        if len(key) <= TOOLS_CACHE_ENTRY_BYTES:
            seen = hash(key)
            if seen in _TOOLS_SEEN:
                _TOOLS_CACHE.put(key, tools, len(key))
            else:
                if len(_TOOLS_SEEN) >= _TOOLS_SEEN_SIZE:
                    del _TOOLS_SEEN[next(iter(_TOOLS_SEEN))]
                _TOOLS_SEEN[seen] = None
    return tools


def _decode_with_lone_surrogates(body: bytes, exc: msgspec.DecodeError) -> ChatRequest:
    """Accept JSON that carries lone UTF-16 surrogates, replacing them with U+FFFD.

    OpenClaw caps tool output at a byte count and can cut an emoji's surrogate pair in half;
    JavaScript's JSON.stringify then writes a lone ``\\ud83d``. Refusing it would fail the turn
    for good (a 400 is not retried), so this slow path repairs the text instead.
    """
    if not _SURROGATE_ESCAPE.search(body):
        raise InvalidRequest(f"Invalid request: body is not valid JSON ({exc})") from None
    try:
        data = replace_lone_surrogates(json.loads(body))
        return msgspec.convert(data, _TypedChatRequest)
    except msgspec.ValidationError as exc2:
        raise InvalidRequest(_describe_validation_error(exc2)) from None
    except (ValueError, RecursionError):
        raise InvalidRequest(f"Invalid request: body is not valid JSON ({exc})") from None


def replace_lone_surrogates(value: Any) -> Any:
    """``value`` (JSON-like: strings, lists, dicts) with every lone UTF-16 surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {replace_lone_surrogates(k): replace_lone_surrogates(v) for k, v in value.items()}
    return value


def _describe_validation_error(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `str`, got `int` - at `$.messages[2].content`" as
    "Invalid request: messages[2].content: expected str, got int"."""
    text = str(exc)
    what, sep, where = text.rpartition(" - at `")
    if not sep:
        what, where = text, "$"
    path = where.rstrip("`").removeprefix("$").removeprefix(".") or "body"
    what = what.replace("`", "")
    what = what[:1].lower() + what[1:]
    return f"Invalid request: {path}: {what}"


def _check_semantics(request: ChatRequest) -> None:
    """What types alone cannot say. Each check prevents a kernel hang or a misleading error."""
    if not request.model:
        raise InvalidRequest("Invalid request: model: must not be empty")
    if not request.messages:
        raise InvalidRequest("Invalid request: messages: must contain at least one message")
    choice = request.tool_choice
    if isinstance(choice, str) and choice not in _TOOL_CHOICE_WORDS:
        raise InvalidRequest(
            f"Invalid request: tool_choice: expected 'auto', 'none', 'required' or a function, got {choice!r}"
        )
    if isinstance(choice, NamedToolChoice):
        names = {tool.function.name for tool in request.tools or ()}
        if choice.function.name not in names:
            raise InvalidRequest(
                f"Invalid request: tool_choice.function.name: {choice.function.name!r} is not in tools"
            )
    if request.tool_choice_mode == "required" and not request.tools:
        raise InvalidRequest("Invalid request: tool_choice: 'required' needs at least one tool")


def text_of(content: str | list | JsonText | None) -> str:
    """The text of a message's content: the string, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, JsonText):
        return content.text
    return "\n".join(
        part.text if isinstance(part, TextPart) else part.refusal
        for part in content
        if isinstance(part, (TextPart, RefusalPart))
    )


def content_builtins(content: str | list | JsonText) -> str | list[dict] | msgspec.Raw:
    """Message content as plain JSON values for the kernel (parts as ``{"type": ...}`` dicts), or a
    ``JsonText`` as the client's JSON (``msgspec.Raw``: written into the /query body as it is)."""
    if isinstance(content, str):
        return content
    if isinstance(content, JsonText):
        return content.raw
    parts: list[dict] = msgspec.to_builtins(content)  # a list of part structs becomes a list of dicts
    return parts
