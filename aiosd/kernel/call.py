"""One forwarded kernel call end to end: serialise once, then per attempt queue for a slot and call /query, retried by policy.

What lives here: ``forward_query``, the composition of ``AdmissionQueue``, ``KernelClient`` and
``RetryPolicy`` the HTTP layer calls with a ready /query body. What does not: building the body
or decoding ``response`` (``translate``), turning errors into HTTP answers (the app).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiosd.config.settings import KernelSettings
from aiosd.kernel.admission import AdmissionQueue
from aiosd.kernel.client import KernelClient, _dumps
from aiosd.kernel.retry import AttemptReport, RetryPolicy


async def forward_query(
    body: dict | bytes,
    *,
    kernel: KernelClient,
    queue: AdmissionQueue,
    policy: RetryPolicy,
    deadline: float,
    settings: KernelSettings | None = None,
    model: str | None = None,
    on_attempt: Callable[[AttemptReport], object] | None = None,
    on_call: Callable[[float, float, BaseException | None], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[dict, int]:
    """``(response object, attempts)`` for one /query body; raises an ``AiosdError`` with ``attempts``.

    ``deadline`` (monotonic) bounds the whole request: queueing, every attempt and the waits
    between them. Each attempt waits for a kernel slot at most ``kernel.queue_timeout`` (and not
    past the deadline), then calls the kernel for at most ``kernel.timeout`` (and not past the
    deadline). The slot is given back between attempts, so a request sleeping on a 429 does not
    hold one of the kernel's few slots. ``settings`` are the request's own kernel settings (its
    config generation); by default the client's current ones.
    """
    content = body if isinstance(body, bytes) else _dumps(body)  # once, for every attempt

    async def attempt(_index: int) -> dict:
        limits = settings or kernel.settings
        queued_at = clock()
        async with queue.slot(deadline=min(deadline, queued_at + limits.queue_timeout)):
            started = clock()
            error = None
            try:
                return await kernel.query(content, timeout=min(limits.timeout, deadline - started))
            except BaseException as exc:
                error = exc
                raise
            finally:
                if on_call is not None:
                    on_call(started - queued_at, clock() - started, error)

    return await policy.run(attempt, deadline=deadline, on_attempt=on_attempt, model=model)
