"""Scheduler: slots of a kernel pool handed out by class, fair share across keys, aging and per-key limits;
clean exits."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from aiosd.config.settings import ClientKey, HealthSettings, SchedulerSettings
from aiosd.errors import CapacityError, QueueLimitExceeded
from aiosd.kernel.pool import KernelPool
from aiosd.kernel.scheduler import Scheduler
from tests.support.kernel_calls import kernel_settings


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


def scheduler_for(*slots: int, clock=time.monotonic, aging: float = 0.0, models=None) -> Scheduler:
    """A scheduler over kernels k0, k1, ... with ``slots`` slots each (no kernel is ever called)."""
    settings = tuple(
        kernel_settings(f"http://k{i}.test", name=f"k{i}", max_concurrency=n) for i, n in enumerate(slots)
    )
    never_called = httpx.MockTransport(lambda r: httpx.Response(500))
    pool = KernelPool(settings, HealthSettings(), transport=never_called, clock=clock)
    for i, member in enumerate(pool):
        if models is not None:
            member.models = frozenset(models[i])
    return Scheduler(pool, SchedulerSettings(classes=("interactive", "background"), aging=aging), clock=clock)


def key(s: Scheduler, name: str = "a", **limits):
    return s.key_state(ClientKey(name, **limits))


async def test_free_slots_are_taken_at_once_on_the_least_loaded_kernel():
    s = scheduler_for(2, 4)
    a = key(s)
    got = [await s.acquire("m", key=a) for _ in range(3)]
    # k1 (4 slots) is relatively less loaded until it holds 2 of 4, like k0's 1 of 2.
    assert [k.name for k in got] == ["k0", "k1", "k1"]
    assert s.in_flight == 3 and s.queued == 0
    for k in got:
        s.release(k, a)
    assert s.in_flight == 0


async def test_one_key_one_class_enters_in_arrival_order_and_the_cap_holds():
    s = scheduler_for(3)
    a = key(s)
    order: list[int] = []
    held = [await s.acquire("m", key=a) for _ in range(3)]

    async def request(i: int) -> None:
        kernel = await s.acquire("m", key=a, deadline=time.monotonic() + 30)
        order.append(i)
        assert s.in_flight <= 3
        s.release(kernel, a)

    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(request(i)))
        await asyncio.sleep(0)
    await settle()
    assert s.queued == 20
    for kernel in held:
        s.release(kernel, a)
    await asyncio.gather(*tasks)
    assert order == list(range(20)) and s.in_flight == 0 and s.queued == 0


async def test_a_newcomer_does_not_jump_the_queue_when_a_slot_frees():
    s = scheduler_for(1)
    a = key(s)
    order: list[str] = []
    held = await s.acquire("m", key=a)

    async def enter(name: str) -> None:
        kernel = await s.acquire("m", key=a)
        order.append(name)
        s.release(kernel, a)

    first = asyncio.create_task(enter("waiting"))
    await settle()
    s.release(held, a)  # handed to "waiting" right away...
    late = asyncio.create_task(enter("newcomer"))  # ...so the newcomer must queue behind it
    await asyncio.gather(first, late)
    assert order == ["waiting", "newcomer"]


async def test_waiting_past_the_deadline_is_a_503_with_retry_after():
    s = scheduler_for(1)
    a = key(s)
    held = await s.acquire("m", key=a)
    with pytest.raises(CapacityError) as info:
        await s.acquire("m", key=a, deadline=time.monotonic() + 0.02)
    assert info.value.status == 503 and info.value.retry_after >= 1
    assert "kernel slots" in info.value.message
    assert s.queued == 0 and s.in_flight == 1 and s.timed_out_total == 1
    s.release(held, a)
    assert s.in_flight == 0


async def test_a_cancelled_waiter_leaves_and_a_slot_handed_to_it_is_passed_on():
    s = scheduler_for(1)
    a = key(s)
    held = await s.acquire("m", key=a)
    doomed = asyncio.create_task(s.acquire("m", key=a))
    next_in_line = asyncio.create_task(s.acquire("m", key=a))
    await settle()
    assert s.queued == 2
    # Same tick: the slot is handed to `doomed`, then `doomed` is cancelled before it runs.
    s.release(held, a)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    kernel = await next_in_line
    assert s.in_flight == 1 and s.queued == 0
    s.release(kernel, a)
    assert s.in_flight == 0 and a.in_flight == 0


async def test_growing_the_pool_admits_waiters_at_once_and_removing_a_kernel_lets_its_calls_finish():
    s = scheduler_for(1)
    a = key(s)
    held = await s.acquire("m", key=a)
    waiters = [asyncio.create_task(s.acquire("m", key=a)) for _ in range(3)]
    await settle()
    s.pool.apply((kernel_settings("http://k0.test", name="k0", max_concurrency=1),
                  kernel_settings("http://k1.test", name="k1", max_concurrency=2)), HealthSettings())
    granted = await asyncio.wait_for(asyncio.gather(*waiters[:2]), 1)
    assert [k.name for k in granted] == ["k1", "k1"] and not waiters[2].done()
    # k0 leaves while its call is in flight: the call finishes, the waiter gets a k1 slot, never k0.
    s.pool.apply((kernel_settings("http://k1.test", name="k1", max_concurrency=2),), HealthSettings())
    s.release(held, a)
    await settle()
    assert not waiters[2].done() and s.in_flight == 2
    s.release(granted[0], a)
    assert (await waiters[2]).name == "k1"


async def test_a_kernel_without_the_model_is_never_chosen():
    s = scheduler_for(4, 4, models=[{"other"}, {"m"}])
    a = key(s)
    got = [await s.acquire("m", key=a) for _ in range(4)]
    assert {k.name for k in got} == {"k1"}
    waiter = asyncio.create_task(s.acquire("m", key=a, deadline=time.monotonic() + 0.05))
    with pytest.raises(CapacityError):  # k0 has 4 free slots, but not the model
        await waiter


async def test_an_interactive_request_takes_the_next_free_slot_before_queued_background_work():
    s = scheduler_for(2)
    bg, user = key(s, "cron"), key(s, "user")
    held = [await s.acquire("m", key=bg, level=1) for _ in range(2)]
    background = [asyncio.create_task(s.acquire("m", key=bg, level=1)) for _ in range(5)]
    await settle()
    interactive = asyncio.create_task(s.acquire("m", key=user, level=0))
    await settle()
    s.release(held[0], bg)
    await settle()
    assert interactive.done() and not any(t.done() for t in background)
    for task in background:
        task.cancel()


async def test_one_keys_burst_of_50_delays_another_keys_request_by_at_most_one_slot_turn():
    s = scheduler_for(2)
    a, b = key(s, "a"), key(s, "b")
    held = [await s.acquire("m", key=a) for _ in range(2)]
    burst = [asyncio.create_task(s.acquire("m", key=a)) for _ in range(50)]
    await settle()
    single = asyncio.create_task(s.acquire("m", key=b))
    await settle()
    s.release(held[0], a)  # the next free slot goes to b, not to a's 50 older requests
    await settle()
    assert single.done() and sum(t.done() for t in burst) == 0
    for task in burst:
        task.cancel()


async def test_weights_share_slots_between_keys_in_proportion():
    s = scheduler_for(1)
    heavy, light = s.key_state(ClientKey("heavy", weight=3)), key(s, "light")
    held = await s.acquire("m", key=light)
    order: list[str] = []

    async def one(state, name):
        kernel = await s.acquire("m", key=state)
        order.append(name)
        s.release(kernel, state)

    tasks = [asyncio.create_task(one(heavy, "H")) for _ in range(6)]
    tasks += [asyncio.create_task(one(light, "L")) for _ in range(6)]
    await settle()
    s.release(held, light)
    await asyncio.gather(*tasks)
    assert order[:8].count("H") == 6 and order[:8].count("L") == 2


async def test_a_waiting_background_request_ages_into_the_interactive_class():
    now = [1000.0]
    s = scheduler_for(1, clock=lambda: now[0], aging=30.0)
    bg, user = key(s, "cron"), key(s, "user")
    held = await s.acquire("m", key=user)
    old_background = asyncio.create_task(s.acquire("m", key=bg, level=1))
    await settle()
    now[0] += 31  # the background request has waited past scheduler.aging
    fresh_interactive = asyncio.create_task(s.acquire("m", key=user, level=0))
    await settle()
    s.release(held, user)
    await settle()
    # Both are interactive now; the aged one has had the least service (a fresh key) and came first.
    assert old_background.done() and not fresh_interactive.done()
    fresh_interactive.cancel()


async def test_without_aging_the_same_background_request_waits():
    now = [1000.0]
    s = scheduler_for(1, clock=lambda: now[0], aging=0.0)
    bg, user = key(s, "cron"), key(s, "user")
    held = await s.acquire("m", key=user)
    old_background = asyncio.create_task(s.acquire("m", key=bg, level=1))
    await settle()
    now[0] += 31
    fresh_interactive = asyncio.create_task(s.acquire("m", key=user, level=0))
    await settle()
    s.release(held, user)
    await settle()
    assert fresh_interactive.done() and not old_background.done()
    old_background.cancel()


async def test_per_key_limits_queue_then_refuse_with_429_naming_the_limit():
    s = scheduler_for(4)
    capped = key(s, "cron", max_in_flight=1, max_queued=1)
    first = await s.acquire("m", key=capped)
    second = asyncio.create_task(s.acquire("m", key=capped))  # over max_in_flight: waits, though slots are free
    await settle()
    assert not second.done() and s.queued == 1 and s.in_flight == 1
    with pytest.raises(QueueLimitExceeded) as info:
        await s.acquire("m", key=capped)
    assert info.value.status == 429 and info.value.retry_after >= 1
    assert "max_queued (1)" in info.value.message and "'cron'" in info.value.message
    # Another key is not held back by cron's limit.
    other = key(s, "user")
    assert (await s.acquire("m", key=other)).name == "k0"
    s.release(first, capped)
    assert (await second).name == "k0"
    assert s.stats[("interactive", "cron")].rejected == 1


async def test_max_queued_zero_names_max_in_flight():
    s = scheduler_for(4)
    capped = key(s, "cron", max_in_flight=2, max_queued=0)
    await s.acquire("m", key=capped)
    await s.acquire("m", key=capped)
    with pytest.raises(QueueLimitExceeded) as info:
        await s.acquire("m", key=capped)
    assert "max_in_flight (2)" in info.value.message


def test_the_class_comes_from_key_then_model_and_a_header_may_only_lower_it():
    s = scheduler_for(1)
    assert s.class_level(None, None, None) == 0
    assert s.class_level("background", None, None) == 1
    assert s.class_level(None, "background", None) == 1
    assert s.class_level("interactive", "background", None) == 0
    assert s.class_level(None, None, "background") == 1  # lowered
    assert s.class_level("background", None, "interactive") == 1  # never raised
    assert s.class_level(None, None, "nonsense") == 0


async def test_a_failover_keeps_the_place_it_first_queued_at():
    now = [100.0]
    s = scheduler_for(1, clock=lambda: now[0])
    a = key(s)
    held = await s.acquire("m", key=a)
    now[0] = 101.0
    later = asyncio.create_task(s.acquire("m", key=a))
    await settle()
    # A request that first queued at 100.5 failed on another kernel and asks again now (at 102).
    now[0] = 102.0
    failover = asyncio.create_task(s.acquire("m", key=a, new_request=False, since=100.5))
    await settle()
    s.release(held, a)
    await settle()
    assert failover.done() and not later.done()
    later.cancel()
