"""aiosd's queue in front of the kernel: at most N kernel calls in flight, the rest wait in arrival order.

What lives here: ``AdmissionQueue`` (a strictly FIFO semaphore with a per-waiter deadline, live
resizing and gauges). What does not: the deadline policy (the HTTP layer passes the deadline),
retries (``retry``).

Why a queue of our own rather than letting the kernel queue: the kernel's FIFO scheduler runs
everything it holds as one batch and waits for the slowest, a hung call holds one of its few
worker threads for good, and a client that disconnects does not cancel work inside the kernel.
Work that waits here can still be cancelled for free.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from aiosd.config.durations import format_duration
from aiosd.errors import CapacityError

# Bounds of the Retry-After sent with a queue timeout.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0
# Weight of the newest slot hold time in the running estimate.
HOLD_EWMA_WEIGHT = 0.2


class AdmissionQueue:
    """A strictly first-come-first-served limit on concurrent kernel calls.

    ``async with queue.slot(deadline=...)``: enter when one of ``max_concurrency`` slots is free
    and everyone who came earlier has entered. ``deadline`` (monotonic, on ``clock``) bounds the
    wait; past it the waiter gets ``CapacityError`` (503) with ``retry_after``. A waiter that is
    cancelled leaves the queue; a slot handed to it in the same instant is passed on, never lost.
    """

    def __init__(self, max_concurrency: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._limit = max_concurrency
        self._clock = clock
        self._in_flight = 0
        # Each waiter is a future resolved when a slot is handed to it (counted in _in_flight then).
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Cumulative figures for metrics.
        self.time_queued_total = 0.0
        self.admitted_total = 0
        self.timed_out_total = 0
        self.cancelled_total = 0
        self._hold_estimate: float | None = None

    # --- gauges -------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    # --- use ------------------------------------------------------------------------------------

    def slot(self, *, deadline: float | None = None) -> _Slot:
        """``async with queue.slot(deadline=...)``: hold one kernel slot for the block."""
        return _Slot(self, deadline)

    async def acquire(self, *, deadline: float | None = None) -> None:
        """Take a slot (pair with ``release()``); see ``slot``."""
        if self._in_flight < self._limit and not self._waiters:
            # Fast path: free slot and nobody ahead.
            self._in_flight += 1
            self.admitted_total += 1
            return
        ahead = len(self._waiters)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        started = self._clock()
        try:
            if deadline is None:
                await waiter
            else:
                async with asyncio.timeout(deadline - started):
                    await waiter
        except BaseException as exc:
            self.time_queued_total += self._clock() - started
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled or timed out: pass it on.
                self._release_slot()
            else:
                waiter.cancel()
                self._forget(waiter)
            if isinstance(exc, TimeoutError):
                self.timed_out_total += 1
                raise self._timeout_error(self._clock() - started, ahead) from None
            if isinstance(exc, asyncio.CancelledError):
                self.cancelled_total += 1
            raise
        self.time_queued_total += self._clock() - started
        self.admitted_total += 1

    def release(self) -> None:
        """Give back a slot taken with ``acquire``."""
        self._release_slot()

    def resize(self, max_concurrency: int) -> None:
        """Apply a reloaded ``kernel.max_concurrency`` now. Growing admits waiters at once;
        shrinking lets calls in flight finish and admits nobody until below the new limit."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._limit = max_concurrency
        self._wake()

    def note_hold_time(self, seconds: float) -> None:
        """Feed how long a slot was held (``_Slot`` does); used to estimate Retry-After."""
        if self._hold_estimate is None:
            self._hold_estimate = seconds
        else:
            self._hold_estimate += HOLD_EWMA_WEIGHT * (seconds - self._hold_estimate)

    # --- internals --------------------------------------------------------------------------------

    def _release_slot(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        # Hand free slots to the oldest waiters; a slot counts as taken from the moment it is handed.
        while self._waiters and self._in_flight < self._limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled, not yet removed
                continue
            waiter.set_result(None)
            self._in_flight += 1

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _timeout_error(self, waited: float, ahead: int) -> CapacityError:
        return CapacityError(
            f"aiosd's queue for the AIOS kernel is full: waited {format_duration(waited)} for one of "
            f"{self._limit} kernel slots ({ahead} request{'s' if ahead != 1 else ''} were ahead, "
            f"{self.queued} still waiting). Try again later or raise kernel.max_concurrency.",
            retry_after=self.retry_after_estimate(),
        )

    def retry_after_estimate(self) -> float:
        """Seconds until a new request would likely get a slot, clamped to [1, 60]."""
        hold = self._hold_estimate if self._hold_estimate is not None else 5.0
        rounds = (self.queued + 1) / self._limit
        return float(min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, math.ceil(hold * rounds))))


class _Slot:
    """The async context manager ``AdmissionQueue.slot`` returns."""

    __slots__ = ("_queue", "_deadline", "_entered_at")

    def __init__(self, queue: AdmissionQueue, deadline: float | None) -> None:
        self._queue = queue
        self._deadline = deadline
        self._entered_at = 0.0

    async def __aenter__(self) -> None:
        await self._queue.acquire(deadline=self._deadline)
        self._entered_at = self._queue._clock()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        queue = self._queue
        queue.note_hold_time(queue._clock() - self._entered_at)
        queue.release()
