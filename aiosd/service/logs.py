"""Logging set-up: syslog priority prefixes when stderr is the journal, timestamps on a terminal."""

from __future__ import annotations

import logging
import os
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
