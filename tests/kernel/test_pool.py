"""KernelPool: members join and leave on reload without disturbing the others; per-kernel model lists and health."""

from __future__ import annotations

import asyncio

import httpx

from aiosd.config.settings import HealthSettings
from aiosd.kernel.pool import KernelPool
from tests.support.kernel_calls import inner, kernel_settings

BODY = {"agent_name": "a", "query_type": "llm", "query_data": {"messages": [{"role": "user", "content": "x"}]}}


class ClosableTransport(httpx.MockTransport):
    """A mock that, like a real transport, cannot be used once closed."""

    closed = False

    async def handle_async_request(self, request):
        assert not self.closed, "the shared transport was closed"
        return await super().handle_async_request(request)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_kernel_leaving_does_not_close_the_transport_the_others_share():
    transport = ClosableTransport(lambda request: httpx.Response(200, json=inner(200, "ok")))
    pool = KernelPool((kernel_settings("http://a.test", name="a"), kernel_settings("http://b.test", name="b")),
                      HealthSettings(), transport=transport)
    notes = pool.apply((kernel_settings("http://b.test", name="b"),), HealthSettings())
    for _ in range(5):
        await asyncio.sleep(0)  # a's client closes in the background
    assert "kernel a removed from the pool" in notes[0]
    assert (await pool.members["b"].client.query(BODY, timeout=1))["response_message"] == "ok"
    await pool.close()
    assert transport.closed  # once, by the pool itself


async def test_each_kernel_keeps_its_own_model_list_and_the_union_is_returned():
    def lister(names):
        llms = [{"name": n, "backend": "openai"} for n in names]
        return lambda request: httpx.Response(200, json={"status": "success", "llms": llms})

    pool = KernelPool(
        (kernel_settings("http://a.test", name="a"),),
        HealthSettings(),
        transport=httpx.MockTransport(lister(["x", "y"])),
    )
    listed = await pool.list_llms()
    assert {m["name"] for m in listed} == {"x", "y"} and pool.members["a"].models == {"x", "y"}
    await pool.close()


def test_the_ejection_line_says_where_requests_go(caplog):
    """With other kernels the line sends the reader to them; a pool of one must not claim there are any."""
    import logging

    from aiosd.errors import KernelUnreachable

    def eject(pool, name):
        member = pool.members[name]
        for _ in range(HealthSettings().consecutive_failures):
            change = member.note_call(0.01, KernelUnreachable("connection refused", kernel_status=0))
        pool.note_health(member, change)

    with caplog.at_level(logging.WARNING, logger="aiosd.pool"):
        eject(KernelPool((kernel_settings("http://a.test", name="a"),), HealthSettings()), "a")
        eject(KernelPool((kernel_settings("http://a.test", name="a"), kernel_settings("http://b.test", name="b")),
                         HealthSettings()), "a")
    alone, shared = [r.getMessage() for r in caplog.records]
    assert "it is the only kernel, so requests still go to it" in alone and "other" not in alone.split(";")[-1]
    assert "requests go to other healthy kernels serving their model" in shared


async def test_a_kernel_that_fails_one_refresh_keeps_its_models_in_the_union():
    """A blip on one kernel must not take the models only it serves out of /v1/models and OpenClaw's file."""
    down = {"b": False}

    def handler(request):
        if request.url.host == "b.test" and down["b"]:
            raise httpx.ConnectError("connection refused")
        names = ["x"] if request.url.host == "a.test" else ["only-on-b"]
        llms = [{"name": n, "backend": "openai"} for n in names]
        return httpx.Response(200, json={"status": "success", "llms": llms})

    pool = KernelPool((kernel_settings("http://a.test", name="a"), kernel_settings("http://b.test", name="b")),
                      HealthSettings(), transport=httpx.MockTransport(handler))
    assert {m["name"] for m in await pool.list_llms()} == {"x", "only-on-b"}
    down["b"] = True
    assert {m["name"] for m in await pool.list_llms()} == {"x", "only-on-b"}
    await pool.close()
