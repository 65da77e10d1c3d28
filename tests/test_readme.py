"""The README works as written: its trial block answers a chat and leaves HOME untouched.

Its install commands use the lock, and .ci/run runs exactly the test command the README gives."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import typing
from pathlib import Path

from tests.support.aiosd_harness import free_port

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """The two commands in the README's first lines (indented code before any prose)."""
    return [line.strip() for line in README.splitlines()[1:6] if line.startswith("    ")]


def test_the_readme_starts_with_an_install_and_a_test_command_in_a_venv():
    install, test = readme_commands()
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -c constraints/lock.txt . && ")
    assert "aiosd run --config config/aiosd.yaml" in install
    assert test == ("python3 -m venv .venv && .venv/bin/pip install -c constraints/lock.txt '.[test]' "
                    "&& .venv/bin/python -m pytest")
    assert (REPO / "constraints" / "lock.txt").is_file()


def test_ci_runs_exactly_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci.splitlines()


def test_nothing_tracked_names_a_path_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:  # a copy without .git (as .ci/run makes): walk the tree instead
        skipped = {".venv", ".openclaw-cli", "__pycache__"}  # installed, not ours
        files = [p for p in REPO.rglob("*") if p.is_file() and not skipped & set(p.parts)]
    else:
        files = [REPO / name for name in tracked.stdout.splitlines()]
    # Spelled in pieces so that this file does not match itself.
    outside = re.compile("|".join([r"\.\./" + "shared", "/" + "work/", "shared/" + "(fixtures|reference|hooks)"]))
    hits = []
    for path in files:
        if path.suffix in {".py", ".md", ".yaml", ".toml", ".service", ".json", ".cfg", ""} and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            hits += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in outside.finditer(text)]
    assert hits == []


def trial_script() -> str:
    block = re.search(r"<!-- trial -->\n```sh\n(.*?)```\n<!-- /trial -->", README, re.S)
    assert block, "the README's trial block is missing its <!-- trial --> markers"
    return block.group(1)


def test_the_trial_block_answers_a_chat_and_leaves_home_untouched(tmp_path):
    """The block as a user pastes it: only the venv's bin folder and the two ports differ."""
    workdir, home = tmp_path / "checkout", tmp_path / "home"
    (workdir / "config").mkdir(parents=True)
    (workdir / "tests" / "support").mkdir(parents=True)
    home.mkdir()
    kernel_port, aiosd_port = free_port(), free_port()
    config = (REPO / "config" / "aiosd.yaml").read_text(encoding="utf-8")
    config = config.replace("localhost:8000", f"localhost:{kernel_port}").replace(":8700", f":{aiosd_port}")
    (workdir / "config" / "aiosd.yaml").write_text(config, encoding="utf-8")
    shutil.copy(REPO / "tests" / "support" / "fake_kernel.py", workdir / "tests" / "support")
    script = trial_script().replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    script = script.replace("--port 8000", f"--port {kernel_port}").replace("localhost:8700", f"localhost:{aiosd_port}")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the script left running
        except ProcessLookupError:
            pass
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in (workdir / "trial").glob("*.log"))
    assert process.returncode == 0, output + logs
    assert '"ready":true' in output.replace(" ", "")
    assert '"object":"chat.completion"' in output.replace(" ", "")
    assert '"id":"sonnet"' in output.replace(" ", "")
    # The models the README says /v1/models lists are exactly those it lists.
    models = next(json.loads(line) for line in output.splitlines() if line.startswith('{"object":"list"'))
    assert sorted(m["id"] for m in models["data"]) == sorted(trial_model_ids())
    # The request line the README shows is the shape of the real one (times and ids aside).
    shown = re.search(r"`(request req_\.\.\.: model sonnet answered in [^`]*)`", README.replace("\n", " "))
    assert shown, "the README no longer shows a request's log line"
    pattern = re.escape(shown.group(1)).replace(r"req_\.\.\.", r"req_[0-9a-f]+").replace(r"1\.2s", r"[0-9.]+s")
    pattern = pattern.replace("localhost:8000", f"localhost:{kernel_port}")
    assert re.search(pattern, (workdir / "trial" / "aiosd.log").read_text()), pattern
    assert list(home.rglob("*")) == [], "the trial wrote into HOME"
    assert '"aios"' in (workdir / "trial" / "openclaw.json").read_text()


def trial_model_ids() -> list[str]:
    """The ids the README's trial says /v1/models lists ("`/v1/models` lists `a` and `b`: ...")."""
    said = re.search(r"`/v1/models` lists (.*?):", README.replace("\n", " "))
    assert said, "the trial no longer says what /v1/models lists"
    return re.findall(r"`([^`]+)`", said.group(1))


def test_the_commands_table_names_every_option_of_every_command():
    import argparse

    from aiosd.cli.main import build_parser

    rows = {line.split("`")[1].split()[1]: line for line in README.splitlines() if line.startswith("| `aiosd ")}
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in commands.choices.items():
        parsers = [parser]
        for action in parser._actions:  # service install / uninstall
            if isinstance(action, argparse._SubParsersAction):
                parsers += action.choices.values()
        for sub in parsers:
            for action in sub._actions:
                shown = action.help != argparse.SUPPRESS and action.dest != "help"
                for option in action.option_strings if shown else ():
                    documented = option in rows.get(name, "") or option in ("--config", "--log-level")
                    if option.startswith("--") and not documented:
                        missing.append(f"aiosd {name} {option}")
    assert missing == []
    assert "--log-level" in rows["run"]


def test_the_page_section_names_every_state_a_kernel_can_show():
    from aiosd.api.dashboard_data import KernelHealth

    bullet = re.search(r"- \*\*Kernels\*\*: (.*?)\n- ", README, re.S)
    assert bullet
    assert [state for state in typing.get_args(KernelHealth) if state not in bullet.group(1)] == []


def test_what_the_readme_shows_aiosd_writing_into_openclaw_json_is_what_a_sync_writes(tmp_path):
    from aiosd.config.loader import load_config
    from aiosd.openclaw.sync import openclaw_api_key, provider_timeout_seconds, sync_openclaw

    config = load_config(REPO / "config" / "aiosd.yaml", env={})
    target = tmp_path / "openclaw.json"
    target.write_text('{"agents": {"defaults": {"modelPolicy": {"allow": ["openai/gpt-4o"]}}}}')
    settings = dataclasses.replace(config.openclaw, config_path=str(target))
    result = sync_openclaw(settings, config.models.map, base_url=config.own_base_url,
                           api_key=openclaw_api_key(config), timeout_seconds=provider_timeout_seconds(config))
    assert result.ok, result.message
    written = json.loads(target.read_text())
    provider = written["models"]["providers"][config.openclaw.provider_id]
    row = provider["models"][0]
    block = re.search(r"```json5\n(.*?)```", README, re.S)
    assert block
    shown = dict(re.findall(r'(\w+): ("[^"]*"|\d+)', block.group(1)))
    real = {**{k: v for k, v in provider.items() if k != "apiKey"}, **row}
    for key, value in shown.items():
        if key in real:
            assert json.loads(value) == real[key], key
    assert set(shown) - {"apiKey"} <= set(real)
    allow = json.loads(re.search(r"allow: (\[[^\]]*\])", block.group(1)).group(1))
    assert [e for e in written["agents"]["defaults"]["modelPolicy"]["allow"] if e != "openai/gpt-4o"] == allow


def test_the_fresh_machine_line_installs_what_ci_installs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    needed = set(re.findall(r"missing\+=\(([\w.-]+)\)", ci)) - {"python3-venv"}  # said with the commands
    line = next(line for line in README.splitlines() if line.strip().startswith("sudo apt-get install -y curl"))
    assert needed and needed <= set(line.split())


def test_removing_aiosd_stops_it_before_taking_its_entries_out_of_openclaws_file():
    """A running daemon would put its entries back at its next sync: every removal the README shows
    stops or uninstalls aiosd first."""
    for paragraph in README.split("\n\n"):
        lines = paragraph.splitlines()
        removes = [i for i, line in enumerate(lines) if "sync-openclaw --remove" in line and line.startswith("    ")]
        for index in removes:
            assert any("service uninstall" in line for line in lines[:index]), paragraph
    prose = README.replace("\n", " ")
    assert "stop aiosd (or `aiosd service uninstall`), then run `aiosd sync-openclaw --remove`" in prose


def test_the_first_prose_says_what_aiosd_is_before_any_instruction():
    paragraphs = [p for p in README.split("\n\n")[1:] if not p.startswith("    ")]
    assert paragraphs[0].startswith("aiosd runs [OpenClaw]") and "OpenAI-compatible endpoint" in paragraphs[0]
    assert README.index(paragraphs[0]) < README.index("**Before the first command:**")
