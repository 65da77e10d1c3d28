"""The OpenClaw sync as the runtime runs it: one blocking sync at a time, in a thread of its own, with a deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosd.openclaw.sync import SyncResult

log = logging.getLogger("aiosd.runtime")

# The longest one OpenClaw sync may take (it waits up to a few seconds for OpenClaw's lock; the
# file I/O itself takes milliseconds) before the daemon stops waiting for its thread.
OPENCLAW_SYNC_TIMEOUT = 30.0


class SyncRunner:
    """Runs OpenClaw syncs and keeps what the last one did (``last``) and how many finished (``done``)."""

    def __init__(self, *, timeout: float = OPENCLAW_SYNC_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.last: SyncResult | None = None
        self.done = 0
        self._clock = clock
        self._finished = asyncio.Condition()
        self._stuck: tuple[threading.Thread, float] | None = None

    async def run(self, sync: Callable[[], SyncResult], path: Path) -> SyncResult:
        """Run ``sync`` (writing OpenClaw's file at ``path``), keep and return its result."""
        result = await self._in_own_thread(sync, path)
        self.last = result
        async with self._finished:
            self.done += 1
            self._finished.notify_all()
        return result

    async def wait_for(self, after: int) -> None:
        """Return once more than ``after`` syncs have finished."""
        async with self._finished:
            await self._finished.wait_for(lambda: self.done > after)

    def _carried(self) -> dict[str, Any]:
        # what the last sync knew (warnings given, aiosd's own timeoutSeconds) is not forgotten
        last = self.last
        return {} if last is None else {"warned": last.warned, "timeout_written": last.timeout_written}

    async def _in_own_thread(self, sync: Callable[[], SyncResult], path: Path) -> SyncResult:
        """Run one blocking sync in a daemon thread of its own, waiting at most ``timeout``.

        Not ``asyncio.to_thread``: a thread stuck in the file system (a hung NFS or FUSE mount)
        would hold up the default executor's shutdown, and so the daemon's exit. A stuck thread is
        abandoned, and no second one is started while it lives."""
        stuck = self._stuck
        if stuck is not None and stuck[0].is_alive():
            return SyncResult("refused", path, **self._carried(), message=(
                f"the sync started {self._clock() - stuck[1]:.0f}s ago has not returned (a file system that "
                "does not answer?); not starting another until it does"))
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[SyncResult | None, BaseException | None]] = loop.create_future()

        def deliver(outcome: tuple[SyncResult | None, BaseException | None]) -> None:
            if not done.done():
                done.set_result(outcome)

        def run() -> None:
            outcome: tuple[SyncResult | None, BaseException | None]
            try:
                outcome = (sync(), None)
            except BaseException as exc:  # handed to the loop, raised there
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(deliver, outcome)
            except RuntimeError:
                pass  # the loop is gone: the daemon stopped while this sync was stuck

        thread = threading.Thread(target=run, name="openclaw-sync", daemon=True)
        started = self._clock()
        thread.start()
        try:
            value, error = await asyncio.wait_for(asyncio.shield(done), self.timeout)
        except TimeoutError:
            self._stuck = (thread, started)
            result = SyncResult("refused", path, **self._carried(), message=(
                f"the sync did not finish within {self.timeout:g}s (a file system that does not answer?); "
                "aiosd stops waiting for it and tries again once it returns"))
            log.error("openclaw sync refused: %s", result.message)
            return result
        if error is not None:
            raise error
        assert value is not None  # run() hands over a result or an error
        return value
