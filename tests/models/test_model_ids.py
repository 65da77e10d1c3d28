"""Model ids the kernel lists are held to models.map's rule: the bad ones are skipped and reported once."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from aiosd.config.schema import model_id_problem
from aiosd.models.catalog import ModelCatalog
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel
from tests.support.model_catalog import FakeLister, ids, model_settings

HOSTILE = [
    {"name": "evil\r\nx-injected: 1", "backend": "openai"},
    {"name": "esc\x1b[31mred", "backend": "openai"},
    {"name": "big" + "x" * 100_000, "backend": "openai"},
    {"name": "trailing-newline\n", "backend": "openai"},
    {"name": "good-model", "backend": "openai"},
]


def test_the_rule_is_the_schemas_and_catches_what_a_search_would_miss():
    assert model_id_problem("gpt-4o-mini") is None and model_id_problem("llama3:8b") is None
    assert model_id_problem("ok\n")  # re.search with "$" accepts this one
    assert model_id_problem("a" * 129) and model_id_problem("a" * 128) is None
    assert model_id_problem("meta-llama/Llama-3.1-8B-Instruct") is None  # the kernel's names often have one
    assert model_id_problem("/lead") and model_id_problem("-lead") and model_id_problem("")


async def test_invalid_discovered_ids_are_skipped_and_reported_once(caplog):
    lister = FakeLister(HOSTILE)
    catalog = ModelCatalog(model_settings(), lister)
    with caplog.at_level(logging.INFO, logger="aiosd.models"):
        result = await catalog.refresh()
        await catalog.refresh()  # the same list again: no second warning
    assert ids(catalog) == ["good-model"]
    assert "4 more skipped" in result.message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "4 model name(s)" in warnings[0]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "\r" not in text and "\x1b" not in text and "evil\n" not in text
    assert max(len(r.getMessage()) for r in caplog.records) < 600
    # A different set of bad names is news again.
    lister.models = [HOSTILE[0], HOSTILE[-1]]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiosd.models"):
        await catalog.refresh()
    assert len(caplog.records) == 1 and "1 model name(s)" in caplog.records[0].getMessage()


async def test_invalid_kernel_ids_reach_neither_models_nor_openclaw_nor_headers(tmp_path):
    with FakeKernel(models=[*HOSTILE, {"name": "gpt-4o-mini", "backend": "openai"}]) as kernel:
        config = config_for(tmp_path, kernel.url, "models: {discover: true}", openclaw_sync=True)
        async with serve_aiosd(config) as aiosd:
            await asyncio.wait_for(aiosd.runtime.wait_for_sync(0), 5)
            async with httpx.AsyncClient(base_url=aiosd.base_url) as client:
                listed = [m["id"] for m in (await client.get("/models")).json()["data"]]
                answer = await client.post("/chat/completions", json={
                    "model": "evil\r\nx-injected: 1", "messages": [{"role": "user", "content": "hi"}]})
            status = aiosd.runtime.status()
    assert listed == ["sonnet", "good-model", "gpt-4o-mini"]
    assert answer.status_code == 404 and "x-injected" not in answer.headers
    document = json.loads((tmp_path / "openclaw" / "openclaw.json").read_text())
    rows = [row["id"] for row in document["models"]["providers"]["aios"]["models"]]
    assert rows == listed
    assert "skipped" in status["model_refresh"]["message"]


def _problems(tmp_path, yaml_text: str) -> list[str]:
    from aiosd.config.loader import ConfigError, load_config

    path = tmp_path / "aiosd.yaml"
    path.write_text(yaml_text)
    try:
        load_config(path, env={})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    raise AssertionError("accepted")


def test_models_map_refuses_what_the_kernel_list_skips(tmp_path):
    problems = _problems(tmp_path, 'models:\n  map:\n    "ok\\n": {kernel_model: x}\n')
    assert any("'ok\\n'" in p and "letters, digits" in p for p in problems), problems
    problems = _problems(tmp_path, 'models:\n  map:\n    "' + "a" * 300 + '": {kernel_model: y}\n')
    assert any("300 characters long; at most 128" in p for p in problems), problems
    assert all(len(p) < 300 for p in problems)
