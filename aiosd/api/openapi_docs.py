"""OpenAPI descriptions for routes that read their raw body (Litestar cannot infer a body from a bare Request)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class ChatCompletionOperation(Operation):
    """The chat completion route: a JSON body in, a completion (JSON, or SSE when streaming) or an OpenAI error out."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="An OpenAI chat completion request",
            content={"application/json": OpenAPIMediaType(schema=CHAT_COMPLETION_REQUEST)},  # type: ignore[arg-type]
        )
        error = OpenAPIResponse(
            description="An OpenAI-style error", content={"application/json": OpenAPIMediaType(schema=_OPENAI_ERROR)},  # type: ignore[arg-type]
        )
        self.responses = {
            "200": OpenAPIResponse(description="The completion; server-sent events when stream is true", content={
                "application/json": OpenAPIMediaType(schema={"type": "object"}),  # type: ignore[arg-type]
                "text/event-stream": OpenAPIMediaType(schema={"type": "string"}),  # type: ignore[arg-type]
            }),
            "default": error,
        }
