"""A models.map entry the kernel does not list: left out and explained while the kernel's list is known."""

from __future__ import annotations

import logging

import pytest

from aiosd.errors import KernelUnreachable, ModelNotFound
from aiosd.models.catalog import ModelCatalog
from tests.support.model_catalog import FakeLister, ids, mapped, model_settings

LISTED = [{"name": "gpt-4o-mini", "backend": "openai"}, {"name": "qwen2.5:7b", "backend": "ollama"}]


def catalog_with(lister: FakeLister, **options) -> ModelCatalog:
    settings = model_settings(mapped("sonnet", "claude-gone"), mapped("fast", "gpt-4o-mini"), **options)
    return ModelCatalog(settings, lister)


async def test_a_mapping_the_kernel_does_not_list_is_left_out_and_answers_404_saying_why(caplog):
    catalog = catalog_with(FakeLister(LISTED))
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        result = await catalog.refresh()
    assert ids(catalog) == ["fast", "gpt-4o-mini", "qwen2.5:7b"]
    assert [u.as_dict() for u in catalog.unavailable()] == [{
        "id": "sonnet", "kernel_model": "claude-gone",
        "reason": "mapped to kernel model 'claude-gone', which the kernel does not list"}]
    assert "1 mapped model(s) it does not list" in result.message
    with pytest.raises(ModelNotFound) as info:
        catalog.resolve("sonnet")
    assert info.value.status == 404
    assert "mapped to kernel model 'claude-gone', which the kernel does not list" in info.value.message
    assert "'gpt-4o-mini'" in info.value.message  # what it does list
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("models.map.sonnet is mapped to kernel model 'claude-gone'")


async def test_unchanged_refreshes_say_nothing_and_a_change_is_logged_both_ways(caplog):
    lister = FakeLister(LISTED)
    catalog = catalog_with(lister)
    await catalog.refresh()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        for _ in range(3):
            await catalog.refresh()
    assert caplog.records == []  # journald would get a line a minute otherwise
    lister.models = [*LISTED, {"name": "claude-gone", "backend": "anthropic"}]
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        await catalog.refresh()
    assert "sonnet" in ids(catalog) and catalog.unavailable() == ()
    assert any("models.map.sonnet: the kernel lists 'claude-gone' now; offered again" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    lister.models = LISTED[1:]
    with caplog.at_level(logging.WARNING, logger="aiosd.models"):
        await catalog.refresh()
    assert sorted(u.spec.id for u in catalog.unavailable()) == ["fast", "sonnet"]
    assert len(caplog.records) == 2


async def test_a_discovered_model_does_not_stand_in_for_an_unavailable_mapping():
    lister = FakeLister([{"name": "sonnet", "backend": "openai"}])
    catalog = ModelCatalog(model_settings(mapped("sonnet", "claude-gone")), lister)
    await catalog.refresh()
    assert ids(catalog) == []
    with pytest.raises(ModelNotFound, match="mapped to kernel model"):
        catalog.resolve("sonnet")


async def test_with_the_kernel_unreachable_from_the_start_mappings_are_kept():
    catalog = catalog_with(FakeLister(LISTED, error=KernelUnreachable("down", kernel_status=0)))
    result = await catalog.refresh()
    assert not result.ok and ids(catalog) == ["sonnet", "fast"] and catalog.unavailable() == ()
    assert catalog.resolve("sonnet").kernel_model == "claude-gone"


async def test_the_last_good_list_still_decides_while_the_kernel_is_down():
    lister = FakeLister(LISTED)
    catalog = catalog_with(lister)
    await catalog.refresh()
    lister.error = KernelUnreachable("down", kernel_status=0)
    await catalog.refresh()
    assert "sonnet" not in ids(catalog) and [u.spec.id for u in catalog.unavailable()] == ["sonnet"]


async def test_without_discovery_mappings_are_kept_as_they_are():
    lister = FakeLister(LISTED)
    catalog = catalog_with(lister)
    await catalog.refresh()
    catalog.apply_settings(
        model_settings(mapped("sonnet", "claude-gone"), mapped("fast", "gpt-4o-mini"), discover=False)
    )
    assert ids(catalog) == ["sonnet", "fast"] and catalog.unavailable() == ()
