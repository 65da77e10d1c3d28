"""Logging set-up: syslog priority prefixes when stderr is the journal, timestamps on a terminal; the ring of recent request lines."""

from __future__ import annotations

import collections
import logging
import os
import re
import sys

# sd-daemon(3) priority prefixes: journald reads "<N>" at the start of each stderr line.
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; journald adds the timestamp itself."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # One event, one journal line: continuation lines would lose their priority.
        return f"<{priority}>" + text.replace("\n", " | ")


def stderr_is_journal(environ=os.environ) -> bool:
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


def setup_logging(level: str = "info") -> None:
    """Install the one stderr handler aiosd uses; safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_aiosd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._aiosd = True  # type: ignore[attr-defined]
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    set_level(level)
    # uvicorn's access log would print one line per request with no request id; aiosd logs its own.
    logging.getLogger("uvicorn.access").disabled = True


# Libraries that log a line per request or per file event, or repeat what aiosd says itself
# (uvicorn's "running on ... Press CTRL+C to quit"): only their warnings and errors help an operator.
_CHATTY_LIBRARIES = ("httpx", "httpcore", "watchfiles", "uvicorn.error")


def set_level(level: str) -> None:
    """Apply ``logging.level`` (live on reload) to aiosd and the libraries it runs (uvicorn's errors included)."""
    logging.getLogger().setLevel(LEVELS[level])
    logging.getLogger("aiosd").setLevel(LEVELS[level])
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(LEVELS[level], logging.WARNING))


class LogRing(logging.Handler):
    """The last ``size`` log lines about requests, in memory, for the status page to show by request id.

    Only lines naming a request ("request <id>") are kept, so a quiet daemon's reload notes do
    not push them out. Each line is stored already formatted, control characters replaced and cut
    to ``LINE_LIMIT`` characters, so memory stays bounded whatever a message carried.
    """

    LINE_LIMIT = 2000
    _REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # what request_context accepts as an id
    _CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

    def __init__(self, size: int = 2000) -> None:
        super().__init__(logging.DEBUG)
        self.records: collections.deque[tuple[float, str, str, str, str]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        # Runs for every aiosd log line, in the request path: plain string searches, no regex scan.
        try:
            message = record.getMessage()
            request_id = self._request_id(message)
            if request_id is None:
                return
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            if not message.isprintable():
                message = self._CONTROL.sub(" ", message)
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
