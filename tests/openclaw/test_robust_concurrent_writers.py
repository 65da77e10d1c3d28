"""aiosd syncing openclaw.json again and again while another process writes it: that writer's changes stay.

The other writer is a real process that bumps a counter (``gateway.port``, a key aiosd never
touches) every 2 ms, the way OpenClaw does (temp file + rename) or the way an editor or a script
may (rewriting the file in place). Before each bump it reads the file: a counter lower than the
one it last wrote means aiosd replaced the file with a version that predates its write. aiosd
alternates between two model lists, so every one of its syncs really writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aiosd.openclaw.lock import lock_path_for
from aiosd.openclaw.sync import sync_openclaw
from tests.support.openclaw import API_KEY, BASE_URL, assert_valid_openclaw, settings, spec

# The race runs until aiosd has written WANTED_WRITES times (at least MIN_SECONDS), at most MAX_SECONDS.
MIN_SECONDS, MAX_SECONDS, WANTED_WRITES = 1.5, 8.0, 40
FIRST_PORT = 20000

WRITER = textwrap.dedent("""
    import json, os, sys, time

    path, how, stop, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    port = int(sys.argv[5])
    writes = reverted = unreadable = 0
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not os.path.exists(stop):
        try:
            with open(path) as f:
                document = json.load(f)
        except (OSError, ValueError):
            unreadable += 1  # only ever aiosd's file in the middle of being renamed: try again
            continue
        if document["gateway"]["port"] < port:
            reverted += 1  # aiosd put back a version from before this writer's last update
        port += 1
        document["gateway"]["port"] = port
        text = json.dumps(document, indent=2) + "\\n"
        if how == "rename":
            tmp = f"{path}.{os.getpid()}.{writes}.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        else:
            with open(path, "w") as f:  # truncate and rewrite the same file
                f.write(text)
        writes += 1
        time.sleep(0.002)
    print(json.dumps({"writes": writes, "reverted": reverted, "final": port, "unreadable": unreadable}), flush=True)
""")


def run_race(path: Path, how: str) -> tuple[dict, list[str], int]:
    """The writer while aiosd syncs in a loop (until aiosd wrote often enough); then aiosd syncs on."""
    path.write_text(json.dumps({"gateway": {"port": FIRST_PORT, "mode": "local"}}, indent=2) + "\n")
    os.chmod(path, 0o600)
    stop_file = path.with_name("stop-writer")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), how, str(stop_file), str(MAX_SECONDS), str(FIRST_PORT)],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "ready\n"
    stop = threading.Event()
    outcomes: list[str] = []
    lists = [[spec("sonnet")], [spec("sonnet"), spec("opus")]]

    def aiosd_syncs() -> None:
        while not stop.is_set():
            result = sync_openclaw(settings(path), lists[len(outcomes) % 2], base_url=BASE_URL, api_key=API_KEY)
            outcomes.append(result.outcome)

    syncing = threading.Thread(target=aiosd_syncs)
    started = time.monotonic()
    syncing.start()
    try:
        while time.monotonic() - started < MAX_SECONDS and writer.poll() is None:
            if time.monotonic() - started >= MIN_SECONDS and outcomes.count("written") >= WANTED_WRITES:
                break
            time.sleep(0.05)
        stop_file.touch()
        out, _ = writer.communicate(timeout=30)
    finally:
        stop.set()
        syncing.join(30)
    report = json.loads(out)
    # After the writer's last update, more syncs: none may take it back.
    for models in lists:
        sync_openclaw(settings(path), models, base_url=BASE_URL, api_key=API_KEY)
    final = json.loads(path.read_text())["gateway"]["port"]
    return report, outcomes, final


@pytest.mark.parametrize("how", ["rename", "in-place"])
def test_another_writers_updates_survive_aiosds_syncs(tmp_path, how, caplog):
    caplog.set_level("CRITICAL", logger="aiosd.openclaw")  # thousands of sync lines are not the point
    path = tmp_path / "openclaw.json"
    report, outcomes, final = run_race(path, how)
    writes, reverted = report["writes"], report["reverted"]
    written = outcomes.count("written")
    summary = (f"{how} writer: {reverted} of {writes} updates reverted by aiosd ({reverted / max(writes, 1):.3%}); "
               f"aiosd wrote {written} times in {len(outcomes)} syncs "
               f"({ {o: outcomes.count(o) for o in set(outcomes)} })")
    print(summary)
    # the race really happened: both kept writing
    assert writes > 100 and written >= 10, summary
    # the writer's final state survives, and aiosd's entries are there too, valid for OpenClaw
    assert final == report["final"], (
        f"the final update was undone: file has {final}, writer wrote {report['final']}; {summary}")
    document = assert_valid_openclaw(path)
    assert [m["id"] for m in document["models"]["providers"]["aios"]["models"]] == ["sonnet", "opus"]
    assert reverted == 0, summary
    assert not lock_path_for(path).exists()
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".tmp")) == []

