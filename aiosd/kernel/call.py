"""One forwarded kernel call end to end: serialise once, then per attempt a slot from the scheduler and /query, failing over to another kernel at once, retried by policy.

What lives here: ``forward_query``, the composition of ``Scheduler``, the pool's ``KernelClient``s and
``RetryPolicy`` the service layer calls with a ready /query body, and ``ForwardResult``. What does
not: building the body or decoding ``response`` (``translate``), turning errors into HTTP answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosd.config.settings import KernelSettings
from aiosd.errors import AiosdError
from aiosd.kernel.client import _dumps
from aiosd.kernel.health import fails_over
from aiosd.kernel.retry import AttemptReport, RetryPolicy
from aiosd.kernel.scheduler import KeyState, Scheduler

log = logging.getLogger("aiosd.forward")


@dataclass
class ForwardResult:
    response: dict
    attempts: int  # kernel calls made, failovers and retries included
    kernels: list[str] = field(default_factory=list)  # the kernel of each call, in order


async def forward_query(
    body: dict | bytes,
    *,
    scheduler: Scheduler,
    kernel_model: str,
    key: KeyState,
    level: int,
    policy: RetryPolicy,
    deadline: float,
    settings: KernelSettings,
    model: str | None = None,
    on_attempt: Callable[[AttemptReport], object] | None = None,
    on_call: Callable[[float, float, BaseException | None, str], object] | None = None,
    on_phase: Callable[[str], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ForwardResult:
    """The kernel's ``response`` object for one /query body; raises an ``AiosdError`` with
    ``attempts`` and ``kernels`` set.

    ``deadline`` (monotonic) bounds the whole request: queueing, every call and the waits between
    them. Each call waits for a slot at most ``settings.queue_timeout`` (and not past the deadline),
    then runs for at most ``settings.timeout``. A call that failed in a way that says nothing about
    the request (``health.fails_over``) goes at once to another healthy kernel serving the model
    that this attempt has not tried; only when none is left does the retry policy see the error (and
    its waits apply). The slot is given back between calls, so a request sleeping on a 429 holds none.
    ``settings`` are the request's own kernel settings (its config generation). ``on_phase`` hears
    "queued", "calling" and "between" (the status page shows where a request is); ``on_call`` gets
    each call's queue wait, duration, error and kernel name.
    """
    content = body if isinstance(body, bytes) else _dumps(body)  # once, for every call
    result = ForwardResult({}, 0)
    label = model or kernel_model

    first_queued: list[float] = []  # when the request first asked for a slot: its place and age

    async def attempt(index: int) -> dict:
        tried: set[str] = set()
        while True:
            queued_at = clock()
            if on_phase is not None:
                on_phase("queued")
            kernel = await scheduler.acquire(
                kernel_model, key=key, level=level, exclude=frozenset(tried),
                deadline=min(deadline, queued_at + settings.queue_timeout),
                new_request=index == 0 and not tried,
                since=first_queued[0] if first_queued else None,
            )
            if not first_queued:
                first_queued.append(queued_at)
            started = clock()
            if on_phase is not None:
                on_phase("calling")
            result.attempts += 1
            result.kernels.append(kernel.name)
            tried.add(kernel.name)
            error: BaseException | None = None
            cancelled = True  # until the call ends: a client that left says nothing about the kernel
            try:
                response = await kernel.client.query(
                    content, timeout=max(0.001, min(settings.timeout, deadline - started)))
                cancelled = False
                return response
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                error, cancelled = exc, False
                if not (isinstance(exc, AiosdError) and fails_over(exc)):
                    raise
                if clock() >= deadline or not scheduler.can_fail_over(kernel_model, frozenset(tried)):
                    raise
                log.info("model %s: kernel %s failed (%s); failing over to another kernel at once",
                         label, kernel.name, exc.message)
            finally:
                held = clock() - started
                if not cancelled:
                    scheduler.pool.note_health(kernel, kernel.note_call(held, error),
                                               error.message if isinstance(error, AiosdError) else "")
                scheduler.release(kernel, key, held=held)
                if on_phase is not None:
                    on_phase("between")
                if on_call is not None:
                    on_call(started - queued_at, held, error, kernel.name)

    try:
        response, _ = await policy.run(attempt, deadline=deadline, on_attempt=on_attempt, model=model)
    except AiosdError as exc:
        # Every call, failovers included (a request that never got a slot still made one attempt).
        exc.attempts = max(result.attempts, getattr(exc, "attempts", 0) or 0)  # type: ignore[attr-defined]
        exc.kernels = result.kernels  # type: ignore[attr-defined]
        raise
    result.response = response
    return result
