"""aiosd takes OpenClaw's own write lock (openclaw.json.lock) while it writes, as OpenClaw takes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aiosd.openclaw.lock as lock_module
from aiosd.openclaw.lock import lock_path_for
from aiosd.openclaw.sync import sync_openclaw
from tests.support.openclaw import API_KEY, BASE_URL, settings, spec


@pytest.fixture
def path(tmp_path) -> Path:
    path = tmp_path / "openclaw.json"
    path.write_text('{"gateway": {"port": 18789}}\n')
    os.chmod(path, 0o600)
    return path


def sync(path: Path):
    return sync_openclaw(settings(path), [spec("sonnet")], base_url=BASE_URL, api_key=API_KEY)


class VirtualClock:
    """``time`` as lock.py sees it, with a clock that only sleeping moves: waits are counted, not lived."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    time = staticmethod(time.time)  # a lock's age is judged against the wall clock, as OpenClaw does


def openclaw_lock(path: Path, *, pid: int, age: float = 0.0) -> Path:
    """The lock as OpenClaw's file-lock writes it: JSON {pid, createdAt}, then its ownership-token line."""
    created = datetime.now(UTC) - timedelta(seconds=age)
    lock = lock_path_for(path)
    payload = {"pid": pid, "createdAt": created.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    lock.write_text(json.dumps(payload, indent=2) + "\n" + "\t" * 8 + " \t" * 64 + "\n")
    os.chmod(lock, 0o600)
    return lock


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_while_openclaw_holds_its_lock_aiosd_waits_then_leaves_the_file_for_the_next_sync(path, monkeypatch):
    monkeypatch.setattr(lock_module, "WAIT", 0.2)
    clock = VirtualClock()
    monkeypatch.setattr(lock_module, "time", clock)
    lock = openclaw_lock(path, pid=os.getppid())  # a live process that is not aiosd
    before = path.read_bytes()
    result = sync(path)
    assert result.outcome == "busy" and not result.ok
    assert f"openclaw.json.lock held by pid {os.getppid()}" in result.message and "next sync" in result.message
    assert 0.2 <= clock.now <= 0.2 + 0.1  # it waited WAIT, and gave up within one poll (at most 0.1 s) after
    assert path.read_bytes() == before and lock.exists()  # neither the file nor OpenClaw's lock touched


def test_aiosd_writes_as_soon_as_openclaw_releases_its_lock(path):
    lock = openclaw_lock(path, pid=os.getppid())
    released = threading.Timer(0.1, lock.unlink)
    released.start()
    result = sync(path)
    released.join()
    assert result.outcome == "written"
    assert not lock.exists()


def test_aiosd_holds_the_lock_in_openclaws_format_while_it_writes(path):
    seen = []

    def look(p: Path) -> None:
        seen.append(json.loads(lock_path_for(p).read_text()))

    sync_openclaw(settings(path), [spec("sonnet")], base_url=BASE_URL, api_key=API_KEY, _before_replace=look)
    [payload] = seen
    assert payload["pid"] == os.getpid()
    created = datetime.fromisoformat(payload["createdAt"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - created).total_seconds()) < 5
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    assert not lock_path_for(path).exists()  # released after the write


@pytest.mark.parametrize("stale", ["dead process", "older than 30 s"])
def test_a_stale_lock_is_taken_over(path, stale):
    lock = openclaw_lock(path, pid=dead_pid()) if stale == "dead process" else \
        openclaw_lock(path, pid=os.getppid(), age=60)
    result = sync(path)
    assert result.outcome == "written"
    assert not lock.exists()


def test_no_lock_is_taken_for_a_sync_that_changes_nothing(path, monkeypatch):
    sync(path)
    openclaw_lock(path, pid=os.getppid())
    monkeypatch.setattr(lock_module, "WAIT", 0.0)
    assert sync(path).outcome == "unchanged"
