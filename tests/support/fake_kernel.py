"""A fake AIOS kernel on loopback (uvicorn in a thread) reproducing the real kernel's wire behaviour,
quirks and hangs included."""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import inspect
import json
import logging
import signal
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import uvicorn

logger = logging.getLogger(__name__)

__all__ = [
    "ANSWER_TOKEN_CAP",
    "CHARS_PER_TOKEN",
    "DEFAULT_MODELS",
    "Delay",
    "Drip",
    "Empty",
    "FakeKernel",
    "Garbage",
    "GzipBomb",
    "Hang",
    "Huge",
    "LLMFailure",
    "LLMRequest",
    "RawResponse",
    "ResetMidBody",
    "Retried",
    "RetryAfter",
    "ServerError",
    "Text",
    "TooSlow",
    "ToolCall",
    "ToolCalls",
    "Unprocessable",
    "Unreachable",
    "continue_exactly",
    "echo_llm",
    "gzip_bomb",
]


# --------------------------------------------------------------------------------------------
# What the LLM behind the kernel produced. The `llm` callable returns one of these (a bare str
# means Text, None means Empty); script items may be any of them too.
# --------------------------------------------------------------------------------------------


@dataclass
class Text:
    """The LLM answered with plain text."""

    text: str


@dataclass
class ToolCall:
    """One native tool call; `arguments` is a JSON *string*, as real LLM servers send it."""

    name: str
    arguments: str = "{}"
    id: str | None = None


@dataclass
class ToolCalls:
    """Native tool calls, with `text` as the message content next to them (None, "" or text)."""

    calls: list[ToolCall]
    text: str | None = None

    def __post_init__(self) -> None:
        # Accept ToolCall, ("name", "args") pairs and {"name", "arguments", "id"} dicts alike.
        normalised = []
        for call in self.calls:
            if isinstance(call, ToolCall):
                normalised.append(call)
            elif isinstance(call, dict):
                normalised.append(ToolCall(call["name"], call.get("arguments", "{}"), call.get("id")))
            else:
                normalised.append(ToolCall(*call))
        self.calls = normalised


@dataclass
class Empty:
    """The LLM answered with no content at all (content None, no tool calls)."""


@dataclass
class LLMFailure:
    """The LLM server answered with an HTTP error. Its message and Retry-After never reach the
    kernel's client: the kernel keeps only a generic sentence and a mapped status code."""

    status: int
    message: str = "upstream LLM error"
    retry_after: float | None = None


@dataclass
class Unreachable:
    """The LLM server could not be reached (the kernel reports 503)."""


@dataclass
class TooSlow:
    """The LLM server timed out (the kernel reports 408). Answers at once in the fake."""


class Hang:
    """The LLM never answers: the /query hangs and its kernel worker slot stays held, until
    `release()` (then the call goes on with `then`, or the `llm` callable) or the kernel stops.
    A client that disconnects meanwhile does not end the kernel's work."""

    def __init__(self, then: LLMOutput | None = None) -> None:
        self.then = then
        self._lock = threading.Lock()
        self._released = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def release(self, then: LLMOutput | None = None) -> None:
        """Let every request hanging on this item go on (thread-safe, callable from tests)."""
        with self._lock:
            if then is not None:
                self.then = then
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # that kernel has stopped; its hung work was cancelled with it

    async def _wait(self) -> None:
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._released:
                return
            self._waiters.append(waiter)
        try:
            await event.wait()
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def __repr__(self) -> str:
        return f"Hang(released={self._released})"


@dataclass
class Delay:
    """The LLM takes `seconds` to answer, then answers with `then` (or the `llm` callable).
    It holds its worker slot and, with batching, delays its whole batch."""

    seconds: float
    then: LLMOutput | None = None


@dataclass
class Retried:
    """Per-attempt outputs inside one /query: the kernel's own retries consume them in order
    (the last one repeats). `Retried(LLMFailure(429), LLMFailure(429), Text("ok"))` is one
    /query that answers "ok" after 3 attempts: the streak never shows to the client."""

    outputs: tuple

    def __init__(self, *outputs: LLMOutput) -> None:
        if not outputs:
            raise ValueError("Retried needs at least one output")
        self.outputs = outputs


LLMOutput = Text | ToolCalls | Empty | LLMFailure | Unreachable | TooSlow | Hang | Delay | str | None
LLMCallable = Callable[[list, "list | None", str], Union["LLMOutput", Awaitable["LLMOutput"]]]


# --------------------------------------------------------------------------------------------
# Transport-level faults: script items only. They are not something the real kernel does on its
# own; they let aiosd's tests see broken servers, proxies and networks.
# --------------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    """Answer this /query with exactly this status, body and headers; the LLM is not called."""

    status: int = 200
    body: bytes | str | dict | list = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encoded(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in self.headers]
        if isinstance(self.body, (dict, list)):
            body = json.dumps(self.body).encode()
            if not any(k == b"content-type" for k, _ in headers):
                headers.append((b"content-type", b"application/json"))
        elif isinstance(self.body, str):
            body = self.body.encode()
        else:
            body = self.body
        return body, headers


def ServerError(detail: str = "Internal error in the kernel's handler") -> RawResponse:
    """HTTP 500 `{"detail": ...}`: what the kernel sends when its handler raises."""
    return RawResponse(500, {"detail": detail})


def Unprocessable() -> RawResponse:
    """HTTP 422 with FastAPI's noisy `detail` list, as for a body the kernel cannot parse."""
    return RawResponse(422, {"detail": _union_errors(["query_data"], _MISSING_BODY_FIELD, {})})


def Garbage(body: bytes = b"<html><body>502 Bad Gateway</body></html>", status: int = 200) -> RawResponse:
    """A non-JSON body with HTTP 200 (a proxy or a broken build answering)."""
    return RawResponse(status, body, [("content-type", "text/html")])


def RetryAfter(seconds: float | str = 1, status: int = 429, detail: str = "Too Many Requests") -> RawResponse:
    """An HTTP error carrying a `Retry-After` header (the real kernel never sends one)."""
    value = seconds if isinstance(seconds, str) else f"{seconds:g}"
    return RawResponse(status, {"detail": detail}, [("retry-after", value)])


@dataclass
class Drip:
    """Answer normally (through the LLM, or with `then`) but send the body `chunk_size` bytes
    every `interval` seconds."""

    interval: float = 0.05
    chunk_size: int = 16
    then: LLMOutput = None


@dataclass
class ResetMidBody:
    """Answer normally (through the LLM, or with `then`), send the headers and half the body,
    then drop the connection: a TCP RST when `hard` (SO_LINGER 0), a plain close otherwise."""

    then: LLMOutput = None
    hard: bool = True
    pause: float = 0.02  # lets the client read the partial body before the reset arrives


@dataclass
class Huge:
    """A 200 answer of `size` bytes (a valid /query answer whose response_message is mostly "a"),
    streamed in `chunk_size` pieces, with a Content-Length or chunked. The pieces are one shared
    bytes object: a 200 MB answer costs the fake kernel no memory. Sending stops when the client
    goes away."""

    size: int
    content_length: bool = True
    chunk_size: int = 1 << 20


_HUGE_HEAD = b'{"response": {"response_class": "llm", "status_code": 200, "finished": true, "response_message": "'
_HUGE_TAIL = b'"}}'


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """A valid gzip body of zeros that inflates to `inflated` bytes (a multiple of 1 MiB): 1 GiB
    is about 1 MB on the wire. Built from one full-flushed deflate segment repeated, so it takes
    a fraction of a second instead of compressing a gigabyte."""
    mib = 1 << 20
    if inflated % mib:
        raise ValueError("inflated must be a multiple of 1 MiB")
    zeros = bytes(mib)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)  # the gzip header + 1 MiB
    segment = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)  # no back-references: repeatable
    crc = 0
    for _ in range(inflated // mib):
        crc = zlib.crc32(zeros, crc)
    final_empty_block = b"\x03\x00"
    trailer = struct.pack("<II", crc, inflated & 0xFFFFFFFF)
    return first + segment * (inflated // mib - 1) + final_empty_block + trailer


def GzipBomb(inflated: int = 1 << 30, status: int = 200) -> RawResponse:
    """A `Content-Encoding: gzip` answer that inflates to `inflated` bytes (1 GiB: ~1 MB sent)."""
    headers = [("content-type", "application/json"), ("content-encoding", "gzip")]
    return RawResponse(status, gzip_bomb(inflated), headers)


_TRANSPORT_ITEMS = (RawResponse, Drip, ResetMidBody, Huge)


@dataclass
class LLMRequest:
    """What the LLM behind the kernel was asked, once per kernel attempt."""

    model: str
    messages: list
    tools: list | None


DEFAULT_MODELS: list[dict[str, Any]] = [
    {
        "name": "gpt-4o-mini",
        "backend": "openai",
        "hostname": "http://10.0.0.5:11434",
        "api_key": "sk-fake-kernel-secret",
    },
    {"name": "qwen2.5:7b", "backend": "ollama", "hostname": "http://localhost:11434"},
    {"name": "meta-llama/Llama-3.1-8B-Instruct", "backend": "vllm", "hostname": "http://localhost:8091/v1"},
]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def echo_llm(messages: list, tools: list | None, model_name: str) -> LLMOutput:
    """Default LLM: `"echo: <last user text>"`, so tests can tell requests apart."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return Text("echo: " + _text_of(message.get("content")))
    return Text("echo: ")


# --------------------------------------------------------------------------------------------
# The kernel's answers
# --------------------------------------------------------------------------------------------

EMPTY_CONTENT_WARNING = "Warning: the LLM returned no content (None)."
ANSWER_TOKEN_CAP = 1000  # the real kernel's max_tokens for every LLM call
CHARS_PER_TOKEN = 4


def _llm_response(message: Any = None, *, tool_calls: Any = None, error: str | None = None, status: int = 200) -> dict:
    return {
        "response_class": "llm",
        "response_message": message,
        "tool_calls": tool_calls,
        "finished": True,
        "error": error,
        "status_code": status,
    }


def _envelope(response: dict) -> bytes:
    return json.dumps(
        {"response": response, "start_times": [], "end_times": [], "waiting_times": [], "turnaround_times": []}
    ).encode()


def _invalid_request(model: str) -> str:
    """The kernel's sentence for a request its LLM backend refused as malformed."""
    return f"Invalid Request for model '{model}'. Check your input parameters (e.g., messages, tools format)."


# (response.status_code, generic sentence, attempts the kernel makes) for each LLM failure.
def _failure_policy(output: Any, model: str) -> tuple[int, str, int] | None:
    if isinstance(output, Unreachable):
        return 503, f"Connection Error with model '{model}'. Could not reach the LLM service.", 3
    if isinstance(output, TooSlow):
        return 408, f"Request Timed Out for model '{model}'. The operation took too long.", 3
    if not isinstance(output, LLMFailure):
        return None
    status = output.status
    if status == 429:
        return 429, f"Rate Limit Exceeded for model '{model}'. Please try again later.", 3
    if status == 400:
        return 400, _invalid_request(model), 1
    if status in (401, 403):
        return 401, f"Authentication Error with model '{model}': Invalid or missing API key.", 1
    if status == 404:
        return 404, f"Model Not Found: The specified model '{model}' could not be found or accessed.", 1
    if status == 599:  # not an HTTP answer: an exception inside the kernel's LLM call
        return 500, f"LLM Error with model '{model}': An unexpected error occurred.", 1
    return 502, f"API Error from model '{model}'. The provider reported an issue.", 3


class _ToolDecodingError(Exception):
    pass


def _slash_to_double_underscore(tools: list) -> list:
    renamed = []
    for tool in tools:
        tool = json.loads(json.dumps(tool))  # the LLM gets its own copy
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            function["name"] = function["name"].replace("/", "__")
        renamed.append(tool)
    return renamed


def _decode_tool_response(output: Text | ToolCalls | Empty) -> list[dict]:
    """The kernel's litellm tool-call decoding, faults included. Raises _ToolDecodingError."""
    content = output.text if isinstance(output, (Text, ToolCalls)) else None
    calls = output.calls if isinstance(output, ToolCalls) else None
    if content is not None:
        # Content wins over native tool calls, even "": only text that is itself a JSON tool
        # call survives; anything else comes back as an empty list and the text is lost.
        try:
            parsed = json.loads(content)
        except (ValueError, TypeError):
            return []
        items = parsed if isinstance(parsed, list) else [parsed]
        decoded = []
        for item in items:
            if not (isinstance(item, dict) and "name" in item and "arguments" in item):
                return []
            arguments = item["arguments"]
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError as exc:
                    raise _ToolDecodingError(str(exc)) from None
            decoded.append({"name": item["name"], "parameters": arguments, "id": str(uuid.uuid4())})
        return decoded
    if not calls:
        raise _ToolDecodingError("'NoneType' object is not iterable")
    decoded = []
    for call in calls:
        try:
            parameters = json.loads(call.arguments)
        except (ValueError, TypeError) as exc:
            raise _ToolDecodingError(str(exc)) from None
        decoded.append({"name": call.name, "parameters": parameters, "id": call.id or str(uuid.uuid4())})
    return decoded


# --------------------------------------------------------------------------------------------
# FastAPI-style 422 bodies for requests the kernel cannot parse
# --------------------------------------------------------------------------------------------

_MISSING_BODY_FIELD = object()
# The kernel's query_data is a union; pydantic reports one entry per member it tried.
_QUERY_MEMBERS = (
    ("LLMQuery", "messages"),
    ("ToolQuery", "tool_calls"),
    ("MemoryQuery", "params"),
    ("StorageQuery", "params"),
)
_NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def _error(kind: str, loc: list, msg: str, value: Any) -> dict:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def _missing(loc: list, value: Any) -> dict:
    return _error("missing", loc, "Field required", value)


def _union_errors(loc: list, query_data: Any, llm_query_errors: dict) -> list[dict]:
    errors = []
    for member, required in _QUERY_MEMBERS:
        where = [*loc, member]
        if query_data is _MISSING_BODY_FIELD or not isinstance(query_data, dict):
            value = None if query_data is _MISSING_BODY_FIELD else query_data
            errors.append(_error("model_attributes_type", where, _NOT_AN_OBJECT, value))
        elif member == "LLMQuery" and llm_query_errors:
            errors.extend(dict(e, loc=where + e["loc"]) for e in llm_query_errors.values())
        elif member != "LLMQuery":
            errors.append(_missing([*where, required], query_data))
    return errors


def _llm_query_errors(query_data: dict) -> dict:
    errors: dict[str, dict] = {}
    messages = query_data.get("messages", _MISSING_BODY_FIELD)
    if messages is _MISSING_BODY_FIELD:
        errors["messages"] = _missing(["messages"], query_data)
    elif not isinstance(messages, list):
        errors["messages"] = _error("list_type", ["messages"], "Input should be a valid list", messages)
    else:
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                errors[f"messages.{i}"] = _error(
                    "dict_type", ["messages", i], "Input should be a valid dictionary", message
                )
    for name in ("tools", "llms"):
        value = query_data.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            errors[name] = _error("list_type", [name], "Input should be a valid list", value)
            continue
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                errors[f"{name}.{i}"] = _error("dict_type", [name, i], "Input should be a valid dictionary", entry)
    for name in ("action_type", "message_return_type"):
        value = query_data.get(name)
        if value is not None and not isinstance(value, str):
            errors[name] = _error("string_type", [name], "Input should be a valid string", value)
    return errors


def _validation_errors(payload: Any) -> list[dict] | None:
    if not isinstance(payload, dict):
        return [_error("model_attributes_type", ["body"], _NOT_AN_OBJECT, payload)]
    errors = []
    for name in ("agent_name", "query_type"):
        if name not in payload:
            errors.append(_missing(["body", name], payload))
        elif not isinstance(payload[name], str):
            errors.append(_error("string_type", ["body", name], "Input should be a valid string", payload[name]))
    query_data = payload.get("query_data", _MISSING_BODY_FIELD)
    if query_data is _MISSING_BODY_FIELD:
        errors.append(_missing(["body", "query_data"], payload))
    elif not isinstance(query_data, dict):
        errors.extend(_union_errors(["body", "query_data"], query_data, {}))
    else:
        llm_errors = _llm_query_errors(query_data)
        if llm_errors:
            errors.extend(_union_errors(["body", "query_data"], query_data, llm_errors))
    return errors or None


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

_JSON = (b"content-type", b"application/json")
_PREFLIGHT_METHODS = b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


class _Job:
    """One /query inside the kernel: its parsed query and what the script chose for it."""

    __slots__ = ("client_gone", "item", "query_data", "result")

    def __init__(self, query_data: dict, item: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.query_data = query_data
        self.item = item
        self.result: asyncio.Future = loop.create_future()
        self.client_gone = False


class _Server(uvicorn.Server):
    """uvicorn's server, telling the fake when it listens and stopping at once when asked.

    uvicorn polls for exit every 0.1 s and sleeps 0.1 s more while shutting down; tests start and
    stop many kernels, so this one wakes on an event and drops what is left instead."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.exit_now = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._on_started()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000  # on_tick refreshes the Date header every 10 ticks
            try:
                await asyncio.wait_for(self.exit_now.wait(), 0.1)
            except TimeoutError:
                pass

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their answer
        tasks = list(self.server_state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.timeout_graceful_shutdown)
        for task in self.server_state.tasks:
            task.cancel()
        for connection in list(self.server_state.connections):
            connection.transport.abort()


class FakeKernel:
    """A fake AIOS kernel served by uvicorn on 127.0.0.1 in a background thread with its own
    event loop, so sync tests and async tests (with their own loop) can both use it.

    Use as `with FakeKernel() as kernel:` (or `start()` / `stop()`); `kernel.url` is its base URL.
    Per-call behaviour: `kernel.script(item, ...)`, else the `llm` callable (settable any time).
    Like the real kernel's LLM, a text answer stops after `answer_token_cap` tokens (4 characters
    each; None: no cap), and asked to continue an answer it gave, the `llm` callable's answer goes
    on where the assistant's turn ended (`continue_with` says how: exactly, by default).
    Observation, all updated in the server thread: `queries`, `query_count`, `in_flight`,
    `max_in_flight`, `busy_workers`, `max_busy_workers`, `attempts`, `llm_requests`,
    `disconnects`, `finished_after_disconnect`, `batches`, `poisoned_batches`, `queued`.
    Waiting without sleeps: `wait_until(predicate)`, `wait_for_queries(n)`,
    `wait_for_in_flight(n)`, `wait_for_disconnects(n)` and their `*_async` twins.
    """

    def __init__(
        self,
        models: Iterable[dict[str, Any]] | None = None,
        llm: LLMCallable | None = None,
        *,
        batch_interval: float = 0.0,
        workers: int = 10_000,
        llm_core_ready: bool = True,
        scheduler_dead: bool = False,
        llm_latency: float = 0.0,
        retry_delay: float = 0.0,
        answer_token_cap: int | None = ANSWER_TOKEN_CAP,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.models: list[dict[str, Any]] = [dict(m) for m in (DEFAULT_MODELS if models is None else models)]
        self.llm: LLMCallable = llm or echo_llm
        # 0: no batching; 1.0: the real FIFO scheduler; math.inf: batches only on run_batch_now()
        self.batch_interval = batch_interval
        self.workers = workers  # the real kernel: min(32, cpu_count + 4)
        self.llm_core_ready = llm_core_ready
        self.list_body: bytes | None = None  # when set, /core/llms/list answers these bytes as they are
        self.scheduler_dead = scheduler_dead
        self.llm_latency = llm_latency  # added to every LLM attempt
        # The real kernel asks its LLM for at most 1000 tokens: a longer text answer stops there (at
        # CHARS_PER_TOKEN characters a token), silently. None: the LLM is not capped.
        self.answer_token_cap = answer_token_cap
        # How the LLM goes on when asked to continue: (its answer so far, the rest) -> its next piece.
        self.continue_with: Callable[[str, str], LLMOutput] = continue_exactly
        self.retry_delay = retry_delay  # pause between the kernel's own attempts (real: ~1 s)
        self.record = record  # keep bodies in `queries` and `llm_requests` (off for benchmarks)
        self.host = host
        self.port = port

        self._script: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._reset_observations()
        self.llms_selected = False  # POST /user/select/llms was called: /query naming llms → 500

    def reset_counters(self) -> None:
        """Forget what earlier tests did (for a kernel shared by a module); call it while idle."""
        in_flight, busy = getattr(self, "in_flight", 0), getattr(self, "busy_workers", 0)
        self._reset_observations()
        self.in_flight = self.max_in_flight = in_flight
        self.busy_workers = self.max_busy_workers = busy

    def _reset_observations(self) -> None:
        self.queries: list[Any] = []  # /query bodies: parsed JSON, or raw bytes when not JSON
        self.query_count = 0  # every /query received, parseable or not
        self.in_flight = 0  # /query HTTP requests open right now
        self.max_in_flight = 0
        self.busy_workers = 0  # kernel worker slots held (hung work keeps its slot)
        self.max_busy_workers = 0
        self.attempts = 0  # the kernel's attempts at the LLM, retries included
        self.llm_requests: list[LLMRequest] = []
        self.disconnects = 0  # clients that left before their /query was answered
        self.finished_after_disconnect = 0  # kernel work that went on and finished anyway
        self.batches: list[int] = []  # sizes of the batches the scheduler ran
        self.poisoned_batches = 0  # batches hung by an `llms` entry without a name

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FakeKernel:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> FakeKernel:
        if self._thread is not None:
            raise RuntimeError("FakeKernel already started")
        # proto=IPPROTO_TCP, or asyncio skips TCP_NODELAY on accepted sockets and every answer
        # (headers and body are two writes) waits 40 ms for a delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self.port))
        self.port = self._socket.getsockname()[1]
        self._ready.clear()
        self._thread = threading.Thread(target=self._run_loop, name=f"fake-aios-kernel:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake kernel did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("fake kernel failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop quickly: hung requests get their connections dropped, kernel work is cancelled."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._begin_stop)
        except RuntimeError:
            pass  # the loop already closed
        thread.join(5)
        self._thread = None
        self._loop = None

    def _run_loop(self) -> None:
        try:
            import uvloop  # type: ignore[import-not-found]

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._startup_error = exc
        finally:
            self._ready.set()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping: asyncio.Future = loop.create_future()
        self._slots = asyncio.Semaphore(self.workers)
        self._batch_queue: list[_Job] = []
        self._kernel_tasks: set[asyncio.Task] = set()
        self._batch_now = asyncio.Event()
        config = uvicorn.Config(
            self._app,
            interface="asgi3",  # a bound method defeats uvicorn's guess
            lifespan="off",
            proxy_headers=False,
            log_config=None,
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=0.5,  # a dripping answer may finish; then it is cut
        )
        self._server = _Server(config, on_started=self._ready.set)
        scheduler = loop.create_task(self._scheduler()) if self.batch_interval > 0 else None
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            if scheduler is not None:
                scheduler.cancel()

    def _begin_stop(self) -> None:
        if not self._stopping.done():
            self._stopping.set_result(None)
        for task in list(self._kernel_tasks):
            task.cancel()
        if self._server is not None:
            self._server.should_exit = True
            self._server.exit_now.set()

    # ---------------------------------------------------------------- script and observation

    def script(self, *items: Any) -> None:
        """Queue per-/query behaviour: each /query (in arrival order) consumes the next item,
        then /query falls back to the `llm` callable. Items: any LLM output (Text, ToolCalls,
        Empty, LLMFailure, Unreachable, TooSlow, Hang, Delay, Retried, str) or a transport
        fault (RawResponse and its helpers, Drip, ResetMidBody)."""
        self._script.extend(items)

    def clear_script(self) -> None:
        self._script.clear()

    @property
    def script_left(self) -> int:
        return len(self._script)

    @property
    def queued(self) -> int:
        """Requests waiting in the scheduler's queue for the next batch (batching only)."""
        return len(getattr(self, "_batch_queue", ()))

    def run_batch_now(self) -> None:
        """Wake the scheduler at once (thread-safe). With batch_interval=math.inf the scheduler
        runs only on this call, which makes batch membership deterministic in tests."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._batch_now.set)

    def select_llms(self) -> None:
        """Same as POST /user/select/llms: every later /query naming llms fails with HTTP 500."""
        self.llms_selected = True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_until(
        self, predicate: Callable[[FakeKernel], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Block until predicate(kernel) holds; raise TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake kernel: no {what} within {timeout} s ({self._summary()})")
                self._changed.wait(left)

    def _summary(self) -> str:
        return (
            f"queries={self.query_count} in_flight={self.in_flight} busy_workers={self.busy_workers} "
            f"disconnects={self.disconnects} attempts={self.attempts}"
        )

    def wait_for_queries(self, n: int, timeout: float = 5.0) -> None:
        """Block until at least n /query calls have arrived (counted on arrival, before any answer)."""
        self.wait_until(lambda k: k.query_count >= n, timeout, f"{n} /query calls")

    def wait_for_in_flight(self, n: int, timeout: float = 5.0) -> None:
        """Block until exactly n /query calls are open."""
        self.wait_until(lambda k: k.in_flight == n, timeout, f"{n} /query calls in flight")

    def wait_for_disconnects(self, n: int, timeout: float = 5.0) -> None:
        """Block until at least n clients have left before their /query was answered."""
        self.wait_until(lambda k: k.disconnects >= n, timeout, f"{n} client disconnects")

    async def wait_until_async(
        self, predicate: Callable[[FakeKernel], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        await asyncio.to_thread(self.wait_until, predicate, timeout, what)

    async def wait_for_queries_async(self, n: int, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.wait_for_queries, n, timeout)

    async def wait_for_in_flight_async(self, n: int, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.wait_for_in_flight, n, timeout)

    async def wait_for_disconnects_async(self, n: int, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.wait_for_disconnects, n, timeout)

    # ---------------------------------------------------------------- ASGI

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        origin = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = True
        cors = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ] if origin else []

        if method == "OPTIONS" and origin and preflight:
            await self._preflight(scope, send, origin)
        elif path == "/query":
            if method == "POST":
                await self._query(scope, receive, send, cors)
            else:
                await self._send_json(send, 405, {"detail": "Method Not Allowed"}, cors)
        elif path == "/status" and method == "GET":
            await self._send_json(send, 200, {"status": "ok", "message": "AIOS kernel is running"}, cors)
        elif path == "/core/llms/list" and method == "GET" and self.list_body is not None:
            await self._send_json(send, 200, None, cors, raw=self.list_body)
        elif path == "/core/llms/list" and method == "GET":
            if self.llm_core_ready:
                body = {"status": "success", "llms": self.models}
            else:
                body = {"status": "warning", "message": "LLM core not initialized", "llms": []}
            await self._send_json(send, 200, body, cors)
        elif path == "/user/select/llms" and method == "POST":
            await _read_body(receive)
            self.llms_selected = True
            await self._send_json(send, 200, {"status": "success", "message": "LLMs selected"}, cors)
        elif path in ("/status", "/core/llms/list", "/user/select/llms"):
            await self._send_json(send, 405, {"detail": "Method Not Allowed"}, cors)
        else:
            await self._send_json(send, 404, {"detail": "Not Found"}, cors)

    async def _preflight(self, scope: dict, send: Callable, origin: bytes) -> None:
        requested = next((v for k, v in scope["headers"] if k == b"access-control-request-headers"), None)
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", _PREFLIGHT_METHODS),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"2"),
        ]
        if requested:
            headers.append((b"access-control-allow-headers", requested))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"OK"})

    async def _send_json(self, send: Callable, status: int, body: Any, extra: list, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = [_JSON, (b"content-length", str(len(data)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _query(self, scope: dict, receive: Callable, send: Callable, cors: list) -> None:
        body = await _read_body(receive)
        item = self._script.popleft() if self._script else None
        try:
            payload: Any = json.loads(body)
            parsed = True
        except ValueError as exc:
            payload, parsed, decode_error = body, False, exc
        if self.record:
            self.queries.append(payload)
        self.query_count += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        self._notify()
        try:
            if isinstance(item, RawResponse):
                data, headers = item.encoded()
                headers = [*headers, (b"content-length", str(len(data)).encode()), *cors]
                await send({"type": "http.response.start", "status": item.status, "headers": headers})
                await send({"type": "http.response.body", "body": data})
                return
            if isinstance(item, Huge):
                await self._huge(send, receive, cors, item)
                return
            if not parsed:
                position, reason = getattr(decode_error, "pos", 0), getattr(decode_error, "msg", str(decode_error))
                detail = [{
                    "type": "json_invalid",
                    "loc": ["body", position],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": reason},
                }]
                await self._send_json(send, 422, {"detail": detail}, cors)
                return
            errors = _validation_errors(payload)
            if errors:
                await self._send_json(send, 422, {"detail": errors}, cors)
                return
            query_data = payload["query_data"]
            if self.llms_selected and query_data.get("llms"):
                await self._send_json(send, 500, {"detail": "'provider'"}, cors)
                return
            if payload["query_type"] != "llm":
                served = f"the fake kernel only serves query_type 'llm', not {payload['query_type']!r}"
                response = _llm_response(error=served, status=400)
                await self._send_json(send, 200, None, cors, raw=_envelope(response))
                return

            job = _Job(query_data, item, asyncio.get_running_loop())
            work = asyncio.ensure_future(self._kernel_work(job))
            self._kernel_tasks.add(work)
            work.add_done_callback(self._kernel_tasks.discard)
            response = await self._answer_or_disconnect(scope, job, work, receive)
            if response is None:
                return
            data = _envelope(response)
            if isinstance(item, Drip):
                await self._drip(send, data, cors, item)
            elif isinstance(item, ResetMidBody):
                await self._reset_mid_body(scope, send, data, cors, item)
            else:
                await self._send_json(send, 200, None, cors, raw=data)
        finally:
            self.in_flight -= 1
            self._notify()

    async def _answer_or_disconnect(self, scope: dict, job: _Job, work: asyncio.Task, receive: Callable) -> dict | None:
        """The kernel's answer; None when the client left (the work goes on) or the kernel stops."""
        # One turn of the loop lets instant work finish; only slow work pays for a disconnect watch.
        await asyncio.sleep(0)
        if work.done() and not work.cancelled():
            return work.result()
        disconnect = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((work, disconnect, self._stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not disconnect.done():
                disconnect.cancel()
        if work.done() and not work.cancelled():
            return work.result()
        if self._stopping.done():
            await self._drop_connection(scope, hard=True)
            return None
        # The client left. The real kernel does not notice: its work runs on and keeps its slot.
        job.client_gone = True
        self.disconnects += 1
        self._notify()
        return None

    async def _kernel_work(self, job: _Job) -> dict:
        async with self._slots:
            self.busy_workers += 1
            if self.busy_workers > self.max_busy_workers:
                self.max_busy_workers = self.busy_workers
            self._notify()
            try:
                if self.scheduler_dead:
                    await asyncio.get_running_loop().create_future()  # never answered
                if self.batch_interval > 0:
                    self._batch_queue.append(job)
                    self._notify()
                    result = await job.result
                else:
                    if _is_poisoned(job):
                        self.poisoned_batches += 1
                        await job.result  # never resolved: the batch crashed
                    result = await self._execute(job)
            finally:
                self.busy_workers -= 1
                self._notify()
        if job.client_gone:
            self.finished_after_disconnect += 1
            self._notify()
        return result

    async def _scheduler(self) -> None:
        """The FIFO scheduler: sleep, drain the queue, run the batch, wait for all of it."""
        interval = None if self.batch_interval == float("inf") else self.batch_interval
        while True:
            try:
                await asyncio.wait_for(self._batch_now.wait(), interval)
            except TimeoutError:
                pass
            self._batch_now.clear()
            if not self._batch_queue:
                continue
            batch, self._batch_queue = self._batch_queue, []
            self.batches.append(len(batch))
            self._notify()
            if any(_is_poisoned(job) for job in batch):
                # The batch crashes: none of its requests ever gets an answer.
                self.poisoned_batches += 1
                self._notify()
                continue
            results = await asyncio.gather(*(self._execute(job) for job in batch), return_exceptions=True)
            for job, result in zip(batch, results, strict=False):
                if job.result.done():
                    continue
                if isinstance(result, BaseException):
                    job.result.set_exception(result)
                else:
                    job.result.set_result(result)
            self._notify()

    # ---------------------------------------------------------------- the kernel's LLM syscall

    async def _execute(self, job: _Job) -> dict:
        query_data = job.query_data
        messages = query_data.get("messages") or []
        if not messages:
            return _llm_response(error="Syscall query must contain a non-empty list of messages.", status=400)
        model = self._route(query_data.get("llms"))
        if model is None:
            return _llm_response(
                error="Selected LLMs are not all available. Please check the available LLMs.", status=500
            )
        model_name = model["name"]
        tools = query_data.get("tools") or None
        if tools and any(not isinstance(t.get("function"), dict) for t in tools):
            return _llm_response(error=_invalid_request(model_name), status=400)
        if any(not isinstance(m.get("content"), (str, list, type(None))) for m in messages):
            # litellm chokes on the content before sending; the kernel calls that a connection error.
            return _llm_response(
                error=f"Connection Error with model '{model_name}'. Could not reach the LLM service.", status=503
            )

        llm_messages = [dict(m, role="system") if m.get("role") == "developer" else m for m in messages]
        llm_tools = _slash_to_double_underscore(tools) if tools else None
        output = await self._ask_llm(job.item, llm_messages, llm_tools, model_name)
        if self.answer_token_cap is not None and isinstance(output, Text):
            output = Text(output.text[: self.answer_token_cap * CHARS_PER_TOKEN])
        policy = _failure_policy(output, model_name)
        if policy is not None:
            status, sentence, _ = policy
            return _llm_response(error=sentence, status=status)

        if not tools:
            content = output.text if isinstance(output, (Text, ToolCalls)) else None
            if content is None:
                return _llm_response("None", error=EMPTY_CONTENT_WARNING, status=200)
            return _llm_response(content)
        if model.get("backend") in ("vllm", "sglang"):
            return _llm_response(error="Tool call decoding error: 'list' object has no attribute 'choices'", status=500)
        try:
            calls = _decode_tool_response(output)
        except _ToolDecodingError as exc:
            return _llm_response(error=f"Tool call decoding error: {exc}", status=500)
        for call in calls:
            if isinstance(call["name"], str):
                call["name"] = call["name"].replace("__", "/")
        return _llm_response(None, tool_calls=calls)

    def _route(self, llms: list | None) -> dict | None:
        """Routing uses llms[].name only; no llms means the first model."""
        if not llms:
            return self.models[0] if self.models else None
        by_name = {m["name"]: m for m in self.models}
        chosen = [by_name.get(entry.get("name")) for entry in llms]
        return None if any(m is None for m in chosen) else chosen[0]

    async def _ask_llm(self, item: Any, messages: list, tools: list | None, model_name: str) -> Any:
        """The kernel's attempts at the LLM, with its own retries."""
        attempt = 0
        while True:
            if isinstance(item, Retried):
                planned = item.outputs[min(attempt, len(item.outputs) - 1)]
            elif isinstance(item, (Drip, ResetMidBody)):
                planned = item.then
            else:
                planned = item
            attempt += 1
            self.attempts += 1
            if self.record:
                self.llm_requests.append(LLMRequest(model_name, messages, tools))
            self._notify()  # every counter a test may wait on wakes the waiters
            if self.llm_latency:
                await asyncio.sleep(self.llm_latency)
            output = await self._resolve(planned, messages, tools, model_name)
            policy = _failure_policy(output, model_name)
            if policy is None or attempt >= policy[2]:
                return output
            if self.retry_delay:
                await asyncio.sleep(self.retry_delay)

    async def _ask_callable(self, messages: list, tools: list | None, model_name: str) -> Any:
        """The ``llm`` callable's answer. Asked to continue an answer it was giving (the conversation
        ends with that answer, cut, as the assistant's turn and a user turn asking to continue), it
        goes on from where the assistant's turn ended, as a real LLM does: the rest of what it
        answers the conversation before those two turns, or "nothing more" when nothing is left."""
        continued = _continuation_of(messages)
        if continued is not None:
            earlier, partial = continued
            whole = self.llm(earlier, tools, model_name)
            if inspect.isawaitable(whole):
                whole = await whole
            text = whole.text if isinstance(whole, Text) else whole if isinstance(whole, str) else None
            if text is not None and text.startswith(partial):
                return self.continue_with(partial, text[len(partial):])
        planned = self.llm(messages, tools, model_name)
        if inspect.isawaitable(planned):
            planned = await planned
        return planned

    async def _resolve(self, planned: Any, messages: list, tools: list | None, model_name: str) -> Any:
        while True:
            if isinstance(planned, Hang):
                await planned._wait()
                planned = planned.then
            elif isinstance(planned, Delay):
                await asyncio.sleep(planned.seconds)
                planned = planned.then
            elif planned is None:
                try:
                    planned = await self._ask_callable(messages, tools, model_name)
                except Exception:
                    # The real kernel turns any other LLM exception into its generic 500; the
                    # traceback goes to the log so a broken test callable is easy to spot.
                    logger.exception("fake kernel: the llm callable raised")
                    return LLMFailure(599, "llm callable raised")
                if planned is None:
                    return Empty()
            elif isinstance(planned, str):
                return Text(planned)
            else:
                return planned

    # ---------------------------------------------------------------- transport faults

    async def _drip(self, send: Callable, data: bytes, cors: list, item: Drip) -> None:
        headers = [_JSON, (b"content-length", str(len(data)).encode()), *cors]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(data), item.chunk_size):
            chunk = data[start : start + item.chunk_size]
            last = start + item.chunk_size >= len(data)
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if not last:
                await asyncio.sleep(item.interval)

    async def _huge(self, send: Callable, receive: Callable, cors: list, item: Huge) -> None:
        filler = max(0, item.size - len(_HUGE_HEAD) - len(_HUGE_TAIL))
        headers = [_JSON, *cors]
        if item.content_length:
            headers.append((b"content-length", str(len(_HUGE_HEAD) + filler + len(_HUGE_TAIL)).encode()))
        # uvicorn drops what is sent after a disconnect without a word: stop once nobody reads.
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": _HUGE_HEAD, "more_body": True})
            chunk = b"a" * item.chunk_size
            while filler > 0 and not gone.done():
                piece = chunk if filler >= len(chunk) else chunk[:filler]
                filler -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            if not gone.done():
                await send({"type": "http.response.body", "body": _HUGE_TAIL})
        finally:
            gone.cancel()

    async def _reset_mid_body(self, scope: dict, send: Callable, data: bytes, cors: list, item: ResetMidBody) -> None:
        headers = [_JSON, (b"content-length", str(len(data)).encode()), *cors]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True})
        if item.pause:
            await asyncio.sleep(item.pause)
        await self._drop_connection(scope, hard=item.hard)

    async def _drop_connection(self, scope: dict, hard: bool) -> None:
        """Close this request's TCP connection from under uvicorn (an RST when `hard`)."""
        server = self._server
        connections = server.server_state.connections if server is not None else ()
        for protocol in list(connections):
            if getattr(protocol, "client", None) == scope.get("client"):
                transport = protocol.transport
                if hard:
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        try:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        except OSError:
                            pass
                    transport.abort()
                else:
                    transport.close()
                break
        # Let connection_lost run, so uvicorn sees the disconnect and writes nothing more.
        for _ in range(3):
            await asyncio.sleep(0)


def continue_exactly(partial: str, rest: str) -> LLMOutput:
    """The LLM continuing as asked: the very next character on, or "nothing more" when nothing is left."""
    return Text(rest or "nothing more")


def _continuation_of(messages: list) -> tuple[list, str] | None:
    """(the conversation before, the assistant's cut answer) when ``messages`` asks to continue it."""
    if len(messages) < 3:
        return None
    answer, ask = messages[-2], messages[-1]
    if not (isinstance(answer, dict) and answer.get("role") == "assistant" and isinstance(answer.get("content"), str)):
        return None
    if not (isinstance(ask, dict) and ask.get("role") == "user" and "continue" in _text_of(ask.get("content")).lower()):
        return None
    return messages[:-2], answer["content"]


def _is_poisoned(job: _Job) -> bool:
    """An `llms` entry without a name crashes the scheduler's whole batch."""
    return any("name" not in entry for entry in job.query_data.get("llms") or ())


async def _read_body(receive: Callable) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def _wait_for_disconnect(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# --------------------------------------------------------------------------------------------
# Standalone: python tests/fake_kernel.py --port 8000 [--batch-interval 1.0] [--model NAME ...]
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake AIOS kernel until SIGTERM/SIGINT.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch-interval", type=float, default=0.0, help="1.0 reproduces the real FIFO scheduler")
    parser.add_argument("--workers", type=int, default=10_000, help="the real kernel: min(32, cpu_count + 4)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the LLM takes per attempt")
    parser.add_argument("--model", action="append", metavar="NAME[@BACKEND]", help="repeatable; default: a few models")
    parser.add_argument("--llm-core-not-ready", action="store_true")
    parser.add_argument("--record", action="store_true", help="keep every body in memory (off: benchmarks run long)")
    parser.add_argument("--answer-token-cap", type=int, default=ANSWER_TOKEN_CAP,
                        help="the LLM stops after this many tokens (4 characters each), as behind the real kernel; "
                             "0: no cap")
    args = parser.parse_args(argv)

    models = None
    if args.model:
        models = []
        for spec in args.model:
            name, _, backend = spec.rpartition("@") if "@" in spec else (spec, "", "openai")
            models.append({"name": name, "backend": backend or "openai", "hostname": "http://127.0.0.1:11434"})
    kernel = FakeKernel(
        models,
        batch_interval=args.batch_interval,
        workers=args.workers,
        llm_core_ready=not args.llm_core_not_ready,
        llm_latency=args.latency,
        record=args.record,
        answer_token_cap=args.answer_token_cap or None,
        host=args.host,
        port=args.port,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with kernel:
        print(f"fake AIOS kernel listening on {kernel.url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
