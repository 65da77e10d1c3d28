"""The HTTP surface of a real aiosd: auth, body limits, malformed input, CORS, request ids in headers and logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from aiosd.config.loader import load_config
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.endpoint import (
    MODELS_YAML,
    assert_openai_error,
    chat,
    merge_yaml,
    stack,
)
from tests.support.fake_kernel import FakeKernel, LLMFailure

KEY = "s3cret-key-for-tests"


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


@pytest.mark.parametrize("source", ["literal", "env", "file"])
async def test_auth_keys_from_every_source(tmp_path, kernel, source):
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n# the rest of the file is ignored\n")
    entry = {"literal": json.dumps(KEY), "env": "{env: AIOSD_TEST_KEY}",
             "file": f"{{file: {json.dumps(str(key_file))}}}"}[source]
    config_for(tmp_path, kernel.url, merge_yaml(MODELS_YAML, "auth: {keys: [placeholder-key-000, other-key-12345]}"))
    path = tmp_path / "aiosd.yaml"
    path.write_text(path.read_text().replace("placeholder-key-000", entry))
    config = load_config(path, env={"AIOSD_TEST_KEY": KEY})
    async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.base_url) as client:
        missing = await client.post("/chat/completions", json=chat())
        wrong = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer " + KEY[:-1]})
        other_scheme = await client.post("/chat/completions", json=chat(), headers={"authorization": "Basic " + KEY})
        right = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer " + KEY})
        second = await client.post("/chat/completions", json=chat(),
                                   headers={"authorization": "Bearer other-key-12345"})
        models_without = await client.get("/models")
        models_with = await client.get("/models", headers={"authorization": "Bearer " + KEY})
    for response in (missing, wrong, other_scheme, models_without):
        error = assert_openai_error(response, 401, "invalid_api_key")
        assert error["type"] == "authentication_error"
        assert KEY not in response.text
    assert right.status_code == 200 and second.status_code == 200 and models_with.status_code == 200
    assert kernel.query_count == 2  # refused requests never reach the kernel


async def test_every_key_is_compared_in_constant_time(tmp_path, kernel, monkeypatch):
    """A wrong key is compared with every configured key by hmac.compare_digest, never with ==."""
    import aiosd.api.app

    compared = []
    real = aiosd.api.app.hmac.compare_digest

    def spy(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(aiosd.api.app.hmac, "compare_digest", spy)
    extra = merge_yaml(MODELS_YAML, 'auth: {keys: ["first-key-123", "second-key-456"]}')
    async with (
        serve_aiosd(config_for(tmp_path, kernel.url, extra)) as aiosd,
        httpx.AsyncClient(base_url=aiosd.base_url) as client,
    ):
        ok = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer first-key-123"})
        compared_for_first = list(compared)
        compared.clear()
        refused = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer nope"})
    assert ok.status_code == 200 and refused.status_code == 401
    # Even when the first key matches, the second is still compared: timing says nothing.
    assert compared_for_first == [b"first-key-123", b"second-key-456"]
    assert compared == [b"first-key-123", b"second-key-456"]


async def test_a_body_above_max_body_bytes_is_413_openai_shaped(tmp_path):
    async with stack(tmp_path, "server: {max_body_bytes: 4096}") as s:
        big = await s.client.post("/chat/completions", json=chat("x" * 5000))
        async def chunks():
            yield json.dumps(chat("y" * 5000)).encode()
        chunked = await s.client.post("/chat/completions", content=chunks(),
                                      headers={"content-type": "application/json"})
        small = await s.client.post("/chat/completions", json=chat("fits"))
    assert_openai_error(big, 413, "request_too_large")
    assert_openai_error(chunked, 413, "request_too_large")
    assert "max_body_bytes" in big.json()["error"]["message"]
    assert small.status_code == 200
    assert s.kernel.query_count == 1


async def test_a_reloaded_body_limit_and_key_list_apply_to_the_next_request(tmp_path):
    async with stack(tmp_path) as s:
        assert (await s.client.post("/chat/completions", json=chat("x" * 5000))).status_code == 200
        reloaded = config_for(tmp_path, s.kernel.url, merge_yaml(
            MODELS_YAML, 'server: {max_body_bytes: 4096}\nauth: {keys: ["new-key-1234"]}'))
        await s.runtime.apply(reloaded)
        refused = await s.client.post("/chat/completions", json=chat("hi"))
        headers = {"authorization": "Bearer new-key-1234"}
        too_big = await s.client.post("/chat/completions", json=chat("x" * 5000), headers=headers)
        ok = await s.client.post("/chat/completions", json=chat("hi"), headers=headers)
    assert_openai_error(refused, 401)
    assert_openai_error(too_big, 413, "request_too_large")
    assert ok.status_code == 200


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'{"model": "mock-model"}',
                                  b'{"model": "mock-model", "messages": [{"role": "user", "content": 42}]}',
                                  b'{"model": "mock-model", "messages": [{"role": "wizard", "content": "hi"}]}'],
                         ids=["broken", "empty", "array", "no-messages", "int-content", "unknown-role"])
async def test_malformed_requests_are_400_and_never_reach_the_kernel(tmp_path, body):
    async with stack(tmp_path) as s:
        response = await s.client.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert s.kernel.query_count == 0


async def test_unknown_fields_are_ignored(tmp_path):
    request = chat("hi", future_field={"nested": [1, 2]}, temperature=0.2, seed=7, user="u1", metadata={"a": "b"},
                   reasoning_effort="low", logit_bias={"1": 2}, n=1)
    request["messages"][0]["unknown_message_key"] = True
    async with stack(tmp_path) as s:
        response = await s.client.post("/chat/completions", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert "future_field" not in json.dumps(s.kernel.queries[0])


async def test_the_kernels_cors_headers_are_never_copied(tmp_path):
    origin = "https://evil.example"
    async with stack(tmp_path, headers={"origin": origin}) as s:
        s.kernel.script("ok", LLMFailure(400))
        responses = [
            await s.client.post("/chat/completions", json=chat()),
            await s.client.post("/chat/completions", json=chat()),
            await s.client.get("/models"),
            await s.client.options("/chat/completions", headers={
                "access-control-request-method": "POST", "access-control-request-headers": "authorization"}),
        ]
    for response in responses:
        assert not [name for name in response.headers if name.lower().startswith("access-control-")], response.headers
    # The preflight is answered without any grant (no Access-Control-Allow-Origin): a browser then
    # refuses to let a web page call aiosd on loopback.
    preflight = responses[3]
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-methods" not in preflight.headers


async def test_every_response_has_a_request_id(tmp_path):
    async with stack(tmp_path, "retry: {max_retries: 0}") as s:
        s.kernel.script(None, None, LLMFailure(429))
        responses = [
            await s.client.post("/chat/completions", json=chat()),
            await s.client.post("/chat/completions", json=chat(stream=True)),
            await s.client.post("/chat/completions", json=chat()),  # 429
            await s.client.post("/chat/completions", content=b"{", headers={"content-type": "application/json"}),
            await s.client.post("/chat/completions", json=chat(model="nope")),
            await s.client.get("/models"),
            await s.client.get("/no-such-path"),
            await s.client.get("/chat/completions"),
        ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids), ids
    assert [r.status_code for r in responses] == [200, 200, 429, 400, 404, 200, 404, 405]
    for response in responses[2:5] + responses[6:]:
        assert_openai_error(response, response.status_code)


async def test_a_sane_client_request_id_is_kept_and_an_unsafe_one_replaced(tmp_path):
    async with stack(tmp_path) as s:
        kept = await s.client.post("/chat/completions", json=chat(), headers={"x-request-id": "openclaw-turn-42"})
        replaced = await s.client.post("/chat/completions", json=chat(), headers={"x-request-id": "bad id\tinjected"})
    assert kept.headers["x-request-id"] == "openclaw-turn-42"
    assert kept.json()["id"].startswith("chatcmpl-")
    assert replaced.headers["x-request-id"].startswith("req_")


async def test_log_lines_about_a_request_carry_its_id(tmp_path, caplog):
    async with stack(tmp_path) as s:
        s.kernel.script(LLMFailure(429), "answer")
        with caplog.at_level(logging.DEBUG, logger="aiosd"):
            ok = await s.client.post("/chat/completions", json=chat("a secret prompt"),
                                     headers={"x-request-id": "trace-ok-1"})
            s.kernel.script(*[LLMFailure(429)] * 4)
            failed = await s.client.post("/chat/completions", json=chat(), headers={"x-request-id": "trace-fail-2"})
    assert ok.status_code == 200 and failed.status_code == 429
    request_lines = [r for r in caplog.records
                     if r.name.startswith("aiosd") and r.name not in ("aiosd.kernel", "aiosd.models", "aiosd.runtime")]
    ok_lines = [r.getMessage() for r in request_lines if "trace-ok-1" in r.getMessage()]
    fail_lines = [r.getMessage() for r in request_lines if "trace-fail-2" in r.getMessage()]
    # Every line about a request names it: the retry, the answer, the giving up and the error.
    assert len(ok_lines) + len(fail_lines) == len(request_lines), [r.getMessage() for r in request_lines]
    assert any("retrying" in line for line in ok_lines) and any("answered" in line for line in ok_lines)
    assert any("giving up" in line for line in fail_lines) and any("429" in line for line in fail_lines)
    assert all("\n" not in r.getMessage() for r in request_lines)
    assert "a secret prompt" not in caplog.text
