"""Logging: one line per event with outside text escaped, journal priorities, timestamps, levels applied live.

Syslog priority prefixes when stderr is the journal, timestamps otherwise.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from aiosd.service.logs import LogRing, OneLineFormatter
from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import (
    REPO,
    close_daemon,
    daemon_config,
    start_daemon,
    write_by_rename,
)
from tests.support.fake_kernel import FakeKernel, RawResponse, ServerError

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
    """Run EMIT in a child whose stderr is a file; ``journal_stream`` makes $JOURNAL_STREAM from the
    file's stat (None: unset)."""
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
        "<3>aiosd.example: config rejected:\\nsecond line",  # one event, one journal line
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
    assert re.fullmatch(TIMESTAMP + r"ERROR   aiosd\.example: config rejected:\\nsecond line", lines[2])
    # A traceback is part of its event's line there too.
    assert re.fullmatch(TIMESTAMP + r"ERROR   aiosd\.example: it broke \| Traceback \(most recent call last\):.*"
                        r" \| ZeroDivisionError: division by zero", lines[3])
    assert not any(line.startswith("<") for line in lines)


@pytest.mark.parametrize("stream", ["garbage", "12", "1:2"])
def test_a_journal_stream_naming_another_file_is_not_the_journal(tmp_path, stream):
    # An inherited $JOURNAL_STREAM (say, a shell started from a unit) must not put <N> on a terminal.
    lines = emit(tmp_path, journal_stream=lambda st: stream)
    assert re.match(TIMESTAMP + "INFO", lines[0])


def test_the_level_hides_less_severe_lines_from_aiosd_and_libraries(tmp_path):
    shown = [line for line in emit(tmp_path, "error") if not line.startswith("<3>aiosd.example: it broke")]
    assert [line.partition(":")[0] for line in shown] == ["<3>aiosd.example", "<3>uvicorn.error"]
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
        "<6>aiosd.daemon: config reloaded (file changed): generation 4 now serving; changed: logging",
        "<6>aiosd.daemon: config reloaded (SIGHUP): generation 5 now serving; no setting changed",
    ]


# --- text from outside never reaches a log line raw ------------------------------------------------

# What an attacker or a broken kernel puts into text aiosd logs: a forged journal line, terminal
# escape sequences (clear screen, colour), C1's NEL, DEL, NUL and Unicode's line separators.
HOSTILE = "a\n<3>forged line\r\x1b[2J\x1b[31m\x00\x7f\x85\u2028\u2029z"
HOSTILE_ESCAPED = r"a\n<3>forged line\r\x1b[2J\x1b[31m\x00\x7f\x85\u2028\u2029z"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # \n only ends lines

EMIT_HOSTILE = textwrap.dedent("""\
    import logging
    from aiosd.service.logs import setup_logging
    setup_logging("info")
    log = logging.getLogger("aiosd.example")
    hostile = HOSTILE
    log.warning("kernel said: %s", hostile)
    try:
        try:
            raise KeyError(hostile)
        except KeyError as exc:
            raise ValueError("wrapped " + hostile) from exc
    except ValueError:
        log.exception("request failed")
    log.info("after")
""").replace("HOSTILE", repr(HOSTILE))


def emit_hostile(tmp_path, journal: bool) -> list[str]:
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
        if journal:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", EMIT_HOSTILE], stderr=err, env=env, check=True, timeout=30)
    text = err_path.read_bytes().decode("utf-8")
    assert not RAW_CONTROL.search(text), repr(text)
    return text.split("\n")[:-1]  # splitlines() would also split on the raw separators this hunts


def line_prefix(journal: bool) -> str:
    return r"<\d>" if journal else TIMESTAMP + r"[A-Z]+ +"


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "plain"])
def test_control_characters_in_messages_and_exceptions_are_escaped_one_line_per_event(tmp_path, journal):
    lines = emit_hostile(tmp_path, journal)
    assert len(lines) == 3, lines  # three events, three lines
    prefix = line_prefix(journal)
    assert re.fullmatch(prefix + re.escape("aiosd.example: kernel said: " + HOSTILE_ESCAPED), lines[0])
    failed = lines[1]
    assert re.match(prefix + re.escape("aiosd.example: request failed | Traceback (most recent call last):"), failed)
    # Both exceptions of the chain, their messages escaped, in the one line.
    assert f"KeyError: {HOSTILE!r}" in failed  # KeyError shows its argument's repr
    assert "The above exception was the direct cause of the following exception:" in failed
    assert failed.endswith("ValueError: wrapped " + HOSTILE_ESCAPED)
    assert re.fullmatch(prefix + "aiosd.example: after", lines[2])


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "plain"])
def test_hostile_text_in_requests_and_kernel_errors_stays_on_one_escaped_log_line(tmp_path, journal):
    port = free_port()
    with FakeKernel() as kernel:
        daemon = start_daemon(tmp_path, daemon_config(kernel.url, port), port, journal=journal)
        try:
            ids = {}
            with httpx.Client(base_url=daemon.url, timeout=10) as client:
                def post(what: str, path: str, body: dict, status: int) -> None:
                    response = client.post(path, json=body)
                    assert response.status_code == status, response.text
                    ids[what] = response.headers["x-request-id"]

                post("role", "/v1/chat/completions",
                     {"model": "sonnet", "messages": [{"role": "us\ner\x1b[31m", "content": "hi"}]}, 400)
                post("block type", "/v1/chat/completions",
                     {"model": "sonnet",
                      "messages": [{"role": "user", "content": [{"type": "te\nxt\x1b[2J", "text": "x"}]}]},
                     400)
                post("model", "/v1/messages",
                     {"model": "son\nnet\x1b[1m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                     404)
                kernel.script(ServerError("boom\n<3>forged\x1b[31m\u2028x"))
                post("kernel detail", "/v1/chat/completions",
                     {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}, 502)
                kernel.script(RawResponse(200, {"response": {"status_code": 502, "response_message": None,
                                                              "error": "llm\nfailed\x1b[0m\x85"}}))
                post("kernel error", "/v1/chat/completions",
                     {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}, 502)
        finally:
            close_daemon(daemon)
    text = daemon.process.stderr_path.read_bytes().decode("utf-8")
    assert not RAW_CONTROL.search(text), repr(text)
    lines = text.split("\n")[:-1]
    prefix = re.compile(line_prefix(journal) + r"[a-z_.]+: ")
    assert all(prefix.match(line) for line in lines), lines  # nothing started a line of its own

    def logged(what: str) -> str:
        # The line answering the request (the retry policy's line about it is another event).
        found = [line for line in lines if "aiosd.http: request " + ids[what] in line]
        assert len(found) == 1, (what, lines)
        return found[0]

    assert r"'us\ner\x1b[31m'" in logged("role")
    assert r"'te\nxt\x1b[2J'" in logged("block type")
    assert "son" in logged("model") and "\\x1b[1m" in logged("model")
    assert r"\x1b[31m" in logged("kernel detail") and "forged" in logged("kernel detail")
    assert r"failed\x1b[0m" in logged("kernel error")


# --- the per-request line's cheap path (in-process: the formatter, the stderr handler, the ring) ---


def _record(message: str, *args: object, created: float | None = None) -> logging.LogRecord:
    record = logging.LogRecord("aiosd.http", logging.INFO, __file__, 1, message, args, None)
    if created is not None:
        record.created, record.msecs = created, (created - int(created)) * 1000
    return record


def test_each_line_carries_its_own_second_though_the_date_is_formatted_once_per_second():
    formatter = OneLineFormatter("%(asctime)s %(message)s")
    start = 1_800_000_000.25
    for offset in (0.0, 0.5, 0.9, 1.0, 1.75, 3600.0, 3600.001):
        created = start + offset
        expected = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + f",{int((created % 1) * 1000):03d}"
        assert formatter.format(_record("x", created=created)) == f"{expected} x"


def test_a_message_the_log_ring_saw_first_is_escaped_on_stderr_too(tmp_path):
    """The ring (on the "aiosd" logger) runs before the stderr handler (on the root) and keeps the escaped
    message on the record; a formatter of someone else's that ran first leaves it raw, and ours still escapes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(name)s: %(message)s"))
    foreign = logging.Handler()
    foreign.emit = lambda record: logging.Formatter().format(record)  # sets record.message, unescaped
    ring = LogRing()
    aiosd_logger, root = logging.getLogger("aiosd"), logging.getLogger()
    aiosd_logger.addHandler(foreign)
    aiosd_logger.addHandler(ring)
    root.addHandler(handler)
    try:
        logging.getLogger("aiosd.http").warning("request %s: role %s refused", "req_1", "us\ner\x1b[31m\u2028")
    finally:
        root.removeHandler(handler)
        aiosd_logger.removeHandler(ring)
        aiosd_logger.removeHandler(foreign)
    escaped = r"request req_1: role us\ner\x1b[31m\u2028 refused"
    assert stream.getvalue() == f"aiosd.http: {escaped}\n"
    assert [line for *_, line in ring.for_request("req_1")] == [escaped]

