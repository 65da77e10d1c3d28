"""The runtime's background loops: the OpenClaw sync, the kernel canary, and kernel health (probes of
ejected kernels, model lists, readiness changes). Each runs supervised (``service.tasks``) for the
daemon's life and reads the runtime's current config on every round, so reloads apply without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiosd.config.settings import Config
from aiosd.errors import AiosdError
from aiosd.kernel.canary import run_canary
from aiosd.kernel.pool import KernelPool, PoolKernel
from aiosd.models.catalog import FAILED_REFRESH_RETRY, ModelCatalog
from aiosd.openclaw.sync import SyncResult
from aiosd.service.metrics import Metrics

log = logging.getLogger("aiosd.runtime")

# After a sync found OpenClaw writing its file (outcome "busy"), the next one comes this soon.
OPENCLAW_BUSY_RETRY = 5.0
# The health loop looks at readiness at least this often (a failed model-list refresh turns it
# without waking the loop), so a change is logged within about a second.
READINESS_RECHECK = 1.0


class Runtime(Protocol):
    """What the loops read and wake on: the runtime (``service.runtime.Runtime``) is one."""

    pool: KernelPool
    catalog: ModelCatalog
    metrics: Metrics
    clock: Callable[[], float]
    sync_wanted: asyncio.Event  # set: sync OpenClaw's file now (models or config changed)
    config_applied: asyncio.Event  # set: a reload applied (the canary's interval may have changed)
    kernels_changed: asyncio.Event  # set: a kernel ejected, a call failed, the pool changed

    @property
    def config(self) -> Config: ...

    @property
    def last_sync(self) -> SyncResult | None: ...

    async def sync_openclaw_now(self) -> SyncResult: ...

    def observe_readiness(self) -> float | None: ...


async def openclaw_loop(runtime: Runtime) -> None:
    """Sync OpenClaw's file at start, every ``openclaw.interval``, and when the models or the config change."""
    # Let the first model-list refresh finish, so the first write already lists the kernel's models.
    try:
        await asyncio.wait_for(runtime.catalog.refresh(), 5.0)
    except TimeoutError:
        pass
    while True:
        runtime.sync_wanted.clear()
        if runtime.config.openclaw.sync:
            try:
                await runtime.sync_openclaw_now()
            except Exception:  # a bug here must not stop the daemon serving
                log.exception("OpenClaw sync failed unexpectedly; trying again next interval")
        wait = runtime.config.openclaw.interval
        if runtime.last_sync is not None and runtime.last_sync.outcome == "busy":
            wait = min(wait, OPENCLAW_BUSY_RETRY)
        try:
            await asyncio.wait_for(runtime.sync_wanted.wait(), wait)
        except TimeoutError:
            pass


def _canary_due(runtime: Runtime, interval: float) -> list[PoolKernel]:
    """The kernels no real call proved working within ``interval`` (or whose last call failed)."""
    due = []
    now = runtime.clock()
    for member in runtime.pool:
        kernel = member.client
        last, failed = kernel.last_success_at, kernel.last_failure_at
        failed_since = failed is not None and (last is None or failed >= last)
        if last is not None and now - last < interval and not failed_since:
            continue  # real traffic already proved the kernel works
        due.append(member)
    return due


async def canary_loop(runtime: Runtime) -> None:
    """Send each kernel a canary /query every ``kernel.probe_interval`` it was not proved working by real traffic."""
    while True:
        interval = runtime.config.kernel.probe_interval
        runtime.config_applied.clear()
        if interval <= 0:  # off: costs nothing until a reload turns it on
            await runtime.config_applied.wait()
            continue
        try:
            await asyncio.wait_for(runtime.config_applied.wait(), interval)
            continue  # reloaded: start over with the new interval
        except TimeoutError:
            pass
        due = _canary_due(runtime, interval)
        models = runtime.catalog.models()
        # Awaited here, so at most one canary per kernel is ever in flight (a hung one holds a kernel worker).
        results = await asyncio.gather(*(run_canary(member, runtime.config.kernel, models) for member in due),
                                       return_exceptions=True)
        for member, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):  # a bug here must not end the canary for the daemon's life
                log.error("kernel canary on %s failed unexpectedly (%r); trying again next interval",
                          member.name, result)
            else:
                runtime.metrics.canaries.labels("answered" if result else "failed").inc()
                runtime.pool.note_health(member, member.health.record_probe(result))
        runtime.kernels_changed.set()  # the health loop logs a change of readiness the canary caused


async def health_loop(runtime: Runtime) -> None:
    """Probe ejected kernels (their model list) as their backoff ends, so they rejoin by themselves;
    with discovery off, also refresh each kernel's model list (routing needs it either way); and
    log each change of readiness as it happens."""
    next_list = runtime.clock()
    while True:
        runtime.kernels_changed.clear()
        expiry = runtime.observe_readiness()
        # With discovery on, the catalog lists every kernel; a pool of one routes everything to it anyway.
        listing = not runtime.config.models.discover and len(runtime.pool) > 1
        work = [wait for wait in (runtime.pool.next_probe_in(),
                                  max(0.0, next_list - runtime.clock()) if listing else None) if wait is not None]
        if not work or min(work) > 0:
            # just past the moment readiness may turn, so the answer has aged past the window
            timeout = min([*work, READINESS_RECHECK, *(() if expiry is None else (expiry + 0.001,))])
            if await _woken(runtime.kernels_changed, timeout):
                continue  # a kernel ejected, a call failed or the pool changed: look again
            if not work or min(work) > timeout:
                continue  # woken to look at readiness only
        next_list = await _probe_and_list(runtime, listing, next_list)
        await asyncio.sleep(0.05)  # a probe that failed again set a longer backoff


async def _probe_and_list(runtime: Runtime, listing: bool, next_list: float) -> float:
    """One round of the health loop's work; returns when the next model-list round is due."""
    try:
        if listing and runtime.clock() >= next_list:
            try:
                await runtime.pool.list_llms()
                next_list = runtime.clock() + runtime.config.models.refresh_interval
            except AiosdError:
                next_list = runtime.clock() + min(FAILED_REFRESH_RETRY, runtime.config.models.refresh_interval)
        if runtime.pool.next_probe_in() == 0:
            await runtime.pool.probe_ejected()
    except Exception:  # a bug here must not end the probing
        log.exception("probing the pool's kernels failed unexpectedly; trying again shortly")
    return next_list


async def _woken(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it was set. Unlike ``wait_for``
    this starts no task, so a loop that wakes often leaves the set of tasks alone."""
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        timed_out = True
        event.set()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await event.wait()
    finally:
        handle.cancel()
    return not timed_out
