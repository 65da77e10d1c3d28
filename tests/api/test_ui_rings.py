"""The status page's in-memory rings: per-second buckets, recent requests and log lines stay bounded."""

from __future__ import annotations

import asyncio
import logging

from aiosd.service.history import RequestHistory, SecondBuckets
from aiosd.service.logs import LogRing


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def add(buckets: SecondBuckets, *, error: bool = False, kernel_time: float = 1.0) -> None:
    buckets.add(error=error, overhead=0.001, queue_wait=0.0, kernel_time=kernel_time, retry_wait=0.0, total=kernel_time)


def test_buckets_keep_fifteen_minutes_and_forget_older_seconds():
    clock = Clock()
    buckets = SecondBuckets(900, clock)
    for _ in range(3):
        add(buckets, error=True)
    start = int(clock.now)
    for _ in range(2000):  # more than twice round the ring
        clock.now += 1
        add(buckets, kernel_time=2.0)
    now, rows = buckets.since()
    assert now == start + 2000
    assert len(rows) == 900 and rows[0]["second"] == now - 899 and rows[-1]["second"] == now
    assert all(row["requests"] == 1 and row["errors"] == 0 and row["kernel_time"] == 2.0 for row in rows)
    assert len(buckets._rows) == 900


def test_a_reused_bucket_starts_from_zero_and_since_skips_quiet_seconds():
    clock = Clock()
    buckets = SecondBuckets(10, clock)
    add(buckets, error=True)
    add(buckets, error=True)
    clock.now += 10  # the same slot, ten seconds later
    add(buckets)
    now, rows = buckets.since()
    assert [(r["second"], r["requests"], r["errors"]) for r in rows] == [(now, 1, 0)]
    assert buckets.since(after=now) == (now, [])
    clock.now += 3
    assert buckets.since(after=now - 1)[1][0]["second"] == now  # quiet seconds are not sent


def test_recent_requests_keep_the_last_two_hundred():
    history = RequestHistory()
    for i in range(450):
        trip = history.begin(f"req_{i}")
        history.finish(trip, status=200, outcome="ok", total=0.01, model="m" * 500)
    assert len(history.recent) == 200 and history.recent[0].request_id == "req_250"
    assert len(history.recent[-1].model) == 100  # a client's model name is cut
    assert [row.seq for row in history.finished_since(449)] == [450]
    assert history.finished_since(450) == []
    assert len(history.live) == 0


async def test_a_trip_whose_task_was_cancelled_before_it_finished_leaves_the_live_set():
    history = RequestHistory()
    started = asyncio.Event()

    async def request() -> None:
        history.begin("req_gone")
        started.set()
        await asyncio.Event().wait()  # the server shuts down meanwhile

    task = asyncio.create_task(request())
    await started.wait()
    assert [trip.request_id for trip in history.under_way()] == ["req_gone"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert history.under_way() == [] and history.live == {}


def _record(logger: str, message: str, *args) -> logging.LogRecord:
    return logging.LogRecord(logger, logging.INFO, __file__, 1, message, args, None)


def test_the_log_ring_keeps_only_request_lines_bounded_and_one_line_each():
    ring = LogRing(size=50)
    ring.emit(_record("aiosd.daemon", "config reloaded (file changed): generation %d now serving", 2))
    for i in range(120):
        ring.emit(_record("aiosd.http", "request %s: model %s answered", f"req_{i}", "x"))
    assert len(ring.records) == 50
    assert ring.for_request("req_69") == [] and len(ring.for_request("req_70")) == 1

    ring.emit(_record("aiosd.http", "request %s: 404 model_not_found: The model %r\x1b[31m\n\rdoes not exist",
                      "a:b:", "m"))
    ring.emit(_record("aiosd.retry", "model %s, request %s: attempt 1/4 failed", "m", "a:b:"))
    ring.emit(_record("aiosd.http", "request %s: " + "y" * 10_000, "long"))
    [(_, level, logger, request_id, line)] = ring.for_request("a:b:")[:1]
    assert (level, logger, request_id) == ("INFO", "aiosd.http", "a:b:")
    assert "\x1b" not in line and "\n" not in line and "\r" not in line
    assert len(ring.for_request("a:b:")) == 2 and ring.for_request("a:b") == []
    assert len(ring.for_request("long")[0][4]) == LogRing.LINE_LIMIT

