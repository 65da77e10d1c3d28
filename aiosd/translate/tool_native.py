"""Native-mode tool calling: tools passed to the kernel, its tool calls mapped back to OpenAI's.

The kernel's quirks this module copes with:

- Tools must be OpenAI-shaped (``{"type":"function","function":{...}}``); flat ones get a 400.
- Names: ``/`` becomes ``__`` on the way to the LLM and **every** ``__`` becomes ``/`` on the way
  back, so ``github__create_issue`` returns as ``github/create_issue``. aiosd keeps its own table,
  keyed by the name as the LLM sees it, and maps returned names through it. Two offered names the
  kernel cannot tell apart (``a/b`` and ``a__b``) map back to the first one offered.
- Earlier calls in the history are passed through untouched by the kernel, so aiosd writes their
  names the way the LLM knows the tools (``/`` as ``__``).
- A text answer while tools are present comes back as ``response_message: null, tool_calls: []``:
  ``decode_native_answer`` raises ``KernelTextDropped`` so the forwarding layer can apply the
  model's ``on_text_dropped`` policy.

``translate`` falls back to prompt mode for models whose kernel backend is ``vllm`` or ``sglang``:
the kernel fails every request with tools for those ("'list' object has no attribute 'choices'").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiosd.errors import KernelBadAnswer, KernelTextDropped
from aiosd.translate.chat_request import (
    AssistantMessage,
    ChatRequest,
    DeveloperMessage,
    SystemMessage,
    Tool,
    ToolMessage,
    content_builtins,
    text_of,
)
from aiosd.translate.reply import Reply, ToolCall, new_call_id

# Kernel backends whose tool path is broken (every request with tools fails with a 500).
BACKENDS_WITHOUT_NATIVE_TOOLS = frozenset(("vllm", "sglang"))

_EMPTY_PARAMETERS = {"type": "object", "properties": {}}


def llm_side_name(name: str) -> str:
    """The name the LLM sees (and the key under which the kernel's returned name is looked up)."""
    return name.replace("/", "__")


def kernel_tools(tools: Sequence[Tool]) -> tuple[list[dict], dict[str, str]]:
    """The tools as the kernel takes them, and the table mapping returned names back.

    The table's keys are LLM-side names (``llm_side_name``); a name the kernel returns is looked
    up as ``llm_side_name(returned)``, which undoes the kernel's ``__`` -> ``/`` rewrite.
    """
    sent: list[dict] = []
    names: dict[str, str] = {}
    for tool in tools:
        fn = tool.function
        function: dict[str, Any] = {"name": fn.name}
        if fn.description is not None:
            function["description"] = fn.description
        function["parameters"] = fn.parameters if fn.parameters is not None else _EMPTY_PARAMETERS
        sent.append({"type": "function", "function": function})
        names.setdefault(llm_side_name(fn.name), fn.name)
    return sent, names


def history_native(request: ChatRequest) -> list[dict]:
    """Kernel messages with tool calls and results passed as OpenAI messages."""
    out: list[dict] = []
    for message in request.messages:
        if isinstance(message, (SystemMessage, DeveloperMessage)):
            out.append({"role": "system", "content": content_builtins(message.content)})
        elif isinstance(message, AssistantMessage):
            text = text_of(message.content)
            entry: dict[str, Any] = {"role": "assistant", "content": text}
            if message.tool_calls:
                # Many LLM servers take "" next to tool calls as a text answer; null is unambiguous.
                entry["content"] = text or None
                entry["tool_calls"] = [
                    {
                        "id": call.id or new_call_id(),
                        "type": "function",
                        "function": {
                            "name": llm_side_name(call.function.name),
                            # "" is not JSON; the kernel's LLM path fails on it.
                            "arguments": call.function.arguments if call.function.arguments.strip() else "{}",
                        },
                    }
                    for call in message.tool_calls
                ]
            out.append(entry)
        elif isinstance(message, ToolMessage):
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": text_of(message.content)})
        else:  # UserMessage
            out.append({"role": "user", "content": content_builtins(message.content)})
    return out


def decode_native_answer(
    text: str | None,
    raw_calls: Any,
    names: Mapping[str, str],
    *,
    model_id: str,
    warning: str | None = None,
) -> Reply:
    """The kernel's answer to a request that carried tools.

    ``text`` is ``response_message`` with the kernel's literal "None" already turned into None.
    Raises ``KernelTextDropped`` for the empty answer the kernel gives when it dropped the text.
    """
    if raw_calls is not None and not isinstance(raw_calls, list):
        raise KernelBadAnswer("The AIOS kernel's response.tool_calls is not a list", kernel_status=200)
    if raw_calls:
        calls = [_tool_call(raw, names) for raw in raw_calls]
        generated = len(text or "") + sum(len(c.name) + len(c.arguments_json) for c in calls)
        return Reply(content=text or None, tool_calls=calls, finish_reason="tool_calls", warning=warning,
                     generated_chars=generated)
    if text is None:
        raise KernelTextDropped(
            "The AIOS kernel returned neither text nor tool calls: it drops every text answer when "
            f"tools are passed to it natively (model {model_id!r} uses tools: native). Set "
            f"tools: prompt for this model in aiosd's config (models.map.{model_id}.tools), or "
            "on_text_dropped: retry_without_tools to ask again without tools.",
            kernel_status=200,
        )
    return Reply(content=text, warning=warning, generated_chars=len(text))


def _tool_call(raw: Any, names: Mapping[str, str]) -> ToolCall:
    """``{"name", "parameters": {...}, "id"}`` from the kernel as an OpenAI tool call."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise KernelBadAnswer(f"The AIOS kernel returned a tool call without a name: {str(raw)[:200]}",
                              kernel_status=200)
    returned = raw["name"]
    name = names.get(llm_side_name(returned), returned)
    parameters = raw.get("parameters")
    if isinstance(parameters, str):  # not seen, but some servers keep arguments as a string
        try:
            parameters = json.loads(parameters) if parameters.strip() else {}
        except (ValueError, RecursionError):
            pass  # reported below as not an object
    if parameters is None:
        parameters = {}
    try:
        if not isinstance(parameters, dict):
            raise ValueError
        # allow_nan=False: NaN would make the arguments invalid JSON for OpenClaw.
        arguments_json = json.dumps(parameters, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can follow
        raise KernelBadAnswer(
            f"The AIOS kernel returned arguments for tool {name!r} that are not a JSON object", kernel_status=200
        ) from None
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = new_call_id()
    return ToolCall(id=call_id, name=name, arguments_json=arguments_json)
