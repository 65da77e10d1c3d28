"""``aiosd sync-openclaw`` from the command line: --remove beside a running daemon that syncs, and what it prints."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiosd.cli.main import main
from tests.support.aiosd_harness import config_for, serve_aiosd
from tests.support.fake_kernel import FakeKernel


async def sync_openclaw(*args: str) -> int:
    return await asyncio.to_thread(main, ["sync-openclaw", *args])


def provider_of(config) -> object:
    document = json.loads(Path(config.openclaw.config_path).read_text())
    return document.get("models", {}).get("providers", {}).get("aios")


async def test_remove_refuses_while_a_syncing_daemon_answers_unless_forced(tmp_path, capsys):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, openclaw_sync=True)
        path = str(config.source_path)
        async with serve_aiosd(config) as aiosd:
            await aiosd.runtime.sync_openclaw_now()
            assert provider_of(config) is not None  # the daemon wrote its provider at start
            refused = await sync_openclaw("--remove", "--config", path)
            _, err = capsys.readouterr()
            assert refused == 1
            assert f"the daemon at {config.listen} keeps OpenClaw's file in step" in err
            assert "nothing removed" in err and "openclaw: {sync: false}" in err and "--force" in err
            assert provider_of(config) is not None  # untouched

            forced = await sync_openclaw("--remove", "--force", "--config", path)
            out, err = capsys.readouterr()
            assert forced == 0 and out.splitlines()[-1].startswith("removed: ")
            assert "will put its entries back" in err
            assert provider_of(config) is None
        # With the daemon stopped, --remove goes through without --force.
        assert await sync_openclaw("--config", path) == 0
        assert await sync_openclaw("--remove", "--config", path) == 0
        assert provider_of(config) is None


async def test_sync_prints_its_result_and_no_info_log_lines(tmp_path, capsys):
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, openclaw_sync=True)
        code = await sync_openclaw("--config", str(config.source_path))
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[-1].startswith("created: ")
    assert err == ""  # the sync's own info line ("openclaw sync: created ...") is not repeated on stderr
