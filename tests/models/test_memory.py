"""The kernel's last known model list in aiosd's state directory: atomic, bounded, distrusted when odd."""

from __future__ import annotations

import json
import logging
import os
import stat

from aiosd.config.state_dir import resolve_state_dir
from aiosd.errors import KernelUnreachable
from aiosd.models import memory as model_memory
from aiosd.models.catalog import ModelCatalog
from aiosd.models.memory import ModelMemory
from tests.support.model_catalog import FakeLister, ids, mapped, model_settings

ENTRIES = (("alpha", "openai"), ("meta-llama/Llama-3.1-8B-Instruct", "vllm"))


def test_state_dir_follows_config_then_systemd_then_xdg_then_home(tmp_path):
    env = {"HOME": "/home/u", "XDG_STATE_HOME": "/x/state", "STATE_DIRECTORY": "/var/lib/aiosd:/var/lib/other"}
    assert resolve_state_dir("st", base=tmp_path, env=env) == tmp_path / "st"
    assert str(resolve_state_dir("/abs", env=env)) == "/abs"
    assert str(resolve_state_dir(None, env=env)) == "/var/lib/aiosd"
    assert str(resolve_state_dir(None, env={**env, "STATE_DIRECTORY": ""})) == "/x/state/aiosd"
    assert str(resolve_state_dir(None, env={"HOME": "/home/u", "XDG_STATE_HOME": "relative"})) == \
        "/home/u/.local/state/aiosd"


def test_saved_atomically_private_and_read_back(tmp_path):
    memory = ModelMemory(tmp_path / "state")
    assert memory.load() == ()
    assert memory.save(ENTRIES)
    assert ModelMemory(tmp_path / "state").load() == ENTRIES
    assert sorted(os.listdir(tmp_path / "state")) == ["known-models.json"]  # no temp file left
    assert stat.S_IMODE((tmp_path / "state" / "known-models.json").stat().st_mode) == 0o600
    mtime = memory.path.stat().st_mtime_ns
    assert memory.save(ENTRIES) and memory.path.stat().st_mtime_ns == mtime  # unchanged: not rewritten


def test_a_corrupt_oversized_or_odd_file_counts_as_none_with_one_warning(tmp_path, caplog):
    cases = {
        b"{not json": "is not valid JSON",
        b"[" * 100_000: "is not valid JSON",
        json.dumps({"format": 99, "models": []}).encode(): "is not a model list aiosd wrote",
        b" " * (model_memory.MAX_FILE_BYTES + 1): "more than the",
    }
    for content, said in cases.items():
        memory = ModelMemory(tmp_path)
        memory.path.write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aiosd.models"):
            assert memory.load() == ()
            memory.load()
        assert len(caplog.records) == 1 and said in caplog.records[0].getMessage(), said
    memory.path.unlink()
    os.mkfifo(memory.path)  # would block a plain open() for good
    assert memory.load() == ()


def test_ids_in_the_file_are_held_to_the_id_rule(tmp_path):
    memory = ModelMemory(tmp_path)
    memory.path.write_text(json.dumps({"format": 1, "models": [
        {"name": "ok", "backend": "openai"}, {"name": "bad\r\nid", "backend": "x"},
        {"name": "x" * 1000, "backend": None}, {"name": "odd-backend", "backend": "\x1b" * 3}]}))
    assert memory.load() == (("odd-backend", None), ("ok", "openai"))


async def test_an_unwritable_state_dir_warns_once_and_the_catalog_goes_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    lister = FakeLister([{"name": "alpha", "backend": None}])
    with caplog.at_level(logging.WARNING, logger="aiosd.models"):
        catalog = ModelCatalog(model_settings(), lister, memory=ModelMemory(blocker / "state"))
        assert (await catalog.refresh()).ok
        lister.models.append({"name": "beta", "backend": None})
        assert (await catalog.refresh()).ok
    assert ids(catalog) == ["alpha", "beta"]
    said = [r.getMessage() for r in caplog.records if "cannot remember the kernel's model list" in r.getMessage()]
    assert len(said) == 1 and "set state_dir to a writable directory" in said[0]


async def test_the_remembered_list_serves_until_the_kernel_answers_then_its_list_wins(tmp_path):
    ModelMemory(tmp_path).save(ENTRIES)
    lister = FakeLister(error=KernelUnreachable("down", kernel_status=0))
    catalog = ModelCatalog(model_settings(mapped("sonnet", "claude")), lister, memory=ModelMemory(tmp_path))
    await catalog.refresh()
    assert ids(catalog) == ["sonnet", "alpha", "meta-llama/Llama-3.1-8B-Instruct"]
    assert catalog.unconfirmed() == {"alpha", "meta-llama/Llama-3.1-8B-Instruct"}
    lister.error, lister.models = None, [{"name": "claude", "backend": None}, {"name": "gamma", "backend": None}]
    await catalog.refresh()
    assert ids(catalog) == ["sonnet", "claude", "gamma"] and catalog.unconfirmed() == frozenset()
    assert ModelMemory(tmp_path).load() == (("claude", None), ("gamma", None))
