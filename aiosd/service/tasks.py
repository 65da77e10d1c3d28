"""The runtime's background loops under supervision: one that dies is logged, counted and restarted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("aiosd.tasks")

# The first restart comes after FIRST_DELAY; each further one in a row waits twice as long, up to
# MAX_DELAY, so a loop that dies at once every time costs one log line a minute, not a busy loop.
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
# A loop that ran this long before dying is restarted after FIRST_DELAY again.
HEALTHY_RUN = 300.0
# How much of an exception's text a log line and /status show.
ERROR_TEXT_LIMIT = 200


@dataclass
class TaskRecord:
    """What /status says about one supervised loop."""

    name: str
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock
    task: asyncio.Task | None = None

    def as_dict(self) -> dict:
        running = self.task is not None and not self.task.done()
        return {"running": running, "restarts": self.restarts, "last_error": self.last_error,
                "last_error_at": self.last_error_at}


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` in one line: control characters escaped, bounded."""
    text = str(exc)
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[:ERROR_TEXT_LIMIT] + "…"
    text = text.encode("unicode_escape").decode("ascii")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class TaskSupervisor:
    """Runs each loop as a task and keeps it running: a loop is meant to run until cancelled, so
    returning or raising counts as dying. ``on_restart(name)`` is called for each restart (the
    runtime counts it as a metric). ``close()`` cancels them all and never raises."""

    def __init__(self, on_restart: Callable[[str], object] = lambda name: None, *,
                 first_delay: float | None = None, max_delay: float = MAX_DELAY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._on_restart = on_restart
        self.first_delay = FIRST_DELAY if first_delay is None else first_delay
        self.max_delay = max_delay
        self._clock = clock
        self.records: dict[str, TaskRecord] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        record = self.records.setdefault(name, TaskRecord(name))
        record.task = asyncio.get_running_loop().create_task(self._keep_running(record, loop), name=name)

    async def close(self) -> None:
        tasks = [r.task for r in self.records.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict:
        return {name: record.as_dict() for name, record in self.records.items()}

    async def _keep_running(self, record: TaskRecord, loop: Callable[[], Awaitable[None]]) -> None:
        delay = self.first_delay
        while True:
            started = self._clock()
            exc_info: BaseException | None
            try:
                await loop()
            except Exception as exc:  # CancelledError is not an Exception: a stop still stops it
                error, exc_info = describe_exception(exc), exc
            else:
                error, exc_info = "it returned, but it should run until aiosd stops", None
            if self._clock() - started >= HEALTHY_RUN:
                delay = self.first_delay
            record.restarts += 1
            record.last_error = error
            record.last_error_at = time.time()
            log.error("background task %s died (%s); restarting it in %gs (restart %d)",
                      record.name, error, delay, record.restarts)
            if exc_info is not None:
                log.debug("background task %s: traceback", record.name, exc_info=exc_info)
            try:
                self._on_restart(record.name)
            except Exception:  # counting must not stop the restart
                log.exception("could not count the restart of %s", record.name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)
