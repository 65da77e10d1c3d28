"""schemathesis against aiosd's OpenAPI description: no generated request gets a 5xx or an undeclared content type."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance

from tests.support.aiosd_harness import config_for
from tests.support.fake_kernel import FakeKernel
from tests.support.robust import AiosdInThread


@pytest.fixture(scope="module")
def running_aiosd(tmp_path_factory):
    with FakeKernel(record=False) as kernel:
        config = config_for(tmp_path_factory.mktemp("openapi"), kernel.url,
                            'kernel: {timeout: "5s"}\nretry: {max_retries: 0}')
        with AiosdInThread(config) as aiosd:
            yield aiosd



def test_the_chat_route_declares_its_request_body(running_aiosd):
    import httpx

    document = httpx.get(running_aiosd.url + "/openapi/openapi.json").json()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "messages"]


def test_generated_requests_get_no_server_error(running_aiosd):
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
        case.call_and_validate(base_url=base_url, checks=[not_a_server_error, content_type_conformance])

    generated()
