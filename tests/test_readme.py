"""The README works as written: its trial block answers a chat and leaves HOME untouched.

Its install commands use the lock, and .ci/run runs exactly the test command the README gives."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
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
    assert list(home.rglob("*")) == [], "the trial wrote into HOME"
    assert '"aios"' in (workdir / "trial" / "openclaw.json").read_text()
