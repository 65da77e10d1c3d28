"""What the status page plots and lists, kept in memory with fixed bounds.

Per-second figures for 15 minutes, the last requests, the requests under way.

What lives here: ``Trip`` (one request's figures as it goes: queue waits, kernel time, retry
waits, the phase it is in now), ``RequestHistory`` (the ring of one-second buckets, the last
finished requests, the live ones). Everything is recorded in the request path, always (the page
shows the last requests as soon as it is opened), so every record is O(1) and nothing is kept per
request once it ended: its fields are copied into preallocated rows. Nothing is written
to disk, and nothing here holds prompt or answer text: only ids, names, numbers and outcomes.

What does not: shaping it for the page (``api.dashboard_data``), the log lines (``logs.LogRing``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable
from typing import Any, Literal

Phase = Literal["starting", "queued", "calling", "retry_wait", "between"]

WINDOW_SECONDS = 900  # 15 minutes of one-second buckets
RECENT_REQUESTS = 200
# The page lists the requests under way; past this many it says how many more there are.
LIVE_SHOWN = 100
MODEL_NAME_LIMIT = 100  # a model id a client sent is shown, but never more than this
REFUSED_AUTH = "unauthorized"  # the outcome of a request without a valid key: counted, not listed


class Trip:
    """One request's figures while it runs and once it ended; the route and ``forwarding`` fill it in."""

    __slots__ = (
        "attempts",
        "kernel_time",
        "kernels",
        "key",
        "klass",
        "model",
        "phase",
        "phase_since",
        "pieces",
        "queue_wait",
        "request_id",
        "retry_until",
        "retry_wait",
        "session",
        "started",
        "started_wall",
        "task",
    )

    def __init__(self, request_id: str, key: str, klass: str) -> None:
        try:
            self.task = asyncio.current_task()
        except RuntimeError:  # no event loop: a test's or a tool's trip
            self.task = None
        self.request_id = request_id
        self.key = key
        self.klass = klass
        self.model = "-"
        self.started_wall = time.time()
        self.started = self.phase_since = time.monotonic()
        self.phase: Phase = "starting"
        self.retry_until = 0.0
        self.attempts = 0  # kernel calls started
        self.kernels: list[str] = []  # the kernels tried, in order, each once
        self.queue_wait = 0.0
        self.kernel_time = 0.0
        self.retry_wait = 0.0
        self.session = "-"  # its session's short form (8 hex characters), "-" without a session id
        self.pieces = 1  # kernel answers joined into the answer (more than 1: continued)

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.phase_since = time.monotonic()

    def called(self, kernel: str, queued: float, call: float) -> None:
        """One kernel call ended (answered or not) after ``queued`` seconds in the queue and ``call`` at the kernel."""
        self.queue_wait += queued
        self.kernel_time += call
        if kernel not in self.kernels:
            self.kernels.append(kernel)

    def retrying_in(self, wait: float) -> None:
        self.retry_wait += wait
        self.retry_until = time.monotonic() + wait
        self.set_phase("retry_wait")


# One finished request as the page lists it: made when the page reads the ring, not per request.
Finished = collections.namedtuple(
    "Finished",
    "seq at request_id key model outcome status attempts kernels queue_wait kernel_time retry_wait total overhead"
    " session pieces",
)
_EMPTY_ROW: tuple[Any, ...] = (0, 0.0, "", "-", "-", "", 0, 0, (), 0.0, 0.0, 0.0, 0.0, 0.0, "-", 1)


class FinishedRing:
    """The last ``size`` finished requests in preallocated rows of plain values, overwritten oldest
    first: recording one copies its fields into a row (no object kept per request); reading (the
    status page's poll) makes ``Finished`` tuples of the rows asked for."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: list[list[Any]] = [list(_EMPTY_ROW) for _ in range(size)]
        self._count = 0  # rows ever written; the newest is at (count - 1) % size

    def __len__(self) -> int:
        return min(self._count, self.size)

    def __getitem__(self, index: int) -> Finished:
        """The ``index``-th kept row, oldest first (negative: from the newest)."""
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError("no such finished request in the ring")
        return Finished._make(self._rows[(self._count - length + index) % self.size])

    def add(self, row: tuple[Any, ...]) -> None:
        """Record a row in ``Finished``'s field order."""
        self._rows[self._count % self.size][:] = row
        self._count += 1

    def since(self, seq: int) -> list[Finished]:
        """The kept rows numbered above ``seq``, oldest first (numbers rise with each row)."""
        length = len(self)
        rows = self._rows
        found = []
        for position in range(self._count - 1, self._count - length - 1, -1):
            row = rows[position % self.size]
            if row[0] <= seq:
                break
            found.append(Finished._make(row))
        found.reverse()
        return found


class SecondBuckets:
    """Per-second sums over the last ``size`` seconds in preallocated rows; a row is reused once its second is past."""

    FIELDS = ("requests", "errors", "overhead", "queue_wait", "kernel_time", "retry_wait", "total")

    def __init__(self, size: int = WINDOW_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self._clock = clock
        # Each row: [second it holds, then one sum per FIELDS]; a flat list per row is the cheapest to update.
        self._rows = [[-1] + [0.0] * len(self.FIELDS) for _ in range(size)]

    def add(self, error: bool, overhead: float, queue_wait: float, kernel_time: float,
            retry_wait: float, total: float) -> None:
        second = int(self._clock())
        row = self._rows[second % self.size]
        if row[0] != second:
            row[:] = (second, 1, int(error), overhead, queue_wait, kernel_time, retry_wait, total)
            return
        row[1] += 1
        row[2] += error
        row[3] += overhead
        row[4] += queue_wait
        row[5] += kernel_time
        row[6] += retry_wait
        row[7] += total

    def since(self, after: int | None = None) -> tuple[int, list[dict]]:
        """(this second, the buckets with traffic after second ``after`` within the window, oldest first)."""
        now = int(self._clock())
        first = now - self.size + 1
        if after is not None and after + 1 > first:
            first = after + 1
        found = []
        for second in range(first, now + 1):
            row = self._rows[second % self.size]
            if row[0] == second:
                found.append({"second": second, **dict(zip(self.FIELDS, row[1:], strict=False))})
        return now, found


class RequestHistory:
    """The status page's memory: per-second figures, the last finished requests, the requests under way."""

    def __init__(self, *, window: int = WINDOW_SECONDS, recent: int = RECENT_REQUESTS,
                 clock: Callable[[], float] = time.time) -> None:
        self.seconds = SecondBuckets(window, clock)
        self.recent = FinishedRing(recent)
        # By id(trip), since client-chosen request ids need not be unique.
        self.live: dict[int, Trip] = {}
        # Requests refused for a missing or wrong key: counted, never listed (anyone who can connect can
        # send them, and they would push every real request out of ``recent``).
        self.refused_auth = 0
        self._seq = itertools.count(1)

    def begin(self, request_id: str, *, key: str = "-", klass: str = "default") -> Trip:
        trip = Trip(request_id, key, klass)
        self.live[id(trip)] = trip
        return trip

    def under_way(self) -> list[Trip]:
        """The requests begun and not finished. A request task that ended without ``finish()`` (cancelled
        while the server shut down) is dropped here, off the request path."""
        trips = []
        for key, trip in list(self.live.items()):
            if trip.task is not None and trip.task.done():
                del self.live[key]
            else:
                trips.append(trip)
        return trips

    def finish(self, trip: Trip, *, status: int, outcome: str, total: float, model: str | None = None) -> None:
        """Record one ended request; ``total`` is its whole time in aiosd, so overhead is what waited on nothing.
        ``model`` is the id it resolved to, if it got that far (else the one it asked for stays)."""
        self.live.pop(id(trip), None)
        if outcome == REFUSED_AUTH:
            self.refused_auth += 1
            return
        if model:
            trip.model = model
        if not isinstance(trip.model, str):
            trip.model = "-"
        elif len(trip.model) > MODEL_NAME_LIMIT:  # a client's string: shown, but bounded
            trip.model = trip.model[: MODEL_NAME_LIMIT - 1] + "…"
        queue_wait, kernel_time, retry_wait = trip.queue_wait, trip.kernel_time, trip.retry_wait
        overhead = max(0.0, total - queue_wait - kernel_time - retry_wait)
        # The trip's own list of kernels: it is done with it.
        self.recent.add((next(self._seq), trip.started_wall, trip.request_id, trip.key, trip.model, outcome, status,
                         trip.attempts, trip.kernels, queue_wait, kernel_time, retry_wait, total, overhead,
                         trip.session, trip.pieces))
        # A client that hung up is neither an error of aiosd's nor of the kernel's.
        self.seconds.add(outcome != "ok" and outcome != "client_disconnected", overhead, queue_wait, kernel_time,
                         retry_wait, total)

    def finished_since(self, seq: int = 0) -> list[Finished]:
        """The finished requests numbered above ``seq`` still in the ring, oldest first."""
        return self.recent.since(seq)

