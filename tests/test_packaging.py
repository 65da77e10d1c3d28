"""packaging/aiosd.service: systemd accepts it without warnings, rates its sandbox <= 2.0, and validates before reloading."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aiosd.config.durations import parse_duration
from aiosd.config.schema import load_schema

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "aiosd.service"
# The unit points at the install location; on a test machine that binary is absent.
ABSENT_BINARY = re.compile(r"Command /opt/aiosd/bin/aiosd is not executable|/opt/aiosd/bin/aiosd.*No such file")

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def directives(section: str) -> list[tuple[str, str]]:
    """(key, value) pairs of one section, in order, repeats kept (ExecReload= appears twice)."""
    current, found = None, []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def values(key: str, section: str = "Service") -> list[str]:
    return [value for k, value in directives(section) if k == key]


@needs_systemd_analyze
def test_systemd_analyze_verify_has_no_warnings(tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and not ABSENT_BINARY.search(line)]
    assert complaints == []


@needs_systemd_analyze
def test_the_sandbox_rates_at_most_2_0(tmp_path):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    match = re.search(r"Overall exposure level for aiosd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_it_is_a_notify_service_with_a_watchdog_that_restarts_on_failure():
    assert values("Type") == ["notify"]
    assert values("Restart") == ["on-failure"]
    assert parse_duration(values("WatchdogSec")[0]) > 0


def test_start_and_reload_validate_the_config_first():
    assert values("ExecStartPre") == ["/opt/aiosd/bin/aiosd check"]
    # systemd runs ExecReload= lines in order and stops at the first failure: an invalid file is
    # refused by `aiosd check` and the daemon never gets the SIGHUP.
    assert values("ExecReload") == ["/opt/aiosd/bin/aiosd check", "/bin/kill -HUP $MAINPID"]


def test_systemd_waits_longer_than_the_default_drain():
    drain = parse_duration(load_schema()["properties"]["server"]["properties"]["drain_timeout"]["default"])
    assert parse_duration(values("TimeoutStopSec")[0]) > drain


def test_openclaws_directory_is_the_one_writable_place():
    assert values("ProtectSystem") == ["strict"]
    # "-": a state directory OpenClaw has not made yet must not stop the unit from starting.
    assert values("ReadWritePaths") == ["-/home/openclaw/.openclaw"]
    assert values("User") == ["openclaw"]
