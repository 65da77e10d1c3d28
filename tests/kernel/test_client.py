"""KernelClient: every way the kernel answers (or does not) becomes a result or the right KernelError."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from aiosd.errors import (
    KernelBadAnswer,
    KernelRateLimited,
    KernelRejected,
    KernelTimeout,
    KernelUnreachable,
)
from aiosd.kernel.client import KernelClient
from aiosd.kernel.errors import parse_retry_after, scrub, summarize_validation_detail
from tests.support.kernel_calls import inner, kernel_settings, real_body, retry_settings

BODY = {
    "agent_name": "openclaw",
    "query_type": "llm",
    "query_data": {"messages": [{"role": "user", "content": "hello"}], "llms": [{"name": "m"}]},
}


def client_answering(handler) -> KernelClient:
    return KernelClient(kernel_settings(), transport=httpx.MockTransport(handler))


def answer(status: int = 200, body: object = None, headers: dict | None = None, raw: bytes | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if raw is not None:
            return httpx.Response(status, content=raw, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


async def query_error(handler) -> BaseException:
    async with client_answering(handler) as client:
        with pytest.raises(Exception) as info:
            await client.query(BODY, timeout=5)
    return info.value


# --- success -------------------------------------------------------------------------------------


async def test_success_returns_the_response_object_and_sends_the_body_once_serialised():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=inner(), headers={"access-control-allow-origin": "*", "set-cookie": "a=b"})

    async with client_answering(handler) as client:
        result = await client.query(BODY, timeout=5)
        # A second call: the kernel's cookie must not come back.
        await client.query(BODY, timeout=5)
    assert result == inner()["response"]
    assert seen[0].method == "POST" and seen[0].url.path == "/query"
    assert json.loads(seen[0].content) == BODY
    assert seen[0].headers["content-type"] == "application/json"
    assert "cookie" not in seen[1].headers


async def test_pre_serialised_bytes_are_sent_as_they_are():
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json=inner())

    raw = json.dumps(BODY).encode()
    async with client_answering(handler) as client:
        await client.query(raw, timeout=5)
    assert seen == [raw]


async def test_success_records_liveness_and_latency():
    async with client_answering(answer(200, inner())) as client:
        assert client.last_success_at is None
        await client.query(BODY, timeout=5)
        assert client.last_success_at is not None
        assert client.last_query_answer_at == client.last_success_at
        assert client.answered_within(60)
        assert len(client.recent_latencies()) == 1
        assert client.latency_summary().count == 1


async def test_latency_ring_keeps_only_the_last_calls():
    client = KernelClient(kernel_settings(), transport=httpx.MockTransport(answer(200, inner())), latency_window=3)
    async with client:
        for _ in range(5):
            await client.query(BODY, timeout=5)
        assert len(client.recent_latencies()) == 3


# --- errors inside HTTP 200 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel_code", "error_type", "client_status", "words"),
    [
        (429, KernelRateLimited, 429, "rate limited"),
        (408, KernelRejected, 504, "too long"),
        (400, KernelRejected, 400, "rejected the request"),
        (401, KernelRejected, 502, "credentials"),
        (404, KernelRejected, 502, "model configuration"),
        (500, KernelRejected, 502, "failed"),
        (502, KernelRejected, 502, "failed"),
        (503, KernelRejected, 503, "cannot reach its LLM"),
    ],
)
async def test_errors_inside_http_200_are_mapped(kernel_code, error_type, client_status, words):
    err = await query_error(answer(200, inner(kernel_code, None, "Generic kernel sentence")))
    assert type(err) is error_type
    assert err.kernel_status == kernel_code
    assert err.status == client_status
    assert words in err.message
    assert "Generic kernel sentence" in err.message


async def test_an_error_inside_200_proves_the_kernel_works():
    async with client_answering(answer(200, inner(429, None, "Rate Limit Exceeded"))) as client:
        with pytest.raises(KernelRateLimited):
            await client.query(BODY, timeout=5)
        assert client.last_query_answer_at is not None


async def test_llm_400_is_the_clients_content_error():
    err = await query_error(answer(200, inner(400, None, "bad request")))
    assert err.type == "invalid_request_error"
    assert err.code == "llm_rejected_request"


async def test_unknown_model_points_at_the_kernel_config():
    err = await query_error(answer(200, inner(500, None, "Selected LLMs are not all available: x")))
    assert err.status == 502 and err.code == "kernel_model_unavailable"


async def test_secrets_in_the_kernel_sentence_are_redacted():
    sentence = "AuthenticationError: Incorrect API key provided: sk-proj-abcdefghijklmnop1234"
    err = await query_error(answer(200, inner(401, None, sentence)))
    assert "sk-proj" not in err.message and "[redacted]" in err.message


async def test_retry_after_header_is_kept_on_the_error():
    err = await query_error(answer(200, inner(429, None, "slow down"), headers={"retry-after": "7"}))
    assert err.retry_after == 7.0


# --- HTTP-level errors --------------------------------------------------------------------------------


async def test_422_is_summarised_in_one_sentence_without_the_input():
    detail = [
        {"type": "missing", "loc": ["body", "query_data", "LLMQuery", "messages"], "msg": "Field required",
         "input": {"secret prompt": "do not echo"}},
        {"type": "missing", "loc": ["body", "query_data", "ToolQuery", "tools"], "msg": "Field required",
         "input": {"secret prompt": "do not echo"}},
        {"type": "missing", "loc": ["body", "query_data", "MemoryQuery"], "msg": "Field required", "input": None},
    ]
    err = await query_error(answer(422, {"detail": detail}))
    assert type(err) is KernelRejected and err.status == 502 and err.kernel_status == 422
    assert "body.query_data.LLMQuery.messages: Field required (and 2 more problems)" in err.message
    assert "secret prompt" not in err.message
    assert "\n" not in err.message


async def test_500_detail_becomes_the_message():
    err = await query_error(answer(500, {"detail": "boom"}))
    assert type(err) is KernelRejected and err.status == 502 and err.kernel_status == 500
    assert "boom" in err.message


async def test_500_provider_explains_the_stuck_kernel():
    err = await query_error(answer(500, {"detail": "'provider'"}))
    assert "restart" in err.message


async def test_http_429_with_retry_after_is_rate_limited():
    err = await query_error(answer(429, {"detail": "x"}, headers={"retry-after": "3"}))
    assert type(err) is KernelRateLimited and err.status == 429 and err.retry_after == 3.0


async def test_http_503_stays_503():
    err = await query_error(answer(503, raw=b"unavailable"))
    assert err.status == 503 and err.kernel_status == 503


async def test_http_404_says_the_url_is_wrong():
    err = await query_error(answer(404, {"detail": "Not Found"}))
    assert err.code == "kernel_wrong_url" and err.status == 502


async def test_http_level_failures_do_not_count_as_liveness():
    async with client_answering(answer(500, {"detail": "boom"})) as client:
        with pytest.raises(KernelRejected):
            await client.query(BODY, timeout=5)
        assert client.last_success_at is None


# --- no usable answer -------------------------------------------------------------------------------------


async def test_connection_refused_is_unreachable_with_status_0():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    err = await query_error(handler)
    assert type(err) is KernelUnreachable and err.kernel_status == 0 and err.status == 502


async def test_garbage_on_the_wire_is_unreachable():
    def handler(request):
        raise httpx.RemoteProtocolError("illegal status line", request=request)

    err = await query_error(handler)
    assert type(err) is KernelUnreachable and err.kernel_status == 0


@pytest.mark.parametrize(
    "body",
    [b"<html>hello</html>", b'{"status": "ok"}', b'{"response": "text"}', b'{"response": {"status_code": "200"}}'],
)
async def test_200_that_is_not_a_query_answer_is_a_bad_answer(body):
    err = await query_error(answer(200, raw=body))
    assert type(err) is KernelBadAnswer and err.kernel_status == 0


async def test_own_deadline_is_a_timeout_without_kernel_status():
    async def handler(request):
        await asyncio.Event().wait()  # the kernel hangs forever

    err = await query_error_with_timeout(handler, 0.05)
    assert type(err) is KernelTimeout and err.kernel_status is None and err.status == 504


async def query_error_with_timeout(handler, timeout: float) -> BaseException:
    async with client_answering(handler) as client:
        with pytest.raises(Exception) as info:
            await client.query(BODY, timeout=timeout)
    return info.value


async def test_cancelling_a_call_propagates_and_is_not_a_timeout():
    started = asyncio.Event()

    async def handler(request):
        started.set()
        await asyncio.Event().wait()

    async with client_answering(handler) as client:
        task = asyncio.create_task(client.query(BODY, timeout=5))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client._wire.in_flight == 0


# --- the model list ---------------------------------------------------------------------------------------


async def test_list_llms_keeps_only_name_and_backend():
    listing = {
        "status": "success",
        "llms": [
            {
                "name": "gpt-4o-mini",
                "backend": "openai",
                "hostname": "http://10.0.0.5:8000",
                "api_key": "sk-secret123456",
            },
            {"name": "qwen", "backend": "ollama", "hostname": "http://localhost:11434"},
            {"backend": "broken"},
            "nonsense",
        ],
    }
    async with client_answering(answer(200, listing)) as client:
        models = await client.list_llms()
        assert client.last_success_at is not None
        assert client.last_query_answer_at is None  # a list does not prove the scheduler runs
    assert models == [{"name": "gpt-4o-mini", "backend": "openai"}, {"name": "qwen", "backend": "ollama"}]
    assert "hostname" not in repr(models) and "sk-secret" not in repr(models)


async def test_list_llms_before_the_llm_core_is_up_is_not_ready():
    listing = {"status": "warning", "message": "LLM core not initialized", "llms": []}
    async with client_answering(answer(200, listing)) as client:
        with pytest.raises(KernelRejected) as info:
            await client.list_llms()
        assert client.last_success_at is None
    assert info.value.code == "kernel_not_ready" and info.value.status == 503
    assert "not initialized" in info.value.message


async def test_list_llms_unreachable():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    async with client_answering(handler) as client:
        with pytest.raises(KernelUnreachable):
            await client.list_llms()


# --- configuration ------------------------------------------------------------------------------------------


async def test_reload_with_a_new_url_uses_a_new_pool_and_lets_calls_in_flight_finish():
    release = asyncio.Event()
    hosts: list[str] = []

    async def handler(request):
        hosts.append(request.url.host)
        if request.url.host == "old.test":
            await release.wait()
        return httpx.Response(200, json=inner())

    client = KernelClient(kernel_settings("http://old.test"), transport=httpx.MockTransport(handler))
    async with client:
        slow = asyncio.create_task(client.query(BODY, timeout=5))
        while not hosts:
            await asyncio.sleep(0)
        client.apply_settings(kernel_settings("http://new.test"))
        await client.query(BODY, timeout=5)
        release.set()
        assert (await slow)["status_code"] == 200
    assert hosts == ["old.test", "new.test"]


@pytest.mark.parametrize("choice", ["lean", "aiohttp", "httpx", None])
async def test_transport_choices(choice):
    client = KernelClient(kernel_settings(), transport=choice)
    assert client.transport_name == (choice or "lean")
    await client.close()


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError):
        KernelClient(kernel_settings(), transport="carrier-pigeon")  # type: ignore[arg-type]


# --- helpers ------------------------------------------------------------------------------------------------


def test_parse_retry_after():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_scrub_bounds_and_flattens():
    assert scrub("a\n  b") == "a b"
    assert len(scrub("x" * 1000)) <= 300
    assert "[redacted]" in scrub('{"api_key": "abc123"}')
    assert "[redacted]" in scrub("Authorization: Bearer abc.def")


def test_summarize_validation_detail_shapes():
    assert summarize_validation_detail("plain") == "plain"
    assert summarize_validation_detail([]) == "no detail given"
    assert summarize_validation_detail([{"loc": ["body"], "msg": "bad"}]) == "body: bad"


# --- against the fake kernel, a real HTTP server on loopback -------------------------------------------

import tests.support.fake_kernel as fake_kernel  # noqa: E402


@pytest.fixture(scope="module")
def shared_kernel():
    with fake_kernel.FakeKernel() as server:
        yield server


@pytest.fixture
def kernel(shared_kernel):
    # One server for the module (starting one costs ~0.1 s); each test gets an empty script.
    shared_kernel.clear_script()
    yield shared_kernel
    shared_kernel.clear_script()


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TRANSPORTS = ["lean", "aiohttp", "httpx"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_answers(kernel, transport):
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        result = await client.query(real_body("hi there"), timeout=5)
        again = await client.query(real_body("second"), timeout=5)
    assert result["response_message"] == "echo: hi there" and result["status_code"] == 200
    assert again["response_message"] == "echo: second"
    assert kernel.queries[-2] == real_body("hi there")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_down_is_unreachable(transport):
    url = f"http://127.0.0.1:{closed_port()}"
    async with KernelClient(kernel_settings(url), transport=transport) as client:
        with pytest.raises(KernelUnreachable) as info:
            await client.query(real_body(), timeout=5)
        with pytest.raises(KernelUnreachable):
            await client.list_llms()
    assert info.value.kernel_status == 0 and url in info.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_hanging_past_the_deadline_times_out(kernel, transport):
    hang = fake_kernel.Hang()
    kernel.script(hang)
    try:
        async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
            with pytest.raises(KernelTimeout):
                await client.query(real_body(), timeout=0.2)
            # The pool is still usable after the abandoned call.
            assert (await client.query(real_body("after"), timeout=5))["response_message"] == "echo: after"
    finally:
        hang.release()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_429_inside_200(kernel, transport):
    kernel.script(fake_kernel.LLMFailure(429))
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        with pytest.raises(KernelRateLimited) as info:
            await client.query(real_body(), timeout=5)
        assert client.last_query_answer_at is not None
    assert info.value.status == 429 and info.value.kernel_status == 429
    assert "Rate Limit Exceeded" in info.value.message


async def test_real_kernel_429_twice_then_success_with_the_retry_policy(kernel):
    from aiosd.kernel.retry import RetryPolicy
    kernel.script(fake_kernel.LLMFailure(429), fake_kernel.LLMFailure(429))
    policy = RetryPolicy(retry_settings(initial=0.01, max=0.01))
    async with KernelClient(kernel_settings(kernel.url)) as client:
        result, attempts = await policy.run(lambda _: client.query(real_body("third"), timeout=5))
    assert attempts == 3 and result["response_message"] == "echo: third"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_http_retry_after_is_kept(kernel, transport):
    kernel.script(fake_kernel.RetryAfter(7))
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        with pytest.raises(KernelRateLimited) as info:
            await client.query(real_body(), timeout=5)
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("item", "error_type", "kernel_status"),
    [
        (lambda fk: fk.Garbage(), KernelBadAnswer, 0),
        (lambda fk: fk.ResetMidBody(), KernelUnreachable, 0),
        (lambda fk: fk.Unprocessable(), KernelRejected, 422),
        (lambda fk: fk.ServerError("'provider'"), KernelRejected, 500),
        (lambda fk: fk.TooSlow(), KernelRejected, 408),
        (lambda fk: fk.Unreachable(), KernelRejected, 503),
        (lambda fk: fk.LLMFailure(401), KernelRejected, 401),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_faults(kernel, item, error_type, kernel_status, transport):
    kernel.script(item(fake_kernel))
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        with pytest.raises(error_type) as info:
            await client.query(real_body(), timeout=5)
    assert info.value.kernel_status == kernel_status
    assert "\n" not in info.value.message


async def test_real_kernel_unknown_model(kernel):
    async with KernelClient(kernel_settings(kernel.url)) as client:
        with pytest.raises(KernelRejected) as info:
            await client.query(real_body(model="nope"), timeout=5)
    assert info.value.code == "kernel_model_unavailable"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_real_kernel_model_list_drops_hostname_and_api_key(kernel, transport):
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        models = await client.list_llms()
    assert models == [
        {"name": "gpt-4o-mini", "backend": "openai"},
        {"name": "qwen2.5:7b", "backend": "ollama"},
        {"name": "meta-llama/Llama-3.1-8B-Instruct", "backend": "vllm"},
    ]


async def test_real_kernel_model_list_before_the_llm_core_is_up():
    with fake_kernel.FakeKernel(llm_core_ready=False) as server:
        async with KernelClient(kernel_settings(server.url)) as client:
            with pytest.raises(KernelRejected) as info:
                await client.list_llms()
    assert info.value.code == "kernel_not_ready"



@pytest.fixture
async def junk_server():
    """A TCP server that answers anything with bytes that are not HTTP, then hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_garbage_on_the_wire_from_a_real_socket_is_unreachable(junk_server, transport):
    async with KernelClient(kernel_settings(junk_server), transport=transport) as client:
        with pytest.raises(KernelUnreachable) as info:
            await client.query(real_body(), timeout=5)
    assert info.value.kernel_status == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reload_to_another_kernel_url_takes_effect(kernel, transport):
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        await client.query(real_body(), timeout=5)
        old_wire = client._wire
        down = f"http://127.0.0.1:{closed_port()}"
        client.apply_settings(kernel_settings(down))
        assert client._wire is not old_wire
        with pytest.raises(KernelUnreachable):
            await client.query(real_body(), timeout=5)
        down_wire = client._wire
        client.apply_settings(kernel_settings(down, timeout=1.0))  # nothing the pool depends on
        assert client._wire is down_wire
        client.apply_settings(kernel_settings(kernel.url))
        assert (await client.query(real_body("back"), timeout=5))["response_message"] == "echo: back"


async def test_recent_latency_for_status_output():
    async with client_answering(answer(200, inner())) as client:
        assert client.recent_latency() is None
        await client.query(BODY, timeout=5)
        latency = client.recent_latency()
    assert latency["count"] == 1 and set(latency) == {"count", "p50", "p90", "max", "last"}
    json.dumps(latency)


# --- deeply nested JSON -------------------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on it


def nested(levels: int, leaf: object = 1) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"response": ' + DEEP + b"}",
        # Decodes, but deep enough that encoding the reply or quoting it in an error would recurse too far.
        json.dumps({"response": {"status_code": 200, "response_message": None,
                                 "tool_calls": [{"name": "t", "parameters": {"x": nested(900)}}]}}).encode(),
    ],
    ids=["100000_levels", "inside_response", "900_levels_in_tool_arguments"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_deeply_nested_json_from_the_kernel_is_a_bad_answer_not_a_crash(kernel, transport, body):
    kernel.script(fake_kernel.RawResponse(200, body, [("content-type", "application/json")]))
    async with KernelClient(kernel_settings(kernel.url), transport=transport) as client:
        with pytest.raises(KernelBadAnswer) as info:
            await client.query(real_body(), timeout=5)
    assert info.value.status == 502 and info.value.code == "kernel_bad_answer"
    assert "nested more than 64 levels deep" in info.value.message


@pytest.mark.parametrize("status", [422, 500, 429])
async def test_deeply_nested_json_in_a_kernel_error_answer_keeps_the_status_mapping(status):
    body = b'{"detail": ' + DEEP + b"}"
    err = await query_error(answer(status, raw=body))
    assert isinstance(err, KernelRejected) and err.kernel_status == status
    assert err.status == (429 if status == 429 else 502)


async def test_deeply_nested_model_list_is_a_bad_answer():
    for body in (DEEP, json.dumps({"status": "success", "llms": [{"name": "m", "backend": nested(200)}]}).encode()):
        async with client_answering(answer(200, raw=body)) as client:
            with pytest.raises(KernelBadAnswer, match=r"/core/llms/list.*model list is nested more than 64 levels"):
                await client.list_llms()


def test_nesting_is_measured_without_recursion():
    from aiosd.kernel.answer_json import loads_answer, nesting_exceeds

    assert not nesting_exceeds({"a": [1, {"b": [2]}]}, 4)
    assert nesting_exceeds({"a": [1, {"b": [[2]]}]}, 4)
    assert nesting_exceeds(nested(100_000), 64)  # built in Python: 100,000 levels, no RecursionError
    assert loads_answer(json.dumps(nested(63)).encode()) == nested(63)


# --- why there was no answer, in words (never "status 0") ----------------------------------------------


@pytest.fixture
def unresolvable_host(monkeypatch):
    """``kernel.invalid`` fails name resolution like a real resolver would, without asking the network."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "kernel.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return "http://kernel.invalid:8000"


@pytest.fixture
def silent_listener():
    """A port whose accept queue is full: the kernel's SYNs go unanswered and connecting times out."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for sock in (*fillers, listener):
        sock.close()


@pytest.fixture
async def hang_up_server():
    """A TCP server that reads the request and closes the connection without a word."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def no_answer(url: str, transport: str, **settings) -> KernelUnreachable:
    async with KernelClient(kernel_settings(url, **settings), transport=transport) as client:
        with pytest.raises(KernelUnreachable) as info:
            await client.query(real_body(), timeout=5)
        assert client.last_failure == info.value.message  # what readiness reasons quote
    error = info.value
    assert error.kernel_status == 0 and "status 0" not in error.message  # retried as before, said in words
    assert error.reason in error.message
    return error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_connection_is_said_as_such(transport):
    url = f"http://127.0.0.1:{closed_port()}"
    error = await no_answer(url, transport)
    assert error.reason == "connection refused"
    assert error.message == f"The AIOS kernel at {url} is unreachable (connection refused)"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_host_name_that_does_not_resolve_is_said_as_such(unresolvable_host, transport):
    error = await no_answer(unresolvable_host, transport)
    assert error.reason == "host name 'kernel.invalid' not found (DNS: Name or service not known)"
    assert "is unreachable" in error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_connect_timeout_is_said_as_such(silent_listener, transport):
    error = await no_answer(silent_listener, transport, connect_timeout=0.2)
    assert error.reason == "no connection within 0.2s, kernel.connect_timeout"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_connection_closed_without_an_answer_is_said_as_such(hang_up_server, transport):
    error = await no_answer(hang_up_server, transport)
    assert error.reason == "the kernel closed the connection without answering"
    assert "gave no usable answer to /query" in error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_reset_mid_answer_and_garbage_are_said_as_such(kernel, junk_server, transport):
    kernel.script(fake_kernel.ResetMidBody(hard=True))
    error = await no_answer(kernel.url, transport)
    # httpx sees the RST itself; aiohttp reports the body it did not get whole.
    assert error.reason in ("connection reset by the kernel", "the connection closed in the middle of the answer")
    assert (await no_answer(junk_server, transport)).reason == "the answer was not valid HTTP"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_clean_close_mid_answer_is_said_as_such(kernel, transport):
    kernel.script(fake_kernel.ResetMidBody(hard=False))
    error = await no_answer(kernel.url, transport)
    assert error.reason == "the connection closed in the middle of the answer"


def test_the_httpx_words_aiosd_reads_are_still_the_libraries_words():
    """httpx tells a closed connection from garbage only by its message (see kernel/wires.py)."""
    import inspect

    import h11._readers
    import httpcore._async.http11

    from aiosd.kernel import wires

    for module, words in ((httpcore._async.http11, wires.HTTPCORE_CLOSED_BEFORE_HEAD),
                          (h11._readers, wires.H11_CLOSED_MID_BODY)):
        assert words in inspect.getsource(module), (
            f"{module.__name__} no longer says {words!r}: update aiosd/kernel/wires.py's protocol_failure")


def test_protocol_error_words_count_only_in_their_phase():
    from aiosd.kernel.wires import (
        CLOSED_WITHOUT_ANSWER,
        CUT_MID_ANSWER,
        H11_CLOSED_MID_BODY,
        HTTPCORE_CLOSED_BEFORE_HEAD,
        NOT_HTTP,
        protocol_failure,
    )

    assert protocol_failure(HTTPCORE_CLOSED_BEFORE_HEAD + ".", head_read=False) == CLOSED_WITHOUT_ANSWER
    assert protocol_failure(H11_CLOSED_MID_BODY + ": received 5 bytes", head_read=True) == CUT_MID_ANSWER
    # The words of one phase in the other, or words no library version said: garbage, as before.
    assert protocol_failure(HTTPCORE_CLOSED_BEFORE_HEAD, head_read=True) == NOT_HTTP
    assert protocol_failure(H11_CLOSED_MID_BODY, head_read=False) == NOT_HTTP
    assert protocol_failure("illegal status line: b'SSH-2.0'", head_read=False) == NOT_HTTP


async def test_the_retry_log_lines_say_what_failed_in_words(caplog):
    import logging

    from aiosd.kernel.retry import RetryPolicy
    policy = RetryPolicy(retry_settings(initial=0.01, max=0.01, on_status=[0]))
    async with KernelClient(kernel_settings(f"http://127.0.0.1:{closed_port()}")) as client:
        with caplog.at_level(logging.INFO, logger="aiosd.retry"), pytest.raises(KernelUnreachable):
            await policy.run(lambda _: client.query(real_body(), timeout=5), model="sonnet")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiosd.retry"]
    assert lines[0] == "model sonnet: attempt 1/4 failed (connection refused); retrying in 10ms"
    assert lines[-1].startswith("model sonnet: attempt 4/4 failed (connection refused); giving up")
    assert not any("status 0" in line for line in lines)


async def test_errors_the_kernel_reported_are_named_by_their_status_in_words():
    err = await query_error(answer(200, inner(429, None, "Rate Limit Exceeded")))
    assert err.reason == "status_code 429 inside HTTP 200"
    assert (await query_error(answer(500, {"detail": "boom"}))).reason == "HTTP 500"
    assert (await query_error(answer(200, raw=b"<html>"))).reason == "HTTP 200 but its body is not JSON"


@pytest.mark.parametrize("body", [
    b'{"response": {"response_message": "ok", "status_code": 200}}',
    b'{"x": NaN, "y": Infinity}',  # not JSON, but Python's json (the kernel's) writes it
    b'{"x": 1e400}',  # past a double
    b'{"x": 123456789012345678901234567890}',  # past 64 bits
    b'{"x": "\\ud83d lone"}',  # a lone surrogate's escape
    b'{"a": 1, "a": 2}',
    '{"x": "caf\u00e9 \U0001f600"}'.encode(),
    b'{"x": "caf\xc3"}',  # not UTF-8: msgspec before 0.19 raises UnicodeDecodeError, json refuses it too
])
def test_a_kernel_answer_decodes_as_pythons_json_would(body):
    """msgspec reads an answer first and json what msgspec refuses: the value is json.loads's either way."""
    import json
    import math

    from aiosd.kernel.answer_json import UnreadableJSON, loads_answer

    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(UnreadableJSON, match="is not JSON"):
            loads_answer(body)
        return
    got = loads_answer(body)
    if b"NaN" in body:
        assert math.isnan(got["x"]) and got["y"] == math.inf
    else:
        assert got == expected and type(got) is type(expected)
