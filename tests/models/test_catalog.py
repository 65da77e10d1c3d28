"""ModelCatalog: which ids work, in which order, and how the list survives a kernel that is down."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import httpx
import pytest

from aiosd.errors import KernelRejected, KernelUnreachable, ModelNotFound
from aiosd.kernel.client import KernelClient
from aiosd.models.catalog import ModelCatalog
from tests.support.kernel_calls import kernel_settings
from tests.support.model_catalog import FakeLister, ids, mapped, model_settings
from tests.support.model_specs import DEFAULTS


async def test_map_first_in_file_order_then_discovered_sorted():
    lister = FakeLister([{"name": "zeta", "backend": "openai"}, {"name": "alpha", "backend": "ollama"},
                         {"name": "fast", "backend": "openai"}, {"name": "claude", "backend": "anthropic"}])
    catalog = ModelCatalog(model_settings(mapped("sonnet", "claude"), mapped("fast")), lister)
    assert ids(catalog) == ["sonnet", "fast"]
    result = await catalog.refresh()
    assert result.ok
    assert ids(catalog) == ["sonnet", "fast", "alpha", "claude", "zeta"]
    alpha = catalog.resolve("alpha")
    assert alpha.source == "discovery" and alpha.backend == "ollama" and alpha.kernel_model == "alpha"
    assert catalog.resolve("sonnet").kernel_model == "claude"


async def test_map_wins_over_a_discovered_model_with_the_same_id():
    lister = FakeLister([{"name": "fast", "backend": "openai"}, {"name": "gpt-4o-mini", "backend": "openai"}])
    catalog = ModelCatalog(model_settings(mapped("fast", "gpt-4o-mini")), lister)
    await catalog.refresh()
    assert ids(catalog) == ["fast", "gpt-4o-mini"]
    assert catalog.resolve("fast").source == "map"


async def test_without_discovery_the_kernel_is_not_asked():
    lister = FakeLister([{"name": "alpha", "backend": None}])
    catalog = ModelCatalog(model_settings(mapped("sonnet"), discover=False), lister)
    result = await catalog.refresh()
    assert result.ok and lister.calls == 0
    assert ids(catalog) == ["sonnet"]


async def test_unknown_model_lists_what_exists():
    catalog = ModelCatalog(model_settings(mapped("sonnet"), mapped("fast")), FakeLister())
    with pytest.raises(ModelNotFound) as info:
        catalog.resolve("gpt-5")
    assert info.value.status == 404
    assert "'gpt-5'" in info.value.message and "sonnet, fast" in info.value.message


async def test_unknown_model_message_is_truncated_when_there_are_many():
    lister = FakeLister([{"name": f"m{i:03d}", "backend": None} for i in range(50)])
    catalog = ModelCatalog(model_settings(), lister)
    await catalog.refresh()
    message = _not_found(catalog, "x")
    assert "m019" in message and "m020" not in message and "and 30 more" in message


async def test_unknown_model_with_nothing_exposed_says_why():
    catalog = ModelCatalog(model_settings(), FakeLister(error=KernelUnreachable("down", kernel_status=0)))
    await catalog.refresh()
    assert "not available yet" in _not_found(catalog, "x")


def _not_found(catalog: ModelCatalog, model_id: str) -> str:
    with pytest.raises(ModelNotFound) as info:
        catalog.resolve(model_id)
    return info.value.message


async def test_the_last_good_list_is_kept_while_the_kernel_is_down(caplog):
    lister = FakeLister([{"name": "alpha", "backend": "openai"}])
    catalog = ModelCatalog(model_settings(), lister)
    await catalog.refresh()
    version = catalog.version
    lister.error = KernelUnreachable("The AIOS kernel is unreachable", kernel_status=0)
    with caplog.at_level(logging.WARNING, logger="aiosd.models"):
        for _ in range(3):
            result = await catalog.refresh()
    assert not result.ok and "unreachable" in result.message
    assert catalog.last_refresh is result
    assert ids(catalog) == ["alpha"] and catalog.version == version
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per failure streak, not every interval
    assert "keeping the last good list (1 models)" in warnings[0].getMessage()


async def test_a_kernel_whose_llm_core_is_not_up_keeps_the_list():
    listing = {"name": "alpha", "backend": "openai"}
    lister = FakeLister([listing])
    catalog = ModelCatalog(model_settings(), lister)
    await catalog.refresh()
    lister.error = KernelRejected("LLM core not initialized", status=503, code="kernel_not_ready")
    await catalog.refresh()
    assert ids(catalog) == ["alpha"]


async def test_a_new_failure_streak_warns_again(caplog):
    lister = FakeLister([{"name": "alpha", "backend": None}], error=KernelUnreachable("down", kernel_status=0))
    catalog = ModelCatalog(model_settings(), lister)
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        await catalog.refresh()
        lister.error = None
        await catalog.refresh()
        lister.error = KernelUnreachable("down", kernel_status=0)
        await catalog.refresh()
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


async def test_changes_bump_the_version_call_listeners_and_log(caplog):
    lister = FakeLister([{"name": "alpha", "backend": None}])
    catalog = ModelCatalog(model_settings(), lister)
    seen: list[tuple[str, ...]] = []
    remove = catalog.add_listener(lambda models: seen.append(tuple(m.id for m in models)))
    waiter = asyncio.create_task(catalog.wait_changed(catalog.version))
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        await catalog.refresh()
    assert await asyncio.wait_for(waiter, 1) == 1
    assert seen == [("alpha",)]
    assert any("added alpha" in r.getMessage() for r in caplog.records)
    await catalog.refresh()  # same list: no change
    assert catalog.version == 1 and len(seen) == 1
    lister.models = [{"name": "beta", "backend": None}]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        await catalog.refresh()
    assert seen[-1] == ("beta",) and catalog.version == 2
    assert "added beta; removed alpha" in caplog.records[-1].getMessage()
    remove()
    lister.models = []
    await catalog.refresh()
    assert len(seen) == 2


async def test_a_broken_listener_does_not_stop_the_catalog():
    catalog = ModelCatalog(model_settings(), FakeLister([{"name": "alpha", "backend": None}]))
    catalog.add_listener(lambda models: 1 / 0)
    await catalog.refresh()
    assert ids(catalog) == ["alpha"]


async def test_reloaded_settings_apply_at_once():
    lister = FakeLister([{"name": "alpha", "backend": None}, {"name": "sonnet", "backend": None},
                         {"name": "opus", "backend": None}])
    catalog = ModelCatalog(model_settings(mapped("sonnet")), lister)
    await catalog.refresh()
    new_defaults = replace(DEFAULTS, context_window=32_000)
    catalog.apply_settings(replace(model_settings(mapped("opus")), defaults=new_defaults))
    assert ids(catalog) == ["opus", "alpha", "sonnet"]
    assert catalog.resolve("alpha").context_window == 32_000  # rebuilt from the kept raw list
    catalog.apply_settings(model_settings(mapped("opus"), discover=False))
    assert ids(catalog) == ["opus"]


async def test_background_refresh_runs_at_start_and_is_woken_by_a_reload():
    lister = FakeLister([{"name": "alpha", "backend": None}])
    catalog = ModelCatalog(model_settings(refresh_interval=3600), lister)
    catalog.start()
    try:
        await asyncio.wait_for(lister.called.wait(), 1)
        await asyncio.wait_for(catalog.wait_changed(0), 1)
        assert ids(catalog) == ["alpha"]
        lister.called.clear()
        catalog.apply_settings(model_settings(refresh_interval=3600))
        await asyncio.wait_for(lister.called.wait(), 1)  # not an hour later
    finally:
        await catalog.stop()
    assert lister.calls == 2


async def test_hostname_and_api_key_never_reach_the_catalog():
    listing = {
        "status": "success",
        "llms": [{"name": "alpha", "backend": "openai", "hostname": "http://10.1.2.3", "api_key": "sk-top-secret-1"}],
    }
    client = KernelClient(kernel_settings(), transport=httpx.MockTransport(lambda r: httpx.Response(200, json=listing)))
    async with client:
        catalog = ModelCatalog(model_settings(), client)
        await catalog.refresh()
    assert ids(catalog) == ["alpha"]
    assert "10.1.2.3" not in repr(catalog.models()) and "sk-top" not in repr(catalog.models())


async def test_background_refresh_retries_a_failed_refresh_sooner(monkeypatch):
    import aiosd.models.catalog as model_catalog

    monkeypatch.setattr(model_catalog, "FAILED_REFRESH_RETRY", 0.01)
    lister = FakeLister([{"name": "alpha", "backend": None}], error=KernelUnreachable("down", kernel_status=0))
    catalog = ModelCatalog(model_settings(refresh_interval=3600), lister)
    await catalog.refresh()
    catalog.start(refresh_now=False)
    try:
        lister.error = None
        await asyncio.wait_for(catalog.wait_changed(0), 1)  # well before the hour
    finally:
        await catalog.stop()
    assert ids(catalog) == ["alpha"] and catalog.last_refresh.ok


async def test_the_daemon_facing_helpers():
    """What the daemon and tests use: a lister provider, add_listener(), run(), first_refresh_done(), status."""
    first = FakeLister([{"name": "alpha", "backend": None}])
    second = FakeLister([{"name": "beta", "backend": None}])
    current = [first]
    catalog = ModelCatalog(model_settings(refresh_interval=3600), lambda: current[0])
    changes: list[int] = []
    catalog.add_listener(lambda _models: changes.append(catalog.version))
    assert catalog.last_refresh_status() is None
    assert await catalog.first_refresh_done(timeout=0.01) is False
    task = asyncio.create_task(catalog.run())
    try:
        assert await catalog.first_refresh_done(timeout=1) is True
        assert ids(catalog) == ["alpha"] and changes == [1]
        status = catalog.last_refresh_status()
        assert status["ok"] is True and status["seconds_ago"] >= 0
        current[0] = second  # the daemon replaced its kernel client
        await catalog.refresh()
        assert ids(catalog) == ["beta"] and changes == [1, 2]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
