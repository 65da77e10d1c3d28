"""Test helpers for the operational surface: driving the daemon's reload path on a harness-served runtime."""

from __future__ import annotations

import time

from aiosd.daemon import Daemon, ReloadOutcome


async def attach_daemon(aiosd) -> Daemon:
    """A Daemon whose reload() drives the harness's runtime: the path SIGHUP and file changes take."""
    config = aiosd.runtime.config
    daemon = Daemon(config.source_path, config)
    await daemon.runtime.close()  # the one it built is replaced by the served one
    daemon.runtime = aiosd.runtime
    aiosd.runtime.last_reload = ReloadOutcome(ok=True, at=time.time(), reason="start")
    return daemon
