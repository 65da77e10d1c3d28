"""The benchmark harness (bench/run.py) still runs end to end: a tiny --quick run against real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


@pytest.mark.timeout(120)
def test_quick_bench_run_measures_every_figure(tmp_path):
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-install", "--out", str(out)],
        capture_output=True, text=True, timeout=110, cwd=tmp_path,
    )
    # 0: every target met, 1: some missed (a tiny run proves nothing about targets), 2: the bench broke.
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    figures = {figure["name"]: figure for figure in results["figures"]}
    for name in (
        "added latency p50, c=1, not streamed",
        "added latency p99, c=1, streamed",
        "requests/s with no errors, c=16, not streamed",
        "RSS peak under load",
        "config edit to new config serving (worst)",
        "start to READY=1",
        "openclaw sync, file rewritten (median)",
    ):
        assert figures[name]["value"] is not None, name
    assert 0 < figures["start to READY=1"]["value"] < 30
    assert 0 < figures["config edit to new config serving (worst)"]["value"] < 10
    assert figures["RSS peak under load"]["value"] >= figures["RSS idle after start"]["value"] * 0.5
    # Every load run really answered requests, and the daemon stopped cleanly (else exit 2).
    for target, by_connections in results["details"]["runs"].items():
        for connections, run in by_connections.items():
            assert run["requests"] > 0 and run["errors"] == 0, (target, connections, run)
    assert "figure" in done.stdout and "target" in done.stdout
