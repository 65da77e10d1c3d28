"""AdmissionQueue: a cap on kernel calls in flight, strict arrival order, clean exits."""

from __future__ import annotations

import asyncio
import time

import pytest

from aiosd.errors import CapacityError
from aiosd.kernel.admission import AdmissionQueue


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_are_taken_at_once():
    queue = AdmissionQueue(2)
    async with queue.slot():
        assert queue.in_flight == 1
        async with queue.slot():
            assert queue.in_flight == 2 and queue.queued == 0
    assert queue.in_flight == 0


async def test_twenty_waiters_enter_in_arrival_order_and_the_cap_holds():
    queue = AdmissionQueue(3)
    order: list[int] = []
    peak = 0
    gates = [asyncio.Event() for _ in range(20)]
    entered = [asyncio.Event() for _ in range(20)]

    async def request(i: int) -> None:
        nonlocal peak
        async with queue.slot(deadline=time.monotonic() + 30):
            order.append(i)
            peak = max(peak, queue.in_flight)
            assert queue.in_flight <= 3
            entered[i].set()
            await gates[i].wait()

    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(request(i)))
        await asyncio.sleep(0)  # arrival order = creation order
    await settle()
    assert order == [0, 1, 2] and queue.queued == 17
    # Let them finish in reverse-ish order: entry order must still be arrival order.
    for i in range(20):
        gates[i].set()
    await asyncio.gather(*tasks)
    assert order == list(range(20))
    assert peak == 3
    assert queue.in_flight == 0 and queue.queued == 0
    assert queue.admitted_total == 20


async def test_a_newcomer_does_not_jump_the_queue_when_a_slot_frees():
    queue = AdmissionQueue(1)
    order: list[str] = []
    await queue.acquire()

    async def enter(name: str) -> None:
        async with queue.slot():
            order.append(name)

    first = asyncio.create_task(enter("waiting"))
    await settle()
    queue.release()  # handed to "waiting" right away...
    late = asyncio.create_task(enter("newcomer"))  # ...so the newcomer must queue behind it
    await asyncio.gather(first, late)
    assert order == ["waiting", "newcomer"]


async def test_waiting_past_the_deadline_is_a_503_with_retry_after():
    queue = AdmissionQueue(1)
    await queue.acquire()
    with pytest.raises(CapacityError) as info:
        async with queue.slot(deadline=time.monotonic() + 0.02):
            pass
    assert info.value.status == 503 and info.value.retry_after >= 1
    assert "kernel slots" in info.value.message
    assert queue.queued == 0 and queue.in_flight == 1 and queue.timed_out_total == 1
    queue.release()
    assert queue.in_flight == 0


async def test_a_past_deadline_still_gets_a_free_slot():
    queue = AdmissionQueue(1)
    async with queue.slot(deadline=time.monotonic() - 1):
        assert queue.in_flight == 1


async def test_a_cancelled_waiter_leaves_and_does_not_leak_a_slot():
    queue = AdmissionQueue(1)
    await queue.acquire()
    waiter = asyncio.create_task(queue.acquire())
    behind = asyncio.create_task(queue.acquire())
    await settle()
    assert queue.queued == 2
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.queued == 1 and queue.cancelled_total == 1
    queue.release()
    await behind  # the slot skipped the cancelled waiter
    assert queue.in_flight == 1
    queue.release()
    assert queue.in_flight == 0


async def test_a_slot_handed_to_a_waiter_being_cancelled_is_passed_on():
    queue = AdmissionQueue(1)
    await queue.acquire()
    doomed = asyncio.create_task(queue.acquire())
    next_in_line = asyncio.create_task(queue.acquire())
    await settle()
    # Same tick: the slot is handed to `doomed`, then `doomed` is cancelled before it runs.
    queue.release()
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await next_in_line
    assert queue.in_flight == 1
    queue.release()
    assert queue.in_flight == 0 and queue.queued == 0


async def test_a_slot_handed_as_the_deadline_fires_is_passed_on():
    queue = AdmissionQueue(1)
    await queue.acquire()
    handed_back: list[int] = []
    release_slot = queue._release_slot

    def spy() -> None:
        handed_back.append(queue.in_flight)
        release_slot()

    queue._release_slot = spy
    # A deadline already past: the timeout fires on the next loop iteration...
    doomed = asyncio.create_task(queue.acquire(deadline=time.monotonic() - 1))
    next_in_line = asyncio.create_task(queue.acquire())
    await asyncio.sleep(0)  # both are queued now
    # ...and in this same iteration the slot is handed to `doomed` before its timeout runs.
    queue.release()
    with pytest.raises(CapacityError):
        await doomed
    assert len(handed_back) == 2  # our release, then doomed passing the slot it could not use
    await next_in_line
    assert queue.in_flight == 1 and queue.queued == 0


async def test_an_error_inside_the_block_still_releases():
    queue = AdmissionQueue(1)
    with pytest.raises(RuntimeError):
        async with queue.slot():
            raise RuntimeError("kernel call failed")
    assert queue.in_flight == 0


async def test_growing_admits_waiters_at_once():
    queue = AdmissionQueue(1)
    await queue.acquire()
    waiters = [asyncio.create_task(queue.acquire()) for _ in range(3)]
    await settle()
    queue.resize(3)
    await asyncio.wait_for(asyncio.gather(*waiters[:2]), 1)
    assert queue.in_flight == 3 and queue.queued == 1
    queue.resize(4)
    await waiters[2]
    assert queue.in_flight == 4


async def test_shrinking_lets_calls_in_flight_finish_and_admits_below_the_new_limit():
    queue = AdmissionQueue(3)
    for _ in range(3):
        await queue.acquire()
    waiter = asyncio.create_task(queue.acquire())
    await settle()
    queue.resize(1)
    queue.release()
    queue.release()
    await settle()
    assert not waiter.done() and queue.in_flight == 1
    queue.release()
    await waiter
    assert queue.in_flight == 1


async def test_time_queued_is_accumulated():
    now = [100.0]
    queue = AdmissionQueue(1, clock=lambda: now[0])
    await queue.acquire()
    waiter = asyncio.create_task(queue.acquire())
    await settle()
    now[0] += 2.5
    queue.release()
    await waiter
    assert queue.time_queued_total == 2.5


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError):
        AdmissionQueue(0)
    with pytest.raises(ValueError):
        AdmissionQueue(1).resize(0)
