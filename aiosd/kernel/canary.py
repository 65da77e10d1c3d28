"""The optional canary /query that proves the kernel's scheduler works when no real traffic does."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiosd.config.settings import KernelSettings, ModelSpec
from aiosd.errors import AiosdError
from aiosd.kernel.client import KernelClient

log = logging.getLogger("aiosd.canary")

# The canary's own deadline: long enough for the kernel's one-second batch cycle and a slow LLM,
# short enough that a hung canary (which holds one kernel worker) is given up on.
CANARY_TIMEOUT = 60.0
CANARY_PROMPT = "Reply with the single word: ok"


@dataclass
class CanaryState:
    """What the canary did last, for readiness reasons and /status."""

    sent: int = 0
    in_flight_since: float | None = None  # monotonic
    last_at: float | None = None  # wall clock
    last_answered: bool | None = None
    last_message: str | None = None

    def waiting_for(self, now: float) -> float | None:
        """Seconds the canary in flight has waited, or None when none is in flight."""
        return None if self.in_flight_since is None else now - self.in_flight_since

    def as_dict(self, probe_interval: float) -> dict[str, Any]:
        waiting = self.waiting_for(time.monotonic())
        return {
            "enabled": probe_interval > 0,
            "interval_seconds": probe_interval,
            "sent": self.sent,
            "in_flight_seconds": None if waiting is None else round(waiting, 3),
            "last": None if self.last_at is None else {
                "at": self.last_at, "answered": self.last_answered, "message": self.last_message,
            },
        }


class CanaryTarget(Protocol):
    """What the canary needs of a pool kernel (``PoolKernel``; the pool imports this module)."""

    @property
    def name(self) -> str: ...
    @property
    def client(self) -> KernelClient: ...
    @property
    def canary(self) -> CanaryState: ...
    @property
    def models(self) -> frozenset[str] | None: ...


def canary_body(settings: KernelSettings, models: Sequence[ModelSpec]) -> dict[str, Any]:
    """The tiny /query the canary sends: the probe model (or the first exposed one), no tools."""
    kernel_model = settings.probe_model or (models[0].kernel_model if models else None)
    query_data: dict[str, Any] = {
        "messages": [{"role": "user", "content": CANARY_PROMPT}],
        "tools": [],
        "action_type": "chat",
        "message_return_type": "text",
    }
    if kernel_model:  # without llms the kernel uses its first model
        query_data["llms"] = [{"name": kernel_model}]
    return {"agent_name": settings.agent_name, "query_type": "llm", "query_data": query_data}


async def run_canary(member: CanaryTarget, settings: KernelSettings, models: Sequence[ModelSpec]) -> bool:
    """Ask one pool kernel (``member``) one tiny question about one of ``models`` (the exposed ones);
    True when its scheduler answered (even with an error inside HTTP 200: a rate-limited LLM still
    proves the kernel schedules). The caller awaits it, so at most one canary per kernel is in
    flight, and counts the result."""
    kernel = member.client
    state: CanaryState = member.canary
    if member.models is not None and not settings.probe_model:
        served = member.models
        models = [m for m in models if m.kernel_model in served] or models  # one this kernel serves
    body = canary_body(settings, models)
    model = body["query_data"].get("llms", [{"name": "the kernel's first model"}])[0]["name"]
    answered_before = kernel.last_query_answer_at
    state.sent += 1
    state.in_flight_since = time.monotonic()
    try:
        await kernel.query(body, timeout=min(settings.timeout, CANARY_TIMEOUT))
    except AiosdError as exc:
        # The client sets last_query_answer_at only when the scheduler answered; an error inside an
        # HTTP 200 does, a hang, refusal or garbage does not.
        answered = kernel.last_query_answer_at != answered_before
        message = exc.message
        log.log(logging.INFO if answered else logging.WARNING, "kernel canary (%s on %s): %s%s",
                model, member.name, message,
                " (the scheduler answered: counts as ready)" if answered else "")
    else:
        answered, message = True, "answered"
        log.debug("kernel canary (%s on %s) answered", model, member.name)
    finally:
        state.in_flight_since = None
    state.last_at = time.time()
    state.last_answered = answered
    state.last_message = message
    return answered
