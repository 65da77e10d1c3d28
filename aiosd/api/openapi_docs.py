"""aiosd's OpenAPI document: the raw-body routes' descriptions and the error shapes every route answers in.

Litestar cannot infer a body from a bare Request, nor knows that aiosd answers every error in
OpenAI's shape (Anthropic's on /v1/messages). The document is served as JSON only
(``/openapi/openapi.json``): no documentation viewer, which would load scripts from a CDN into
aiosd's own origin.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    RequestBody,
)


def _parts(*kinds: dict) -> dict:
    return {"oneOf": [{"type": "string"}, {"type": "array", "items": {"oneOf": list(kinds)}}]}


_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_IMAGE_PART = {"type": "object", "required": ["type", "image_url"],
               "properties": {"type": {"const": "image_url"},
                              "image_url": {"type": "object", "required": ["url"],
                                            "properties": {"url": {"type": "string"}}}}}
_TOOL_CALL = {"type": "object", "required": ["id", "type", "function"],
              "properties": {"id": {"type": "string"}, "type": {"const": "function"},
                             "function": {"type": "object", "required": ["name", "arguments"],
                                          "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}}


def _message(role: str, content: dict, required: tuple[str, ...] = ("content",), **more: dict) -> dict:
    return {"type": "object", "required": ["role", *required],
            "properties": {"role": {"const": role}, "content": content, **more}}


# The subset of OpenAI's chat completion request aiosd reads (chat_request.ChatRequest is the authority;
# what JSON Schema cannot say, such as tool_choice naming one of tools, is checked there).
CHAT_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "examples": ["sonnet"]},
        "messages": {"type": "array", "minItems": 1, "items": {"oneOf": [
            _message("system", _parts(_TEXT_PART), name={"type": "string"}),
            _message("developer", _parts(_TEXT_PART), name={"type": "string"}),
            _message("user", _parts(_TEXT_PART, _IMAGE_PART), name={"type": "string"}),
            _message("assistant", _parts(_TEXT_PART), required=(), tool_calls={"type": "array", "items": _TOOL_CALL}),
            _message("tool", _parts(_TEXT_PART), required=("content", "tool_call_id"), tool_call_id={"type": "string"}),
        ]}},
        "tools": {"type": "array", "items": {
            "type": "object", "required": ["type", "function"],
            "properties": {"type": {"const": "function"},
                           "function": {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string", "minLength": 1},
                                                       "description": {"type": "string"},
                                                       "parameters": {"type": "object"}}}},
        }},
        "tool_choice": {"oneOf": [
            {"enum": ["auto", "none", "required"]},
            {"type": "object", "required": ["type", "function"],
             "properties": {"type": {"const": "function"},
                            "function": {"type": "object", "required": ["name"],
                                         "properties": {"name": {"type": "string"}}}}},
        ]},
        "parallel_tool_calls": {"type": "boolean"},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "max_completion_tokens": {"type": "integer"},
        "max_tokens": {"type": "integer"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
    },
}

_OPENAI_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "code"],
                             "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                            "code": {"type": "string"}}}},
}
_ANTHROPIC_ERROR = {
    "type": "object", "required": ["type", "error"],
    "properties": {"type": {"const": "error"},
                   "error": {"type": "object", "required": ["type", "message"],
                             "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
}

_TEXT_BLOCK = {"type": "object", "required": ["type", "text"],
               "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_IMAGE_BLOCK = {"type": "object", "required": ["type", "source"],
                "properties": {"type": {"const": "image"}, "source": {"oneOf": [
                    {"type": "object", "required": ["type", "media_type", "data"],
                     "properties": {"type": {"const": "base64"}, "media_type": {"type": "string"},
                                    "data": {"type": "string"}}},
                    {"type": "object", "required": ["type", "url"],
                     "properties": {"type": {"const": "url"}, "url": {"type": "string"}}}]}}}
_TOOL_USE_BLOCK = {"type": "object", "required": ["type", "id", "name", "input"],
                   "properties": {"type": {"const": "tool_use"}, "id": {"type": "string"},
                                  "name": {"type": "string", "minLength": 1}, "input": {"type": "object"}}}
_TOOL_RESULT_BLOCK = {"type": "object", "required": ["type", "tool_use_id"],
                      "properties": {"type": {"const": "tool_result"}, "tool_use_id": {"type": "string"},
                                     "content": {"oneOf": [{"type": "string"},
                                                           {"type": "array", "items": _TEXT_BLOCK}]},
                                     "is_error": {"type": "boolean"}}}

# The subset of Anthropic's Messages request aiosd reads (anthropic_messages.to_openai_chat is the
# authority; it rewrites the body into the chat shape above and checks it the same way).
ANTHROPIC_MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "examples": ["sonnet"]},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
        "messages": {"type": "array", "minItems": 1, "items": {"oneOf": [
            {"type": "object", "required": ["role", "content"],
             "properties": {"role": {"const": "user"}, "content": {"oneOf": [
                 {"type": "string"},
                 {"type": "array", "items": {"oneOf": [_TEXT_BLOCK, _IMAGE_BLOCK, _TOOL_RESULT_BLOCK]}}]}}},
            {"type": "object", "required": ["role", "content"],
             "properties": {"role": {"const": "assistant"}, "content": {"oneOf": [
                 {"type": "string"}, {"type": "array", "items": {"oneOf": [_TEXT_BLOCK, _TOOL_USE_BLOCK]}}]}}},
        ]}},
        "tools": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
                           "input_schema": {"type": "object"}}}},
        "tool_choice": {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["auto", "any", "none", "tool"]}, "name": {"type": "string"}}},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
    },
}


_EVENT = {"type": "object", "required": ["data"],
          "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}


def _operation(operation: Operation, what: str, schema: dict, error: dict) -> None:
    operation.request_body = RequestBody(
        required=True, description=what,
        content={"application/json": OpenAPIMediaType(schema=schema)},  # type: ignore[arg-type]  # a plain JSON Schema
    )
    operation.responses = {
        "200": OpenAPIResponse(description="The answer; server-sent events when stream is true", content={
            "application/json": OpenAPIMediaType(schema={"type": "object"}),  # type: ignore[arg-type]
            # One server-sent event: its data a JSON chunk (OpenAI's ends with "[DONE]").
            "text/event-stream": OpenAPIMediaType(schema=_EVENT),  # type: ignore[arg-type]
        }),
        "default": OpenAPIResponse(description="An error in the route's dialect", content={
            "application/json": OpenAPIMediaType(schema=error)}),  # type: ignore[arg-type]
    }


@dataclass
class ChatCompletionOperation(Operation):
    """The chat completion route: a JSON body in, a completion (JSON, or SSE when streaming) or an OpenAI error out."""

    def __post_init__(self) -> None:
        _operation(self, "An OpenAI chat completion request", CHAT_COMPLETION_REQUEST, _OPENAI_ERROR)


@dataclass
class MessagesOperation(Operation):
    """The Messages route: an Anthropic Messages body in, a message (JSON, or SSE when streaming) or an
    Anthropic error out."""

    def __post_init__(self) -> None:
        _operation(self, "An Anthropic Messages request", ANTHROPIC_MESSAGES_REQUEST, _ANTHROPIC_ERROR)


def with_error_shapes(document: dict[str, Any], anthropic_paths: frozenset[str]) -> dict[str, Any]:
    """``document`` with every error answer (4xx, 5xx and ``default``) declared in the shape aiosd writes:
    Anthropic's on ``anthropic_paths``, OpenAI's elsewhere (Litestar declares its own, which aiosd
    never sends)."""
    document = copy.deepcopy(document)
    for path, item in document.get("paths", {}).items():
        error = _ANTHROPIC_ERROR if path in anthropic_paths else _OPENAI_ERROR
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code in [c for c in responses if c[0] in "45"]:
                responses[code]["content"] = {"application/json": {"schema": error}}
            responses.setdefault("default", {"description": "An error", "content": {
                "application/json": {"schema": error}}})
    return document


class OpenAPIJson(JsonRenderPlugin):
    """Serves the document as JSON at /openapi/openapi.json (and /openapi), error shapes included;
    no viewer pages."""

    def __init__(self, anthropic_paths: frozenset[str]) -> None:
        super().__init__(path="/openapi.json")
        self._anthropic_paths = anthropic_paths
        self._rendered: tuple[int, bytes] | None = None

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None or self._rendered[0] != id(openapi_schema):  # Litestar builds it once
            body = self.render_json(request, with_error_shapes(openapi_schema, self._anthropic_paths))
            self._rendered = (id(openapi_schema), body)
        return self._rendered[1]
