"""``aiosd status`` against a real aiosd: readable and --json, after a refused reload, and when nothing answers."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from aiosd import __version__
from aiosd.api.dashboard_data import live_state
from aiosd.cli.main import main
from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.fake_kernel import FakeKernel, ServerError
from tests.support.observability import attach_daemon

KEY = "sk-status-0123456789"
CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}


def keyed_config(tmp_path, kernel_url: str, extra: str = ""):
    """A config whose API key lives in a file next to it, as an operator would keep it."""
    (tmp_path / "aiosd.key").write_text(KEY + "\n")
    return config_for(tmp_path, kernel_url, 'auth: {keys: [{file: "aiosd.key"}]}\n' + extra)


async def refuse_an_edit(aiosd, config) -> None:
    """The config file gets an invalid value and the running aiosd refuses the reload (keeps serving)."""
    daemon = await attach_daemon(aiosd)
    text = config.source_path.read_text()
    config.source_path.write_text(text.replace("max_retries: 3", "max_retries: lots"))
    assert (await daemon.reload("file changed")).ok is False


async def aiosd_status(*args: str) -> int:
    # The CLI is synchronous; the daemon it asks runs in this test's loop.
    return await asyncio.to_thread(main, ["status", *args])


async def test_status_reads_well_in_a_terminal(tmp_path, capsys):
    with FakeKernel() as kernel:
        config = keyed_config(tmp_path, kernel.url, "models: {discover: true}")
        async with serve_aiosd(config) as aiosd:
            async with httpx.AsyncClient(base_url=aiosd.url, headers={"authorization": f"Bearer {KEY}"}) as client:
                assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            code = await aiosd_status("--config", str(config.source_path))
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"aiosd {__version__}, up ")
    assert lines[1] == f"config     {config.source_path} (generation 1, listening on {config.listen})"
    assert f"kernel     {kernel.url}: ready" in lines
    assert any(line.strip().startswith("latency of the last 1 calls: p50 ") for line in lines)
    assert "calls      0 in flight / 4, 0 queued, 0 retries in the last 5 minutes" in lines
    assert f"models     {1 + len(kernel.models)}" in lines
    assert any(line.split() == ["sonnet", "->", "gpt-4o-mini", "(map,", "tools:", "prompt)"] for line in lines)
    assert any(line.split()[:4] == ["qwen2.5:7b", "->", "qwen2.5:7b", "(discovery,"] for line in lines)
    assert lines[-1] == "openclaw   no sync yet"
    assert KEY not in out


async def test_status_json_is_the_daemons_status_document(tmp_path, capsys):
    with FakeKernel() as kernel:
        config = keyed_config(tmp_path, kernel.url)
        async with serve_aiosd(config) as aiosd:
            code = await aiosd_status("--config", str(config.source_path), "--json")
            expected_keys = set(aiosd.runtime.status())
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(document) == expected_keys
    assert document["kernel"]["ready"] is False
    assert document["kernel"]["reason"] == f"the kernel at {kernel.url} has not answered yet"


async def test_status_works_while_the_file_is_invalid_and_shows_the_refused_reload(tmp_path, capsys):
    with FakeKernel() as kernel:
        config = keyed_config(tmp_path, kernel.url)
        async with serve_aiosd(config) as aiosd:
            await refuse_an_edit(aiosd, config)
            code = await aiosd_status("--config", str(config.source_path))
    out, err = capsys.readouterr()
    assert code == 0
    assert "does not load (1 problem(s), first:" in err and "retry.max_retries" in err
    assert "reload     REFUSED, still serving the last good config" in out
    problem = next(line for line in out.splitlines() if line.strip().startswith("- "))
    assert "retry.max_retries" in problem
    assert "(generation 1," in out


async def test_status_says_when_nothing_answers(tmp_path, capsys):
    config = config_for(tmp_path, f"http://127.0.0.1:{free_port()}")  # never served
    code = await aiosd_status("--config", str(config.source_path))
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(f"aiosd is not answering at http://{config.listen}: ")


async def test_status_with_a_wrong_key_says_so(tmp_path, capsys):
    with FakeKernel() as kernel:
        config = keyed_config(tmp_path, kernel.url)
        async with serve_aiosd(config) as aiosd:
            (tmp_path / "aiosd.key").write_text("sk-not-the-key-at-all\n")
            code = await aiosd_status("--config", str(config.source_path), "--url", aiosd.url)
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(f"aiosd at {aiosd.url} answered /status with HTTP 401: missing or wrong API key")


async def test_status_finds_a_key_written_as_key_entry_after_a_refused_edit(tmp_path, capsys):
    # The case: keys written {key: ...}, an edit refused, then `aiosd status` sent no key (401).
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, f'auth: {{keys: [{{key: "{KEY}", name: ops}}]}}\n')
        async with serve_aiosd(config) as aiosd:
            await refuse_an_edit(aiosd, config)
            code = await aiosd_status("--config", str(config.source_path))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "reload     REFUSED" in out and KEY not in out + err


async def test_status_reads_listen_and_an_env_key_from_a_file_with_a_yaml_slip(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIOSD_TEST_STATUS_KEY", KEY)
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url, f'auth: {{keys: ["{KEY}"]}}\n')
        async with serve_aiosd(config):
            # The key now named by a variable, and a slip the YAML parser refuses (a quote never closed)
            # in a section of its own.
            text = config.source_path.read_text().replace(f"- {KEY}", "- {env: AIOSD_TEST_STATUS_KEY}")
            assert "AIOSD_TEST_STATUS_KEY" in text
            config.source_path.write_text(text + 'models:\n  map:\n    sonnet: {kernel_model: "gpt-4o-mini}\n')
            code = await aiosd_status("--config", str(config.source_path))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "does not load" in err and f"listening on {config.listen}" in out


async def test_status_key_option_and_variable(tmp_path, capsys, monkeypatch):
    with FakeKernel() as kernel:
        config = keyed_config(tmp_path, kernel.url)
        async with serve_aiosd(config):
            (tmp_path / "aiosd.key").unlink()  # the file no longer says the key: only --key or $AIOSD_KEY can
            without = await aiosd_status("--config", str(config.source_path))
            _, err = capsys.readouterr()
            with_option = await aiosd_status("--config", str(config.source_path), "--key", KEY)
            monkeypatch.setenv("AIOSD_KEY", KEY)
            with_variable = await aiosd_status("--config", str(config.source_path))
    assert without == 1 and "--key KEY or $AIOSD_KEY" in err
    assert (with_option, with_variable) == (0, 0)


# A stopped kernel is seen either refusing new connections or closing the one it was accepted on
# as it shuts down (which the call finds depends on how far the shutdown got): both say why.
@pytest.mark.parametrize(("fault", "cause"), [
    ("stopped", "(connection refused|the kernel closed the connection without answering)"),
    ("5xx", "HTTP 500"), ("hang", "no answer within 0.3s")])
async def test_an_ejected_kernels_slots_are_out_and_status_says_why(tmp_path, capsys, fault, cause):
    with FakeKernel() as k0, FakeKernel() as k1:
        pool = (f'kernels:\n  - {{url: "{k0.url}", name: k0, max_concurrency: 2}}\n'
                f'  - {{url: "{k1.url}", name: k1, max_concurrency: 2}}\n'
                'health: {consecutive_failures: 1, base_ejection: 60s, max_ejection: 60s}\n'
                'kernel: {timeout: 300ms}\nretry: {max_retries: 0}\n')
        config = config_for(tmp_path, k0.url, pool)
        async with serve_aiosd(config) as aiosd, httpx.AsyncClient(base_url=aiosd.url, timeout=10) as client:
            if fault == "stopped":
                k0.stop()
            elif fault == "5xx":
                k0.script(ServerError())
            else:
                k0.llm_latency = 30
            # The least loaded first, ties by config order: k0 takes the call, fails, k1 answers it.
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert aiosd.runtime.pool.members["k0"].health.ejected
            code = await aiosd_status("--config", str(config.source_path))
            queue = live_state(aiosd.runtime).queue
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert "calls      0 in flight / 2, 0 queued, 0 retries in the last 5 minutes" in lines
    out_line = next(line for line in lines if line.startswith("           2 slots out: k0 (2 slots): ejected, "))
    said = out_line.removeprefix("           2 slots out: k0 (2 slots): ejected, ")
    assert re.fullmatch(cause, said), out_line
    k0_line = next(line for line in lines if line.strip().startswith("k0 "))
    assert "ejected, ejected for " in k0_line and f"more ({said})" in k0_line
    assert (queue.capacity, queue.slots_out, queue.out) == (2, 2, [f"k0 (2 slots): ejected, {said}"])


def test_status_reads_a_config_that_is_a_fifo_or_an_alias_bomb_without_hanging(tmp_path):
    """Issue 18 items 7 (left in `aiosd status`): its lenient read of a refused file goes through the
    loader's bounded reader and parser, so a FIFO at the config path does not block it (it falls back
    to the default listen address) and an alias bomb is refused before it is built."""
    import os

    from aiosd.cli.status import lenient_target

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert lenient_target(fifo) == ("127.0.0.1:8700", None)  # read_text() would wait for a writer forever

    levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}" + f",*{chr(97 + i)}" * 9 + "]" for i in range(8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("listen: 127.0.0.1:9999\n" + "\n".join(levels) + "\n")  # 10^9 values once expanded
    # The whole is refused; its sections are read alone: listen reads, the bomb's own lines are refused.
    assert lenient_target(bomb) == ("127.0.0.1:9999", None)
