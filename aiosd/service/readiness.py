"""Readiness: a pure read of whether the kernel pool can serve, and the watch that logs its changes.

``pool_readiness`` only reads (it runs on every /readyz, Prometheus scrape and status poll);
``ReadinessWatch.observe`` is what logs a change, called by the runtime's health loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiosd.kernel.pool import PoolKernel
from aiosd.models.catalog import RefreshResult

log = logging.getLogger("aiosd.runtime")

# What every time reading here comes from: seconds on a clock that never goes back
# (``time.monotonic`` in the daemon, a hand-moved clock in tests).
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether aiosd can serve now, and why (or why not) in words for /readyz and the log."""

    ready: bool
    reason: str


OK = Readiness(True, "ok")


def kernel_readiness(member: PoolKernel, window: float, now: float) -> Readiness:
    """One kernel: ready while it gave a meaningful answer within ``window`` seconds, nothing
    failed since and it is not ejected. Only answers count (forwarded calls, model-list refreshes,
    the canary), never the kernel's /status, which says ok with a dead scheduler."""
    kernel = member.client
    url = member.settings.shown_url
    last, failed_at = kernel.last_success_at, kernel.last_failure_at
    if last is None:
        tried = "" if failed_at is None else f" (last try {now - failed_at:.1f}s ago: {kernel.last_failure})"
        return Readiness(False, f"the kernel at {url} has not answered yet{tried}")
    if failed_at is not None and failed_at >= last:
        return Readiness(False, f"the kernel at {url} failed {now - failed_at:.1f}s ago: {kernel.last_failure} "
                                f"(last answer {now - last:.1f}s ago)")
    view = member.health.view()
    if view.state != "healthy":
        cause = f": {member.ejection_cause}" if member.ejection_cause else ""
        return Readiness(False, f"the kernel at {url} is ejected from the pool ({view.state}) after failing "
                                f"repeatedly{cause}")
    age = now - last
    if age > window:
        waiting = member.canary.waiting_for(now)
        canary = "" if waiting is None else f"; a canary /query has been waiting {waiting:.1f}s"
        return Readiness(False, f"the kernel at {url} has not answered for {age:.1f}s "
                                f"(ready_window {window:g}s){canary}")
    return OK


def model_list_readiness(refresh: RefreshResult | None, members: Iterable[PoolKernel], now: float) -> Readiness:
    """Not ready while the latest model-list refresh failed after the kernels' last answer: an
    answer aiosd cannot read (deeply nested JSON) does not count as the kernel answering."""
    answered = [m.client.last_success_at for m in members if m.client.last_success_at is not None]
    last = max(answered, default=None)  # the pool lists as a whole: any kernel's answer counts
    if refresh is None or refresh.ok or (last is not None and last > refresh.at_monotonic):
        return OK
    return Readiness(False, f"the kernel's model list could not be read {now - refresh.at_monotonic:.1f}s ago: "
                            f"{refresh.message}")


def pool_readiness(members: list[PoolKernel], refresh: RefreshResult | None, window: float, now: float) -> Readiness:
    """The pool: ready while at least one kernel is (``kernel_readiness``) and its model list reads."""
    states = [(member, kernel_readiness(member, window, now)) for member in members]
    ready_ones = [member for member, state in states if state.ready]
    if len(states) == 1:
        result = states[0][1]
    elif ready_ones:
        result = OK if len(ready_ones) == len(states) else Readiness(True, (
            f"ok: {len(ready_ones)} of {len(states)} kernels ready; "
            + "; ".join(f"{m.name}: {state.reason}" for m, state in states if not state.ready)))
    else:
        result = Readiness(False, f"none of the {len(states)} kernels is ready: "
                           + "; ".join(f"{m.name}: {state.reason}" for m, state in states))
    if result.ready:
        lists = model_list_readiness(refresh, members, now)
        if not lists.ready:
            return lists
    return result


@dataclass(frozen=True, slots=True)
class Capacity:
    """The pool's slots usable now, the slots out (ejected kernels') and why each kernel is out."""

    usable: int
    out: int
    why: tuple[str, ...]


def pool_capacity(members: Iterable[PoolKernel]) -> Capacity:
    """Slots of the kernels not ejected. While every kernel is ejected, requests still go to them
    (the scheduler has nothing better), so then all their slots count, and ``why`` says so."""
    present = [m for m in members if not m.removed]
    ejected = [m for m in present if m.health.view().state != "healthy"]
    why = tuple(f"{m.name} ({m.slots} slot{'s' if m.slots != 1 else ''}): {m.health.view().state}"
                + (f", {m.ejection_cause}" if m.ejection_cause else "") for m in ejected)
    if len(ejected) == len(present):
        return Capacity(sum(m.slots for m in present), 0, why)
    out = sum(m.slots for m in ejected)
    return Capacity(sum(m.slots for m in present) - out, out, why)


def next_expiry(members: Iterable[PoolKernel], window: float, now: float) -> float | None:
    """Seconds until the first kernel's last answer grows older than ``window`` (when readiness may
    turn by time alone), or None when no answer is still inside it."""
    ends = [m.client.last_success_at + window - now for m in members if m.client.last_success_at is not None]
    future = [end for end in ends if end >= 0]
    return min(future, default=None)


class ReadinessWatch:
    """Logs each change of readiness once: the first ready, every turn after it. Called by the
    loop that watches the kernels, never by a reader of readiness."""

    def __init__(self) -> None:
        self.last: Readiness | None = None

    def observe(self, current: Readiness, *, single_kernel: bool, window: float) -> bool:
        """Log ``current`` if readiness turned since the last call; True when it did."""
        was = self.last
        self.last = current
        if (was is None and not current.ready) or (was is not None and was.ready == current.ready):
            return False
        if current.ready:
            why = f"it answered within the last {window:g}s" if single_kernel else current.reason
            log.info("kernel ready: %s", why)
        else:
            log.warning("kernel not ready: %s", current.reason)
        return True
