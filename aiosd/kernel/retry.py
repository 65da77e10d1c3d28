"""The retry policy for kernel calls: which failures are tried again, how long to wait, when to give up.

What lives here: ``RetryPolicy`` (backoff with jitter, the kernel's Retry-After as a floor, the
per-request wait budget and deadline) and the one log line per attempt. What does not: the call
itself (``client``) and the concurrency cap (``scheduler``; ``call`` takes a slot
inside each attempt, so a request waiting between retries does not hold one).

The kernel already retries its LLM 3 times before it reports a 429 or 5xx; every retry here costs
the LLM 3 more calls. That is why the default retries only 429, and slowly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from aiosd.config.durations import format_duration
from aiosd.config.settings import RetrySettings
from aiosd.errors import AiosdError, KernelError, KernelRateLimited
from aiosd.kernel.scheduler import MAX_RETRY_AFTER, MIN_RETRY_AFTER

log = logging.getLogger("aiosd.retry")

T = TypeVar("T")

Outcome = Literal["ok", "retry", "give_up"]


def clamp_retry_after(seconds: float) -> float:
    """A Retry-After for the client, in the scheduler's bounds [1, 60] s (whole seconds)."""
    return float(min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, math.ceil(seconds))))


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What happened in one attempt; handed to ``on_attempt`` (metrics) right after it."""

    attempt: int  # 1-based
    max_attempts: int
    status: int | None  # 200 on success; the error's kernel_status (0: unreachable) otherwise
    error: BaseException | None
    outcome: Outcome
    wait: float | None  # seconds before the next attempt when outcome == "retry"
    duration: float  # seconds the attempt itself took


def status_of(error: BaseException) -> int | None:
    """The status that decides retrying: ``kernel_status`` (0 for unreachable), None otherwise."""
    return error.kernel_status if isinstance(error, KernelError) else None


def what_failed(error: BaseException) -> str:
    """An attempt's failure in a few words for a log line: "connection refused", "HTTP 500",
    "status_code 429 inside HTTP 200" (never the retry policy's bare 0 for "no answer")."""
    if isinstance(error, KernelError):
        if error.reason:
            return error.reason
        if error.kernel_status is None:
            return "no answer in time"
        if error.kernel_status == 0:
            return "no usable answer"
        return f"status {error.kernel_status}"
    if isinstance(error, AiosdError) and error.code:
        return error.code
    return type(error).__name__


class RetryPolicy:
    """Runs one request's kernel call with ``retry`` settings.

    ``sleep``, ``clock`` and ``random`` are injectable so tests assert the exact waits without
    waiting. ``clock`` must be the clock the ``deadline`` passed to ``run`` is measured on.
    """

    def __init__(
        self,
        settings: RetrySettings,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._random = random

    @property
    def max_attempts(self) -> int:
        return self.settings.max_retries + 1

    def is_retryable(self, error: BaseException) -> bool:
        status = status_of(error)
        return status is not None and status in self.settings.on_status

    def delay_for(self, attempt_index: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt_index`` (0-based).

        ``initial * multiplier**n`` capped at ``max``, spread by +-``jitter`` (never above
        ``max``), then raised to the kernel's ``retry_after`` if that is longer: the kernel's word
        wins over our cap, the budget still bounds it.
        """
        backoff = self.settings.backoff
        try:
            base = backoff.initial * backoff.multiplier ** max(0, attempt_index)
        except OverflowError:
            base = backoff.max
        base = min(base, backoff.max)
        if backoff.jitter:
            base *= 1.0 + backoff.jitter * (2.0 * self._random() - 1.0)
            base = min(max(base, 0.0), backoff.max)
        if retry_after is not None and retry_after > base:
            return retry_after
        return base

    async def run(
        self,
        call: Callable[[int], Awaitable[T]],
        *,
        deadline: float | None = None,
        on_attempt: Callable[[AttemptReport], object] | None = None,
        model: str | None = None,
    ) -> tuple[T, int]:
        """``(result, attempts)`` of ``call(attempt_index)``, retried per the settings.

        Retries a ``KernelError`` whose ``kernel_status`` is in ``on_status``, at most
        ``max_retries`` times, never waiting past ``budget`` in total or past ``deadline``
        (monotonic, on ``clock``). The error finally raised is the last one, with ``attempts``
        set (every ``AiosdError`` leaving here has it, for ``X-Aiosd-Attempts``), its message
        telling how many attempts were made, and, for 429, a ``retry_after`` for the client.
        Cancellation (client gone) cancels the wait or the call and propagates as is.
        """
        settings = self.settings
        max_attempts = self.max_attempts
        label = model or "?"
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            started = self._clock()
            try:
                result = await call(attempt - 1)
            except AiosdError as error:
                duration = self._clock() - started
                status = status_of(error)
                if not self.is_retryable(error):
                    self._give_up(error, attempt, max_attempts, None, label, duration, on_attempt, "not retried")
                    raise
                if attempt >= max_attempts:
                    next_wait = self.delay_for(attempt - 1, error.retry_after)
                    why = f"max_retries ({settings.max_retries}) reached"
                    self._give_up(error, attempt, max_attempts, next_wait, label, duration, on_attempt, why)
                    raise
                wait = self.delay_for(attempt - 1, error.retry_after)
                if waited + wait > settings.budget:
                    why = (
                        f"the next wait ({format_duration(wait)}) would exceed the retry budget "
                        f"({format_duration(settings.budget)}, {format_duration(waited)} used)"
                    )
                    self._give_up(error, attempt, max_attempts, wait, label, duration, on_attempt, why)
                    raise
                if deadline is not None and self._clock() + wait >= deadline:
                    why = f"the next wait ({format_duration(wait)}) would pass the request's deadline"
                    self._give_up(error, attempt, max_attempts, wait, label, duration, on_attempt, why)
                    raise
                log.info(
                    "model %s: attempt %d/%d failed (%s); retrying in %s",
                    label, attempt, max_attempts, what_failed(error), format_duration(wait),
                )
                if on_attempt is not None:
                    on_attempt(AttemptReport(attempt, max_attempts, status, error, "retry", wait, duration))
                # asyncio.sleep: a client disconnect cancels this wait and the request with it.
                await self._sleep(wait)
                waited += wait
                continue
            except asyncio.CancelledError:
                log.info("model %s: attempt %d/%d cancelled (client gone)", label, attempt, max_attempts)
                raise
            duration = self._clock() - started
            if attempt > 1:
                log.info("model %s: attempt %d/%d succeeded", label, attempt, max_attempts)
            else:
                log.debug("model %s: attempt 1/%d succeeded", label, max_attempts)
            if on_attempt is not None:
                on_attempt(AttemptReport(attempt, max_attempts, 200, None, "ok", None, duration))
            return result, attempt

    def _give_up(
        self,
        error: AiosdError,
        attempt: int,
        max_attempts: int,
        next_wait: float | None,
        label: str,
        duration: float,
        on_attempt: Callable[[AttemptReport], object] | None,
        why: str,
    ) -> None:
        """Finish ``error`` for the client: attempt count, message, Retry-After for 429."""
        status = status_of(error)
        error.attempts = attempt  # read by the HTTP layer (X-Aiosd-Attempts)
        if attempt > 1 or (status is not None and status in self.settings.on_status):
            suffix = f" (gave up after {attempt} attempt{'s' if attempt != 1 else ''}: {why})"
            error.message += suffix
            error.args = (error.message, *error.args[1:])
        if isinstance(error, KernelRateLimited) and error.retry_after is None:
            # Tell the client when trying again makes sense: what we would have waited ourselves.
            wait = next_wait if next_wait is not None else self.delay_for(attempt - 1)
            error.retry_after = float(max(1, math.ceil(wait)))
        if error.retry_after is not None:
            # The kernel's Retry-After (or a long backoff) reaches the client in the scheduler's
            # own bounds: a kernel saying 10^20 s must not tell OpenClaw to give up for ever.
            error.retry_after = clamp_retry_after(error.retry_after)
        # An error that is never retried is the HTTP layer's to report; giving up on one is news.
        level = logging.INFO if why == "not retried" and attempt == 1 else logging.WARNING
        log.log(
            level,
            "model %s: attempt %d/%d failed (%s); giving up (%s)",
            label, attempt, max_attempts, what_failed(error), why,
        )
        if on_attempt is not None:
            on_attempt(AttemptReport(attempt, max_attempts, status, error, "give_up", None, duration))
