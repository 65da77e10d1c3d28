"""OpenAI-shaped output bytes: the chat.completion body, the SSE frames, usage estimates, error bodies.

Everything is encoded here, in one place, as compact JSON with a fixed key order, so what a
client receives is byte-for-byte predictable (and testable against the OpenAI SDK's types).

Usage is an *estimate*: the kernel reports none. ``estimate_usage`` counts what was actually
sent to the model (the messages as aiosd rewrote them, tool descriptions included) and what the
model generated, at 4 UTF-8 bytes per token (about right for English and code; for scripts with
multi-byte letters the byte count keeps the estimate from collapsing), plus 4 tokens per message
for the role markup and 765 tokens per image (OpenAI's figure for a 1024x1024 image in high
detail). The HTTP layer says so in a response header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from aiosd.errors import AiosdError
from aiosd.translate.chat_request import ChatRequest, JsonText, content_builtins, replace_lone_surrogates, text_of
from aiosd.translate.query import KernelCall
from aiosd.translate.reply import Reply

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765

DONE_FRAME = b"data: [DONE]\n\n"

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def estimate_usage(sent: KernelCall | ChatRequest, reply: Reply) -> Usage:
    """Estimated token counts (see the module docstring for the method).

    Pass the ``KernelCall`` that produced the reply: it knows the text actually sent. A bare
    ``ChatRequest`` is measured as the client sent it (tools as JSON).
    """
    if isinstance(sent, KernelCall):
        prompt_bytes, images = sent.prompt_bytes, sent.prompt_images
        messages = sent.message_count
    else:
        prompt_bytes, images = _request_size(sent)
        messages = len(sent.messages)
    prompt = _tokens(prompt_bytes) + TOKENS_PER_MESSAGE * messages + TOKENS_PER_IMAGE * images
    generated = reply.generated_chars or len(reply.content or "") + sum(
        len(call.name) + len(call.arguments_json) for call in reply.tool_calls
    )
    completion = _tokens(generated)
    return Usage(prompt, completion, prompt + completion)


def _tokens(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)


def _request_size(request: ChatRequest) -> tuple[int, int]:
    size = 0
    images = 0
    for message in request.messages:
        content = getattr(message, "content", None)
        if isinstance(content, list):
            parts = content_builtins(content)  # a list in, a list out
            images += sum(1 for part in parts if isinstance(part, dict) and part.get("type") == "image_url")
        if isinstance(content, JsonText):  # the client's JSON string: its size less the quotes (as query's)
            size += len(content.raw) - 2
        else:
            size += len(text_of(content).encode("utf-8", "surrogatepass"))
        for call in getattr(message, "tool_calls", None) or ():
            size += len(call.function.name) + len(call.function.arguments)
    if request.tools:
        size += len(_encode_safe(msgspec.to_builtins(request.tools)))
    return size, images


# --- the non-streaming body ----------------------------------------------------------------


def completion_body(reply: Reply, *, model_id: str, completion_id: str, created: int, usage: Usage | None) -> bytes:
    """A ``chat.completion`` object."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "choices": [
            {"index": 0, "message": _message(reply), "logprobs": None, "finish_reason": reply.finish_reason}
        ],
    }
    if usage is not None:
        body["usage"] = usage.as_dict()
    return _encode_safe(body)


def _message(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": _content(reply)}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
            for call in reply.tool_calls
        ]
    return message


def _content(reply: Reply) -> str | None:
    # null only next to tool calls; a text answer is always a string, even an empty one.
    if reply.content is None and not reply.tool_calls:
        return ""
    return reply.content


# --- the stream ----------------------------------------------------------------------------


def sse_stream(reply: Reply, *, model_id: str, completion_id: str, created: int, usage: Usage | None) -> list[bytes]:
    """The whole answer as SSE frames, ``[DONE]`` included.

    Order: role chunk, content chunk (if any text), one chunk per tool call (index, id, type,
    name and the complete arguments), the finish chunk, the usage chunk (``choices: []``; left
    out when ``usage`` is None), ``data: [DONE]``. The kernel answers all at once, so there is
    nothing to gain from splitting the text into more chunks.
    """
    return list(iter_sse_frames(reply, model_id=model_id, completion_id=completion_id, created=created, usage=usage))


def iter_sse_frames(reply: Reply, *, model_id: str, completion_id: str, created: int,
                    usage: Usage | None) -> Iterator[bytes]:
    frames = SseFrames(model_id=model_id, completion_id=completion_id, created=created)
    yield frames.opening()
    yield from frames.rest(reply, usage)


class SseFrames:
    """The chunks of one streamed ``chat.completion``: ``opening``, ``text`` deltas, then ``rest``.

    A continued answer (``service.continuation``) is streamed as its pieces arrive: ``text`` sends
    the final text so far, and ``rest`` (told how much of the content went out) the remainder."""

    __slots__ = ("_head",)

    def __init__(self, *, model_id: str, completion_id: str, created: int) -> None:
        # Every chunk starts with the same id/object/created/model: encode that once.
        self._head = (b'data: {"id":' + _encode_safe(completion_id) + b',"object":"chat.completion.chunk","created":'
                      + _encode_safe(created) + b',"model":' + _encode_safe(model_id))

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._head + b',"choices":[' + _encode_safe(choice) + b"]}\n\n"

    def opening(self) -> bytes:
        return self.chunk({"role": "assistant", "content": ""})

    def text(self, delta: str) -> bytes:
        return self.chunk({"content": delta})

    def rest(self, reply: Reply, usage: Usage | None, *, sent: int = 0) -> Iterator[bytes]:
        """The content after its first ``sent`` characters, the tool calls, the finish and usage chunks, ``[DONE]``."""
        content = reply.content[sent:] if reply.content else None
        if content:
            yield self.text(content)
        for index, call in enumerate(reply.tool_calls):
            yield self.chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments_json},
                        }
                    ]
                }
            )
        yield self.chunk({}, reply.finish_reason)
        if usage is not None:
            yield self._head + b',"choices":[],"usage":' + _encode_safe(usage.as_dict()) + b"}\n\n"
        yield DONE_FRAME


# --- errors --------------------------------------------------------------------------------


def error_body(err: AiosdError) -> bytes:
    """``{"error": {"message", "type", "code", "param"}}``."""
    return _encode_safe(err.to_body())


def _encode_safe(value: Any) -> bytes:
    """Compact JSON; a lone UTF-16 surrogate in the text (possible in model output) becomes U+FFFD, as in requests."""
    try:
        return _encode(value)
    except UnicodeEncodeError:
        return _encode(replace_lone_surrogates(value))
