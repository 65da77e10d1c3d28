"""Suite-wide guard: no test may read or write the real home directory or OpenClaw's real config."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    saved = {name: os.environ.get(name) for name in ("HOME", "OPENCLAW_HOME", "OPENCLAW_STATE_DIR",
                                                      "OPENCLAW_CONFIG_PATH", "AIOSD_CONFIG", "NOTIFY_SOCKET",
                                                      "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                                                      "STATE_DIRECTORY", "XDG_STATE_HOME")}
    for name in saved:
        os.environ.pop(name, None)
    os.environ["HOME"] = str(home)
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def isolated_state_dir(tmp_path_factory, monkeypatch):
    """Each test its own aiosd state directory (daemons it starts inherit it): a model list one
    test's daemon remembers must not appear in the next test's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def restored_logging():
    """A test that runs aiosd's logging set-up (main() installs a stderr handler on the root logger)
    leaves the levels and the root's handlers as it found them: a later test must not log into this
    one's captured, by then closed, stderr."""
    import logging

    loggers = [logging.getLogger(), logging.getLogger("aiosd")]
    levels = [logger.level for logger in loggers]
    handlers = list(loggers[0].handlers)
    # setup_logging switches off what no aiosd line shows (caller, thread, process): pytest's own reports show them.
    knobs = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    yield
    logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = knobs
    for handler in [h for h in loggers[0].handlers if h not in handlers]:
        loggers[0].removeHandler(handler)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
