"""The entry point between a ChatRequest and the kernel: ``build_kernel_call`` and ``KernelCall.decode``.

Pure: it builds the ``/query`` body and decodes the kernel's ``response`` object; sending it,
retrying and mapping kernel error statuses belong to the kernel client.

How tools reach the model (the *effective* tool mode of a call):

- ``none`` when the request offers no tools (none sent, or ``tool_choice: "none"``), whatever the
  model's configured mode, and for the ``retry_without_tools`` re-send. Earlier calls and results
  in the history are shown as text.
- ``prompt`` (default): see ``tool_prompt``. Also used instead of ``native`` for kernel backends
  ``vllm``/``sglang``, which fail every request with tools (``KernelCall.note`` says so).
- ``native``: see ``tool_native``.

What is not sent: ``temperature``, ``top_p`` and ``max_tokens`` (the kernel drops them and always
asks its LLM for temperature 1.0 and at most 1000 tokens), ``tool_choice`` (no such kernel field;
in prompt mode it becomes an instruction in the system prompt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from aiosd.config.settings import ModelSpec, ToolMode
from aiosd.errors import AiosdError, KernelBadAnswer
from aiosd.translate import tool_native, tool_prompt
from aiosd.translate.chat_request import ChatRequest
from aiosd.translate.reply import Reply

_TOOL_MODES = ("prompt", "native", "none")


@dataclass(frozen=True, slots=True)
class KernelCall:
    """One ``/query`` to make, and how to read its answer."""

    # The /query body, encoded once (POST this). Only the bytes are kept: the dict's strings (in
    # prompt mode, the 60 KB of system prompt and tool instructions joined) would stay alive with it.
    content: bytes
    tool_mode: ToolMode  # effective mode (see module docstring)
    request: ChatRequest
    model: ModelSpec
    # Size of what the model is given (UTF-8 bytes of all text incl. tool descriptions, and the
    # number of images), for ``responses.estimate_usage``.
    prompt_bytes: int
    prompt_images: int
    # Log-worthy: why the effective tool mode differs from the configured one.
    note: str | None = None
    # Native mode: LLM-side name -> name offered by the client.
    tool_names: Mapping[str, str] = field(default_factory=dict)
    message_count: int = 0  # messages sent, for the usage estimate

    @property
    def body(self) -> dict:
        """The /query body as JSON values, decoded from ``content`` (for tests, tools and logs)."""
        body: dict = msgspec.json.decode(self.content)  # build_kernel_call encoded a dict
        return body

    def decode(self, kernel_response: dict) -> Reply:
        """The kernel's ``response`` object (status_code 200) as a Reply.

        Raises ``KernelBadAnswer`` for a body that is not an answer, and its subclass
        ``KernelTextDropped`` when in native mode the kernel lost a text answer.
        """
        if not isinstance(kernel_response, dict):
            raise KernelBadAnswer("The AIOS kernel's response is not an object", kernel_status=200)
        text, warning = _response_text(kernel_response)
        raw_calls = kernel_response.get("tool_calls")
        if self.tool_mode == "native":
            return tool_native.decode_native_answer(
                text, raw_calls, self.tool_names, model_id=self.model.id, warning=warning)
        if raw_calls:
            # No tools were sent, so this is not supposed to happen; the text is what counts.
            warning = "the kernel returned tool calls for a request sent without tools; ignored"
        if text is None:
            return Reply(content="", warning=warning or "the kernel returned no text (response_message null)")
        if self.tool_mode == "prompt":
            reply = tool_prompt.parse_reply_text(text, self.request.tools)
            if warning and not reply.warning:
                reply = Reply(reply.content, reply.tool_calls, reply.finish_reason, warning, reply.generated_chars)
            return reply
        return Reply(content=text, warning=warning, generated_chars=len(text))


def build_kernel_call(
    request: ChatRequest,
    model: ModelSpec,
    agent_name: str,
    *,
    tool_mode_override: ToolMode | None = None,
) -> KernelCall:
    """The ``/query`` body for a request to ``model``, and its decoder.

    ``tool_mode_override="none"`` is the ``retry_without_tools`` re-send of the same conversation.
    """
    if not model.kernel_model:
        # An llms entry without a name hangs the kernel's whole batch: never send one.
        raise AiosdError(f"model {model.id!r} has no kernel model name configured")
    configured = tool_mode_override or model.tools
    if configured not in _TOOL_MODES:
        raise ValueError(f"unknown tool mode {configured!r}")
    mode: ToolMode = configured
    note = None
    if not request.offers_tools:
        mode = "none"
    elif mode == "native" and (model.backend or "").lower() in tool_native.BACKENDS_WITHOUT_NATIVE_TOOLS:
        mode = "prompt"
        note = (
            f"model {model.id!r}: tools: native does not work with kernel backend {model.backend!r} "
            "(the kernel fails every request with tools); using prompt mode"
        )

    tools: list[dict] = []
    names: dict[str, str] = {}
    if mode == "native":
        tools, names = tool_native.kernel_tools(request.tools or ())
        messages = tool_native.history_native(request)
    elif mode == "prompt":
        messages = tool_prompt.history_as_text(request, tool_instructions=tool_prompt.render_tool_instructions(request))
    else:
        messages = tool_prompt.history_as_text(request, tool_instructions=None)

    llm: dict[str, Any] = {"name": model.kernel_model}
    if model.backend:
        llm["backend"] = model.backend
    body = {
        "agent_name": agent_name,
        "query_type": "llm",
        "query_data": {
            "messages": messages,
            "llms": [llm],
            "tools": tools,
            "action_type": "chat",
            "message_return_type": "text",
        },
    }
    content = msgspec.json.encode(body)
    # After encoding: msgspec keeps each string's UTF-8 form, so measuring it is a copy, not a
    # second encoding (and the system prompt, the client's JSON, is measured by its length).
    prompt_bytes, prompt_images = _prompt_size(messages, tools)
    return KernelCall(
        content=content,
        tool_mode=mode,
        request=request,
        model=model,
        prompt_bytes=prompt_bytes,
        prompt_images=prompt_images,
        note=note,
        tool_names=names,
        message_count=len(messages),
    )


def _response_text(response: dict) -> tuple[str | None, str | None]:
    """``response_message`` as text or None, and a warning worth logging."""
    message = response.get("response_message")
    if message is None:
        return None, None
    if not isinstance(message, str):
        raise KernelBadAnswer("The AIOS kernel's response_message is not text", kernel_status=200)
    if message == "None" and response.get("error"):
        # The kernel writes Python's str(None) when its LLM returned no content, with a warning
        # in "error". Without that warning, "None" is what the model said.
        return None, f"the LLM returned no content (kernel: {str(response['error'])[:200]})"
    return message, None


def _prompt_size(messages: list[dict], tools: list[dict]) -> tuple[int, int]:
    size = 0
    images = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, msgspec.Raw):
            # The client's JSON string (JsonText): its size is the text's UTF-8 size plus its escapes
            # (a few percent; this is an estimate), minus the quotes.
            size += len(content) - 2
        elif isinstance(content, str):
            size += _utf8_len(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    size += _utf8_len(part.get("text", ""))
                else:
                    images += 1
        for call in message.get("tool_calls") or ():
            size += _utf8_len(call["function"]["name"]) + _utf8_len(call["function"]["arguments"])
    if tools:
        size += len(tool_prompt.compact_json(tools).encode("utf-8", "surrogatepass"))
    return size, images


def _utf8_len(text: str) -> int:
    # isascii() is a fast scan; non-ASCII text was encoded with the body just before (cached).
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
