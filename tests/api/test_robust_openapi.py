"""schemathesis against aiosd's OpenAPI description: no generated request gets a 5xx, and every answer conforms
(declared status, content type and schema; 405 with Allow); HEAD on GET routes; the document served as JSON only."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.aiosd_harness import config_for
from tests.support.fake_kernel import FakeKernel
from tests.support.robust import AiosdInThread

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          allow_header_conformance]


@pytest.fixture(scope="module")
def running_aiosd(tmp_path_factory):
    with FakeKernel(record=False) as kernel:
        config = config_for(tmp_path_factory.mktemp("openapi"), kernel.url,
                            'kernel: {timeout: "5s"}\nretry: {max_retries: 0}')
        with AiosdInThread(config) as aiosd:
            yield aiosd


@pytest.fixture(scope="module")
def document(running_aiosd):
    return httpx.get(running_aiosd.url + "/openapi/openapi.json").json()


def request_schema(document: dict, path: str) -> dict:
    return document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_the_chat_route_declares_its_request_body(document):
    assert request_schema(document, "/v1/chat/completions")["required"] == ["model", "messages"]


def test_the_messages_route_declares_its_request_body(document):
    """Issue 18 (conformance): /v1/messages declares its Anthropic Messages body; before, none at all."""
    body = request_schema(document, "/v1/messages")
    assert body["required"] == ["model", "messages", "max_tokens"]
    assert {"system", "tools", "stream"} <= set(body["properties"])


def test_every_error_answer_is_declared_in_the_shape_aiosd_sends(document):
    """Issue 18 (conformance): a 400 (and every other error) is declared in the shape aiosd writes: OpenAI's,
    Anthropic's on /v1/messages; before, Litestar's own {status_code, detail} that aiosd never sends."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            errors = {code: r for code, r in operation["responses"].items() if code == "default" or code[0] in "45"}
            assert "default" in errors, (method, path)
            for response in errors.values():
                schema = response["content"]["application/json"]["schema"]
                shape = ["type", "error"] if path == "/v1/messages" else ["error"]
                assert schema["required"] == shape, (path, schema)


def test_generated_requests_get_no_server_error_and_conforming_answers(running_aiosd):
    """Issue 18 (conformance): a bounded schemathesis run, every answer checked against the document."""
    # schemathesis' Python API rather than its pytest plugin, which breaks with newer pytest releases.
    schema = schemathesis.openapi.from_url(running_aiosd.url + "/openapi/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/messages", "/v1/models", "/readyz"}
    for operation in operations:
        check_operation(operation, running_aiosd.url)


def check_operation(operation, base_url: str) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def generated(case):
        # Model ids are the config's, not the schema's: name one that exists so generated bodies reach
        # the kernel instead of stopping at 404. A 5xx would then be aiosd's fault (the fake kernel
        # answers every well-formed call).
        if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
            case.body["model"] = "sonnet"
        case.call_and_validate(base_url=base_url, checks=CHECKS)

    generated()


def test_head_on_every_get_route_answers_as_get_without_a_body(running_aiosd, document):
    """Issue 18 (conformance): HEAD on a GET route answers GET's status and headers, no body; before, 405."""
    gets = [path for path, item in document["paths"].items() if "get" in item and "{" not in path]
    assert len(gets) >= 8
    with httpx.Client(base_url=running_aiosd.url) as client:
        for path in gets:
            get, head = client.get(path), client.head(path)
            assert head.status_code == get.status_code, path
            assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path


def test_a_method_a_path_does_not_take_gets_405_with_allow(running_aiosd, document):
    """Issue 18 (conformance): 405 names the methods the path takes in `Allow` (HEAD wherever GET);
    before, no Allow header."""
    with httpx.Client(base_url=running_aiosd.url) as client:
        for path, item in document["paths"].items():
            if "{" in path:
                continue
            declared = {method.upper() for method in item}
            response = client.request("DELETE", path)
            assert response.status_code == 405, path
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert declared <= allow <= declared | {"HEAD", "OPTIONS"}, (path, allow)
            assert ("HEAD" in allow) == ("GET" in declared), (path, allow)
            assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/openapi", "/openapi/openapi.json", "/openapi/swagger", "/openapi/redoc",
                                  "/openapi/elements", "/openapi/rapidoc"])
def test_the_openapi_pages_serve_json_only_and_load_nothing(running_aiosd, path):
    """Issue 18 item 14: /openapi/* serves the document as JSON and no viewer page (which loaded scripts
    from a CDN into aiosd's origin), under a Content-Security-Policy that lets nothing run."""
    response = httpx.get(running_aiosd.url + path)
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "<script" not in response.text and "cdn" not in response.text
    if path in ("/openapi", "/openapi/openapi.json"):
        assert response.status_code == 200 and response.json()["info"]["title"] == "aiosd"
    else:
        assert response.status_code == 404
