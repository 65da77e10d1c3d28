"""Logging: syslog priority prefixes when stderr is the journal, timestamps otherwise, and logging.level applied live."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import (
    REPO,
    close_daemon,
    daemon_config,
    start_daemon,
    write_by_rename,
)
from tests.support.fake_kernel import FakeKernel

# One line per level, a message with a newline, and an exception with its traceback.
EMIT = textwrap.dedent("""\
    import logging, sys
    from aiosd.service.logs import setup_logging
    setup_logging(sys.argv[1])
    log = logging.getLogger("aiosd.example")
    log.debug("debug detail")
    log.info("listening")
    log.warning("kernel slow")
    log.error("config rejected:\\nsecond line")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("it broke")
    logging.getLogger("uvicorn.error").info("Uvicorn running on ... (Press CTRL+C to quit)")
    logging.getLogger("uvicorn.error").error("[Errno 98] address already in use")
""")

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


def emit(tmp_path, level: str = "info", journal_stream=lambda st: f"{st.st_dev}:{st.st_ino}") -> list[str]:
    """Run EMIT in a child whose stderr is a file; ``journal_stream`` makes $JOURNAL_STREAM from the file's stat (None: unset)."""
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
        value = journal_stream(os.fstat(err.fileno())) if journal_stream else None
        if value is not None:
            env["JOURNAL_STREAM"] = value
        subprocess.run([sys.executable, "-c", EMIT, level], stderr=err, env=env, check=True, timeout=30)
    return err_path.read_text().splitlines()


def test_on_the_journal_each_line_starts_with_its_syslog_priority_and_has_no_timestamp(tmp_path):
    lines = emit(tmp_path)
    assert lines[:4] == [
        "<6>aiosd.example: listening",
        "<4>aiosd.example: kernel slow",
        "<3>aiosd.example: config rejected: | second line",  # one event, one journal line
        lines[3],
    ]
    assert lines[3].startswith("<3>aiosd.example: it broke | Traceback (most recent call last):")
    assert lines[3].endswith("ZeroDivisionError: division by zero")
    # uvicorn's own start-up chatter is left out (aiosd logs where it listens); its errors are not.
    assert lines[4:] == ["<3>uvicorn.error: [Errno 98] address already in use"]
    assert not any(re.search(TIMESTAMP, line) for line in lines)


def test_on_a_terminal_or_a_file_lines_are_timestamped(tmp_path):
    lines = emit(tmp_path, journal_stream=None)
    assert re.fullmatch(TIMESTAMP + r"INFO    aiosd\.example: listening", lines[0])
    assert re.fullmatch(TIMESTAMP + r"WARNING aiosd\.example: kernel slow", lines[1])
    assert re.fullmatch(TIMESTAMP + r"ERROR   aiosd\.example: config rejected:", lines[2])
    assert not any(line.startswith("<") for line in lines)


@pytest.mark.parametrize("stream", ["garbage", "12", "1:2"])
def test_a_journal_stream_naming_another_file_is_not_the_journal(tmp_path, stream):
    # An inherited $JOURNAL_STREAM (say, a shell started from a unit) must not put <N> on a terminal.
    lines = emit(tmp_path, journal_stream=lambda st: stream)
    assert re.match(TIMESTAMP + "INFO", lines[0])


def test_the_level_hides_less_severe_lines_from_aiosd_and_libraries(tmp_path):
    assert [line.partition(":")[0] for line in emit(tmp_path, "error") if not line.startswith("<3>aiosd.example: it broke")] == [
        "<3>aiosd.example", "<3>uvicorn.error"]
    debug = emit(tmp_path, "debug")
    assert debug[0] == "<7>aiosd.example: debug detail"


def test_logging_level_applies_live_on_reload(tmp_path):
    port = free_port()
    with FakeKernel() as kernel:
        text = daemon_config(kernel.url, port)
        daemon = start_daemon(tmp_path, text + "logging: {level: info}\n", port)
        try:
            write_by_rename(daemon.config_path, text + "logging: {level: warning}\n")
            daemon.wait_for_reload()
            daemon.process.send_signal(signal.SIGHUP)  # a reload's info line is not logged at warning
            daemon.wait_for_reload()
            write_by_rename(daemon.config_path, text + "logging: {level: debug}\n")
            daemon.wait_for_reload()
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for_reload()
        finally:
            close_daemon(daemon)
    reloads = [line for line in daemon.process.stderr_lines() if "config reloaded" in line]
    # Generations 2 and 3 were loaded at level warning: their info lines are not there.
    assert reloads == [
        "<6>aiosd.daemon: config reloaded (file changed): generation 4 now serving",
        "<6>aiosd.daemon: config reloaded (SIGHUP): generation 5 now serving",
    ]
