"""One forwarded kernel call end to end: a slot from the scheduler and /query per attempt, failover, retries.

What lives here: ``forward_query``, the composition of ``Scheduler``, the pool's ``KernelClient``s and
``RetryPolicy`` the service layer calls with a ready /query body, and ``ForwardResult``. The body is
serialised once; each attempt fails over to another kernel at once and is retried by policy. What
does not: building the body or decoding ``response`` (``translate``), turning errors into HTTP answers.
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
from aiosd.kernel.pool import PoolKernel
from aiosd.kernel.retry import AttemptReport, RetryPolicy
from aiosd.kernel.scheduler import KeyState, Scheduler
from aiosd.kernel.sessions import SessionState

log = logging.getLogger("aiosd.forward")


@dataclass
class ForwardResult:
    response: dict
    attempts: int  # kernel calls made, failovers and retries included
    kernels: list[str] = field(default_factory=list)  # the kernel of each call, in order
    first_queued: float | None = None  # when the request first asked for a slot (pass as ``since`` later)


@dataclass
class _Forwarding:
    """One request's attempts: each takes a slot, calls, and fails over until a kernel answers."""

    content: bytes
    scheduler: Scheduler
    kernel_model: str
    key: KeyState
    level: int
    deadline: float
    settings: KernelSettings
    label: str
    on_call: Callable[[float, float, BaseException | None, str], object] | None
    on_phase: Callable[[str], object] | None
    clock: Callable[[], float]
    result: ForwardResult = field(default_factory=lambda: ForwardResult({}, 0))
    session: SessionState | None = None  # the conversation it belongs to (None: its key's requests without one)
    first_queued: float | None = None  # when the request first asked for a slot: its place and age

    def _phase(self, phase: str) -> None:
        if self.on_phase is not None:
            self.on_phase(phase)

    async def attempt(self, index: int) -> dict:
        """One attempt of the retry policy: calls on kernels not tried yet until one answers or the
        error is not one to fail over on."""
        tried: set[str] = set()
        while True:
            queued_at = self.clock()
            self._phase("queued")
            kernel = await self.scheduler.acquire(
                self.kernel_model, key=self.key, level=self.level, exclude=frozenset(tried),
                deadline=min(self.deadline, queued_at + self.settings.queue_timeout),
                new_request=index == 0 and not tried and self.first_queued is None,
                since=self.first_queued, session=self.session,
            )
            if self.first_queued is None:
                self.first_queued = queued_at
            tried.add(kernel.name)
            try:
                return await self._call(kernel, queued_at)
            except AiosdError as exc:
                if not fails_over(exc) or self.clock() >= self.deadline:
                    raise
                if not self.scheduler.can_fail_over(self.kernel_model, frozenset(tried)):
                    raise
                log.info("model %s: kernel %s failed (%s); failing over to another kernel at once",
                         self.label, kernel.name, exc.message)

    async def _call(self, kernel: PoolKernel, queued_at: float) -> dict:
        """One /query on ``kernel`` (its slot is held); its health, the slot and the hooks after."""
        started = self.clock()
        self._phase("calling")
        self.result.attempts += 1
        self.result.kernels.append(kernel.name)
        error: BaseException | None = None
        cancelled = True  # until the call ends: a client that left says nothing about the kernel
        try:
            timeout = max(0.001, min(self.settings.timeout, self.deadline - started))
            response = await kernel.client.query(self.content, timeout=timeout)
            cancelled = False
            return response
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            error, cancelled = exc, False
            raise
        finally:
            held = self.clock() - started
            if not cancelled:
                self.scheduler.pool.note_health(kernel, kernel.note_call(held, error),
                                                error.message if isinstance(error, AiosdError) else "")
            self.scheduler.release(kernel, self.key, held=held, session=self.session)
            self._phase("between")
            if self.on_call is not None:
                self.on_call(started - queued_at, held, error, kernel.name)


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
    session: SessionState | None = None,
    since: float | None = None,
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
    each call's queue wait, duration, error and kernel name. ``session`` (``scheduler.session(...)``)
    gives the request its session's share within its key and its session's kernel.
    each call's queue wait, duration, error and kernel name. ``since`` (a further call of a request
    already admitted, e.g. a continuation: its ``first_queued``) keeps the request's place and age.
    """
    forwarding = _Forwarding(
        content=body if isinstance(body, bytes) else _dumps(body),  # once, for every call
        scheduler=scheduler, kernel_model=kernel_model, key=key, level=level, deadline=deadline,
        settings=settings, label=model or kernel_model, on_call=on_call, on_phase=on_phase, clock=clock,
        session=session,
        first_queued=since,
    )
    result = forwarding.result
    try:
        response, _ = await policy.run(forwarding.attempt, deadline=deadline, on_attempt=on_attempt, model=model)
    except AiosdError as exc:
        # Every call, failovers included (a request that never got a slot still made one attempt).
        exc.attempts = max(result.attempts, exc.attempts)
        exc.kernels = tuple(result.kernels)
        raise
    result.response = response
    result.first_queued = forwarding.first_queued
    return result
