"""RetryPolicy: which failures are retried, the exact waits, and how it gives up."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest

from aiosd.config.settings import ANONYMOUS, HealthSettings, SchedulerSettings
from aiosd.errors import (
    CapacityError,
    KernelRateLimited,
    KernelRejected,
    KernelTimeout,
    KernelUnreachable,
)
from aiosd.kernel.call import forward_query
from aiosd.kernel.pool import KernelPool
from aiosd.kernel.retry import AttemptReport, RetryPolicy
from aiosd.kernel.scheduler import Scheduler
from tests.support.kernel_calls import inner, kernel_settings, retry_settings


class FakeTime:
    """A clock that only moves when the policy sleeps: tests see the exact waits, instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy_with(fake: FakeTime, random=lambda: 0.5, **settings) -> RetryPolicy:
    return RetryPolicy(retry_settings(**settings), sleep=fake.sleep, clock=fake.clock, random=random)


def rate_limited(retry_after=None) -> KernelRateLimited:
    return KernelRateLimited("rate limited", kernel_status=429, retry_after=retry_after)


def scripted(*outcomes):
    """A call that raises or returns the next outcome each attempt, recording attempt indexes."""
    seen: list[int] = []
    queue = list(outcomes)

    async def call(attempt_index: int):
        seen.append(attempt_index)
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    call.seen = seen  # type: ignore[attr-defined]
    return call


# --- delays ------------------------------------------------------------------------------------------


def test_delay_grows_by_the_multiplier_and_stops_at_max():
    policy = policy_with(FakeTime(), initial=1.0, multiplier=2.0, max=5.0)
    assert [policy.delay_for(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_delay_survives_huge_exponents():
    policy = policy_with(FakeTime(), initial=1.0, multiplier=10.0, max=30.0)
    assert policy.delay_for(10_000) == 30.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 9.0), (0.5, 10.0), (0.999999, 11.0)])
def test_jitter_spreads_within_the_fraction(draw, expected):
    policy = policy_with(FakeTime(), random=lambda: draw, initial=10.0, max=60.0, jitter=0.1)
    assert policy.delay_for(0) == pytest.approx(expected, abs=1e-4)


def test_jitter_with_real_randomness_stays_in_bounds_and_never_above_max():
    policy = RetryPolicy(retry_settings(initial=10.0, max=10.5, jitter=0.2))
    delays = [policy.delay_for(0) for _ in range(2000)]
    assert min(delays) >= 8.0 and max(delays) <= 10.5
    assert len(set(delays)) > 100


def test_retry_after_is_a_floor_not_a_ceiling():
    policy = policy_with(FakeTime(), initial=20.0, max=60.0)
    assert policy.delay_for(0, retry_after=5.0) == 20.0
    assert policy.delay_for(0, retry_after=90.0) == 90.0  # above max: the kernel's word wins


# --- run ---------------------------------------------------------------------------------------------


async def test_429_twice_then_success_takes_three_attempts():
    fake = FakeTime()
    call = scripted(rate_limited(), rate_limited(), "answer")
    reports: list[AttemptReport] = []
    result, attempts = await policy_with(fake).run(call, deadline=fake.now + 600, on_attempt=reports.append, model="m")
    assert (result, attempts) == ("answer", 3)
    assert call.seen == [0, 1, 2]
    assert fake.sleeps == [20.0, 20.0]
    assert [r.outcome for r in reports] == ["retry", "retry", "ok"]
    assert [r.status for r in reports] == [429, 429, 200]


async def test_first_attempt_success_does_not_wait():
    fake = FakeTime()
    assert await policy_with(fake).run(scripted("answer")) == ("answer", 1)
    assert fake.sleeps == []


async def test_retry_after_from_the_kernel_sets_the_wait():
    fake = FakeTime()
    call = scripted(rate_limited(retry_after=33.0), "answer")
    await policy_with(fake, initial=1.0).run(call)
    assert fake.sleeps == [33.0]


async def test_429_beyond_the_budget_gives_429_with_retry_after_and_attempts():
    fake = FakeTime()
    call = scripted(*[rate_limited() for _ in range(10)])
    with pytest.raises(KernelRateLimited) as info:
        await policy_with(fake, max_retries=10, initial=20.0, budget=50.0).run(call)
    err = info.value
    assert fake.sleeps == [20.0, 20.0]  # a third 20 s wait would pass the 50 s budget
    assert err.attempts == 3
    assert err.status == 429
    assert err.retry_after == 20.0
    assert "gave up after 3 attempts" in err.message and "budget" in err.message
    assert str(err) == err.message


async def test_max_retries_bounds_the_attempts():
    fake = FakeTime()
    call = scripted(*[rate_limited() for _ in range(10)])
    with pytest.raises(KernelRateLimited) as info:
        await policy_with(fake, max_retries=2, initial=1.0).run(call)
    assert info.value.attempts == 3 and len(fake.sleeps) == 2
    assert "max_retries (2)" in info.value.message


async def test_429_not_retried_still_tells_the_client_when_to_come_back():
    fake = FakeTime()
    with pytest.raises(KernelRateLimited) as info:
        await policy_with(fake, max_retries=0, initial=7.2).run(scripted(rate_limited()))
    assert info.value.attempts == 1 and info.value.retry_after == 8.0


async def test_the_deadline_cuts_retries_short():
    fake = FakeTime()
    call = scripted(*[rate_limited() for _ in range(10)])
    with pytest.raises(KernelRateLimited) as info:
        await policy_with(fake, initial=20.0).run(call, deadline=fake.now + 30.0)
    assert fake.sleeps == [20.0]  # the second wait would end past the deadline
    assert info.value.attempts == 2 and "deadline" in info.value.message


async def test_statuses_outside_on_status_are_not_retried():
    fake = FakeTime()
    error = KernelRejected("boom", kernel_status=500)
    with pytest.raises(KernelRejected) as info:
        await policy_with(fake).run(scripted(error))
    assert fake.sleeps == [] and info.value.attempts == 1
    assert info.value.message == "boom"  # nothing to add: it was never retried


async def test_unreachable_is_retried_when_0_is_in_on_status():
    fake = FakeTime()
    call = scripted(KernelUnreachable("down", kernel_status=0), "answer")
    assert await policy_with(fake, on_status=(0, 429), initial=1.0).run(call) == ("answer", 2)


async def test_own_timeouts_are_never_retried():
    fake = FakeTime()
    with pytest.raises(KernelTimeout):
        await policy_with(fake, on_status=(0, 408, 429, 504)).run(scripted(KernelTimeout("hung")))
    assert fake.sleeps == []


async def test_a_non_retryable_error_after_retries_carries_the_attempt_count():
    fake = FakeTime()
    call = scripted(rate_limited(), KernelRejected("bad", kernel_status=400, status=400))
    with pytest.raises(KernelRejected) as info:
        await policy_with(fake, initial=1.0).run(call)
    assert info.value.attempts == 2 and "after 2 attempts" in info.value.message


async def test_capacity_errors_from_the_queue_carry_attempts_too():
    fake = FakeTime()
    call = scripted(rate_limited(), CapacityError("queue full", retry_after=4))
    with pytest.raises(CapacityError) as info:
        await policy_with(fake, initial=1.0).run(call)
    assert info.value.attempts == 2


async def test_cancellation_during_the_wait_stops_everything():
    waiting = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    attempts: list[int] = []

    async def call(index: int):
        attempts.append(index)
        raise rate_limited()

    policy = RetryPolicy(retry_settings(), sleep=sleep_forever)
    task = asyncio.create_task(policy.run(call))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == [0]


async def test_cancellation_with_the_real_asyncio_sleep():
    policy = RetryPolicy(retry_settings(initial=3600.0, max=3600.0, budget=7200.0))
    called = asyncio.Event()

    async def call(index: int):
        called.set()
        raise rate_limited()

    task = asyncio.create_task(policy.run(call))
    await called.wait()
    await asyncio.sleep(0)  # let it enter the hour-long wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancellation_during_the_call_propagates():
    in_call = asyncio.Event()

    async def call(index: int):
        in_call.set()
        await asyncio.Event().wait()

    fake = FakeTime()
    task = asyncio.create_task(policy_with(fake).run(call))
    await in_call.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.sleeps == []


async def test_one_log_line_per_attempt_without_prompt_text(caplog):
    fake = FakeTime()
    call = scripted(rate_limited(), rate_limited(), "answer")
    with caplog.at_level(logging.DEBUG, logger="aiosd.retry"):
        await policy_with(fake).run(call, model="sonnet")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiosd.retry"]
    assert len(lines) == 3
    assert lines[0] == "model sonnet: attempt 1/4 failed (status 429); retrying in 20s"
    assert lines[2] == "model sonnet: attempt 3/4 succeeded"


# --- forward_query: queue, call and retries together ------------------------------------------------------


def one_kernel(handler, **settings) -> Scheduler:
    """A scheduler in front of a pool of one kernel answered by ``handler`` (an httpx mock)."""
    pool = KernelPool((kernel_settings(**settings),), HealthSettings(), transport=httpx.MockTransport(handler))
    return Scheduler(pool, SchedulerSettings())


async def forward(scheduler: Scheduler, body, policy: RetryPolicy, **kwargs):
    kwargs.setdefault("settings", scheduler.pool.first().settings)
    return await forward_query(body, scheduler=scheduler, kernel_model="m", key=scheduler.key_state(ANONYMOUS),
                               level=0, policy=policy, deadline=time.monotonic() + 30, **kwargs)


async def test_forward_query_serialises_once_releases_the_slot_between_attempts_and_counts_attempts():
    sent: list[bytes] = []
    in_flight_seen: list[int] = []
    answers = [inner(429, None, "Rate Limit Exceeded"), inner(200, "done")]

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        in_flight_seen.append(scheduler.in_flight)
        return httpx.Response(200, json=answers.pop(0))

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        in_flight_seen.append(scheduler.in_flight)  # nobody holds the slot while we wait

    body = {
        "agent_name": "openclaw",
        "query_type": "llm",
        "query_data": {"messages": [{"role": "user", "content": "x"}]},
    }
    policy = RetryPolicy(retry_settings(initial=0.5), sleep=sleep)
    scheduler = one_kernel(handler, max_concurrency=1)
    result = await forward(scheduler, body, policy, model="m")
    await scheduler.pool.close()
    assert result.response["response_message"] == "done" and result.attempts == 2
    assert sent[0] == sent[1] and json.loads(sent[0]) == body
    assert waits == [0.5] and in_flight_seen == [1, 0, 1]
    assert scheduler.in_flight == 0


async def test_forward_query_on_a_full_queue_is_503_with_attempts():
    scheduler = one_kernel(lambda r: None, max_concurrency=1, queue_timeout=0.02)
    await scheduler.acquire("m", key=scheduler.key_state(ANONYMOUS))  # someone else holds the only slot
    with pytest.raises(CapacityError) as info:
        await forward(scheduler, {}, RetryPolicy(retry_settings()))
    await scheduler.pool.close()
    assert info.value.status == 503 and info.value.attempts == 1 and info.value.retry_after >= 1


async def test_forward_query_keeps_the_requests_own_limits_after_a_reload():
    # The pool has since been reloaded to a long queue timeout; the request started with 20 ms.
    scheduler = one_kernel(lambda r: None, max_concurrency=1, queue_timeout=60)
    await scheduler.acquire("m", key=scheduler.key_state(ANONYMOUS))  # someone else holds the only slot
    deadlines: list[float] = []
    acquire = scheduler.acquire

    async def recording_acquire(*args, **kwargs):
        deadlines.append(kwargs["deadline"])
        return await acquire(*args, **kwargs)

    scheduler.acquire = recording_acquire
    with pytest.raises(CapacityError):
        await forward(scheduler, {}, RetryPolicy(retry_settings()), settings=kernel_settings(queue_timeout=0.02),
                      clock=lambda: 100.0)
    await scheduler.pool.close()
    assert deadlines == [100.02]  # asked for a slot until its own queue_timeout, not the pool's 60 s
