"""Logging set-up: one line per event (outside text escaped), and the ring of recent request lines.

Syslog priority prefixes when stderr is the journal, timestamps on a terminal; the ring feeds the status page.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType

# sd-daemon(3) priority prefixes: journald reads "<N>" at the start of each stderr line.
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Characters that must never reach a log line raw: C0 (newline, ESC, ...), DEL, C1 (NEL among them)
# and the Unicode line and paragraph separators. A newline forges a log line (with its own
# "<3>" priority on the journal); ESC sequences rewrite what an operator's terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Between the lines of one event's traceback (aiosd's own structure, not outside text).
LINE_JOIN = " | "


def _escaped(match: re.Match) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROL.sub(_escaped, text)


# Chunks of a formatted traceback that are its own layout (several lines each); every other
# chunk is an exception's text (``Type: message``, a note), which may quote anything.
# What logging hands formatException: sys.exc_info() of the record.
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
_LAYOUT_CHUNKS = ("File ", "Traceback (most recent call last)", "[Previous line repeated")


def _traceback_lines(chunks: Iterable[str]) -> list[str]:
    lines: list[str] = []
    for chunk in chunks:
        if chunk.startswith("\n") or chunk.lstrip(" |").startswith(_LAYOUT_CHUNKS):
            lines.extend(escape_controls(line) for line in chunk.split("\n") if line.strip())
        else:
            lines.append(escape_controls(chunk.removesuffix("\n")))
    return lines


class OneLineFormatter(logging.Formatter):
    """Every event on exactly one line: the message and an exception's text with control characters
    escaped, a traceback's lines joined with `` | ``. Done here, once, because log messages quote
    text from outside (clients' roles and model ids, the kernel's error sentences, header values)
    at many call sites.

    Every request logs a line, so the common case is kept cheap: a printable message skips the
    escaping pass (``str.isprintable`` is false for every character ``escape_controls`` rewrites),
    a message ``LogRing`` already escaped is not made again, and the timestamp's date and time are
    formatted once per second."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._uses_time = self.usesTime()
        self._second: tuple[int, str] = (-1, "")  # (a second, its text): one tuple, so threads see a pair

    def format(self, record: logging.LogRecord) -> str:
        record.message = _escaped_message(record)
        if self._uses_time:
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if not (record.exc_info or record.exc_text or record.stack_info):
            return line
        parts = [line]
        if record.exc_info:
            # Not cached in record.exc_text: other handlers (pytest's) format it their own way.
            parts.append(self.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(LINE_JOIN.join(escape_controls(line) for line in record.exc_text.splitlines()))
        if record.stack_info:
            parts.append(LINE_JOIN.join(escape_controls(line) for line in record.stack_info.splitlines()))
        return LINE_JOIN.join(part for part in parts if part)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (cached[1], record.msecs) if self.default_msec_format else cached[1]

    def formatException(self, ei: ExcInfo) -> str:
        _, exc, tb = ei
        if exc is None:
            return ""
        chunks = traceback.TracebackException(type(exc), exc, tb).format()
        return LINE_JOIN.join(_traceback_lines(chunks))


def _escaped_message(record: logging.LogRecord) -> str:
    """``record.getMessage()`` with control characters escaped; made once per record (``LogRing`` may have)."""
    message: str | None = record.__dict__.get(_ESCAPED)
    if message is None:
        message = record.getMessage()
        if not message.isprintable():
            message = escape_controls(message)
        setattr(record, _ESCAPED, message)
    return message


# Where a record keeps its escaped message for the next handler (a name no ``extra=`` of aiosd's uses).
_ESCAPED = "_aiosd_escaped"


class JournalFormatter(OneLineFormatter):
    """``<priority>logger: message``; journald adds the timestamp itself."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>" + super().format(record)


def stderr_is_journal(environ: Mapping[str, str] = os.environ) -> bool:
    """True when systemd connected fd 2 to the journal ($JOURNAL_STREAM names its device:inode)."""
    stream = environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def lean_records() -> None:
    """Switch off what ``logging`` gathers for every record and no aiosd line shows (the "Optimization"
    section of the logging HOWTO): the caller's file, line and function (a walk up the stack per
    record), the thread, the process id and the multiprocessing process name."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup_logging(level: str = "info") -> None:
    """Install the one stderr handler aiosd uses, records made lean (``lean_records``); safe to call again."""
    lean_records()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_aiosd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._aiosd = True  # type: ignore[attr-defined]
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    set_level(level)
    # uvicorn's access log would print one line per request with no request id; aiosd logs its own.
    logging.getLogger("uvicorn.access").disabled = True


# Libraries that log a line per request or per file event, or repeat what aiosd says itself
# (uvicorn's "running on ... Press CTRL+C to quit"): only their warnings and errors help an operator.
_CHATTY_LIBRARIES = ("httpx", "httpcore", "watchfiles", "uvicorn.error")


# ``aiosd run --log-level``: wins over logging.level, at start and at every reload.
_override: str | None = None


def override_level(level: str | None) -> None:
    """Pin the level (None: follow logging.level again) and apply it now."""
    global _override
    _override = level
    if level is not None:
        set_level(level)


def set_level(level: str) -> None:
    """Apply ``logging.level`` (live on reload) to aiosd and the libraries it runs (uvicorn's errors included)."""
    level = _override or level
    logging.getLogger().setLevel(LEVELS[level])
    logging.getLogger("aiosd").setLevel(LEVELS[level])
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(LEVELS[level], logging.WARNING))


class LogRing(logging.Handler):
    """The last ``size`` log lines about requests, in memory, for the status page to show by request id.

    Only lines naming a request ("request <id>") are kept, so a quiet daemon's reload notes do
    not push them out. Each line is stored already formatted, control characters escaped as in the
    journal and cut to ``LINE_LIMIT`` characters, so memory stays bounded whatever a message carried.
    """

    LINE_LIMIT = 2000
    _REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # what request_context accepts as an id

    def __init__(self, size: int = 2000) -> None:
        super().__init__(logging.DEBUG)
        self.records: collections.deque[tuple[float, str, str, str, str]] = collections.deque(maxlen=size)

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle's filter pass and lock guard nothing here: the ring has no filters, and a
        # deque append is atomic.
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        # Runs for every aiosd log line, in the request path: plain string searches, no regex scan.
        try:
            message = _escaped_message(record)  # kept on the record: the stderr handler's formatter reuses it
            request_id = self._request_id(message)
            if request_id is None:
                return
            if record.exc_info and record.exc_info[1] is not None:
                message = escape_controls(f"{message} ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})")
            self.records.append((record.created, record.levelname, record.name, request_id, message[: self.LINE_LIMIT]))
        except Exception:  # a log line must never break the request that logged it
            self.handleError(record)

    @classmethod
    def _request_id(cls, message: str) -> str | None:
        """The id in "request <id>: ..." (or "..., request <id>" at the end); ids may hold ':' themselves."""
        start = message.find("request ")
        if start < 0 or (start and message[start - 1].isalnum()):
            return None
        start += len("request ")
        end = message.find(" ", start)
        token = message[start:] if end < 0 else message[start:end]
        token = token[:-1] if token.endswith((":", ",", ";", ")")) else token
        return token if cls._REQUEST_ID.fullmatch(token) else None

    def for_request(self, request_id: str) -> list[tuple[float, str, str, str, str]]:
        """(time, level, logger, request id, line) of every kept line about ``request_id``, oldest first."""
        return [entry for entry in self.records if entry[3] == request_id]


# seconds between two log lines about the same kind of refusal
LOG_INTERVAL = 10.0
http_log = logging.getLogger("aiosd.http")


class RateLimitedLog:
    """One log line per ``interval`` for a recurring event; the ones in between are counted and
    reported in a line of their own when the interval ends (never thousands of lines)."""

    def __init__(self, level: int, interval: float = LOG_INTERVAL, logger: logging.Logger = http_log) -> None:
        self.level, self.interval, self.logger = level, interval, logger
        self._last = -float("inf")
        self._suppressed = 0
        self._what = ""
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, message: str, *args: object, what: str) -> None:
        """Log ``message % args`` now, or count it (``what`` names it in the summary line)."""
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.logger.log(self.level, message + f" (more of these are counted and logged every {self.interval:g}s)",
                            *args)
            return
        self._suppressed += 1
        self._what = what
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush = loop.call_later(self._last + self.interval - now, self._report)

    def _report(self) -> None:
        self._flush = None
        if self._suppressed:
            count, self._suppressed = self._suppressed, 0
            self._last = time.monotonic()
            self.logger.log(self.level, "%d more %s in the last %gs", count, self._what, self.interval)
