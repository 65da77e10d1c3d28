"""The Anthropic Messages dialect (OpenClaw's ``api: "anthropic-messages"``): request in, response and SSE out.

An Anthropic request is rewritten into the OpenAI chat shape and then goes through exactly the
same validation, translation and forwarding as ``/v1/chat/completions``; only the outer shape
differs. What does not live here: anything about the kernel.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec

from aiosd.api.responses import Usage
from aiosd.errors import AiosdError, InvalidRequest
from aiosd.translate.chat_request import ChatRequest, parse_chat_request, replace_lone_surrogates
from aiosd.translate.reply import Reply

_encode_strict = msgspec.json.Encoder().encode


def _encode(value: Any) -> bytes:
    """Compact JSON; a lone UTF-16 surrogate (legal in JSON text, possible in a request or model output)
    becomes U+FFFD, as on /v1/chat/completions."""
    try:
        return _encode_strict(value)
    except UnicodeEncodeError:
        return _encode_strict(replace_lone_surrogates(value))

_STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def parse_messages_request(body: bytes) -> ChatRequest:
    """A validated ChatRequest for an Anthropic Messages body; InvalidRequest naming the field otherwise."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Invalid request: the body is not JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest("Invalid request: JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidRequest("Invalid request: the body must be a JSON object")
    try:
        chat = _encode(to_openai_chat(document))
    except RecursionError:  # json.loads took it, but re-encoding a deep tool schema may not
        raise InvalidRequest("Invalid request: JSON nested too deeply") from None
    return parse_chat_request(chat)


def to_openai_chat(doc: dict) -> dict:
    """The OpenAI chat-completions body equivalent to an Anthropic Messages body."""
    messages: list[dict] = []
    system = doc.get("system")
    if system is not None:
        messages.append({"role": "system", "content": _text_blocks(system, "system")})
    raw_messages = doc.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidRequest("Invalid request: messages: expected an array of messages")
    for index, message in enumerate(raw_messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"Invalid request: {where}.role: expected 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
        elif isinstance(content, list):
            (_assistant_blocks if message["role"] == "assistant" else _user_blocks)(content, where, messages)
        else:
            raise InvalidRequest(f"Invalid request: {where}.content: expected a string or an array of blocks")
    chat: dict[str, Any] = {"model": doc.get("model"), "messages": messages, "stream": bool(doc.get("stream"))}
    if isinstance(doc.get("max_tokens"), int):
        chat["max_tokens"] = doc["max_tokens"]
    tools = doc.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
        choice = _tool_choice(doc.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
    return chat


def _text_blocks(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, block in enumerate(value):
            if not isinstance(block, dict) or not isinstance(block.get("text", ""), str):
                raise InvalidRequest(f"Invalid request: {where}[{i}]: expected a text block")
            if block.get("type", "text") == "text":
                texts.append(block.get("text", ""))
        return "\n\n".join(texts)
    raise InvalidRequest(f"Invalid request: {where}: expected a string or an array of text blocks")


def _user_blocks(blocks: list, where: str, out: list[dict]) -> None:
    parts: list[dict] = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, f"{where}.content[{i}]")}})
        elif kind == "tool_result":
            # OpenAI order: tool results follow the assistant's calls, before the user's new text.
            text = _text_blocks(block.get("content", ""), f"{where}.content[{i}].content")
            if block.get("is_error"):
                text = f"[tool error] {text}"
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise InvalidRequest(f"Invalid request: {where}.content[{i}]: unsupported block type {kind!r}")
    if parts:
        out.append({"role": "user", "content": parts})


def _assistant_blocks(blocks: list, where: str, out: list[dict]) -> None:
    texts: list[str] = []
    calls: list[dict] = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            name = block.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"Invalid request: {where}.content[{i}].name: expected a tool name")
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append({"id": str(block.get("id") or f"toolu_{i}"), "type": "function",
                          "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise InvalidRequest(f"Invalid request: {where}.content[{i}]: unsupported block type {kind!r}")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    out.append(message)


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        source = {}
    data, url = source.get("data"), source.get("url")
    if source.get("type") == "base64" and isinstance(data, str):
        return f"data:{source.get('media_type', 'image/png')};base64,{data}"
    if source.get("type") == "url" and isinstance(url, str):
        return url
    raise InvalidRequest(f"Invalid request: {where}.source: expected a base64 or url image source")


def _tool(tool: Any, where: str) -> dict:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InvalidRequest(f"Invalid request: {where}.name: expected a tool name")
    function: dict[str, Any] = {"name": tool["name"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("input_schema"), dict):
        function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    choices: dict[Any, str] = {"auto": "auto", "any": "required", "none": "none"}
    return choices.get(kind)


# --- output ------------------------------------------------------------------------------------


def _content_blocks(reply: Reply) -> list[dict]:
    blocks: list[dict] = []
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments_json)})
    return blocks


def message_body(reply: Reply, *, model_id: str, message_id: str, usage: Usage) -> bytes:
    """The non-streaming Messages response."""
    return _encode({
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model_id,
        "content": _content_blocks(reply),
        "stop_reason": _STOP_REASONS.get(reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    })


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def iter_message_events(reply: Reply, *, model_id: str, message_id: str, usage: Usage) -> Iterator[bytes]:
    """message_start, one content block per text/tool call (start, delta, stop), message_delta, message_stop."""
    events = MessageEvents(model_id=model_id, message_id=message_id, input_tokens=usage.prompt_tokens)
    yield events.opening()
    yield from events.rest(reply, usage)


class MessageEvents:
    """The events of one streamed Messages response: ``opening``, ``text`` deltas, then ``rest``.

    A continued answer (``service.continuation``) is streamed as its pieces arrive: ``text`` opens
    the text block and sends the final text so far; ``rest`` (told how much of the text went out)
    sends the remainder, closes the block, then the tool_use blocks and the stop reason."""

    __slots__ = ("_input_tokens", "_message_id", "_model_id", "_next_index", "_text_open")

    def __init__(self, *, model_id: str, message_id: str, input_tokens: int) -> None:
        self._model_id = model_id
        self._message_id = message_id
        self._input_tokens = input_tokens
        self._text_open = False
        self._next_index = 0

    def opening(self) -> bytes:
        return _event("message_start", {"type": "message_start", "message": {
            "id": self._message_id, "type": "message", "role": "assistant", "model": self._model_id, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }})

    def text(self, delta: str) -> bytes:
        start = b""
        if not self._text_open:
            self._text_open = True
            start = self._block_start({"type": "text", "text": ""})
        delta_event = {"type": "text_delta", "text": delta}
        return start + _event("content_block_delta", {"type": "content_block_delta", "index": self._next_index - 1,
                                                      "delta": delta_event})

    def _block_start(self, block: dict[str, Any]) -> bytes:
        index = self._next_index
        self._next_index += 1
        return _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

    def _block_stop(self) -> bytes:
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._next_index - 1})

    def rest(self, reply: Reply, usage: Usage, *, sent: int = 0) -> Iterator[bytes]:
        """The text after its first ``sent`` characters, the tool_use blocks, message_delta, message_stop."""
        remaining = reply.content[sent:] if reply.content else ""
        if remaining:
            yield self.text(remaining)
        if self._text_open:
            yield self._block_stop()
        for call in reply.tool_calls:
            arguments = json.loads(call.arguments_json)
            yield self._block_start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(arguments, ensure_ascii=False)}
            yield _event("content_block_delta",
                         {"type": "content_block_delta", "index": self._next_index - 1, "delta": delta})
            yield self._block_stop()
        yield _event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASONS.get(reply.finish_reason, "end_turn"), "stop_sequence": None},
            "usage": {"output_tokens": usage.completion_tokens},
        })
        yield _event("message_stop", {"type": "message_stop"})


def error_body(err: AiosdError) -> bytes:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = _ERROR_TYPES.get(err.status, "api_error")
    return _encode({"type": "error", "error": {"type": kind, "message": err.message}})
