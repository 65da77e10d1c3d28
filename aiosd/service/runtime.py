"""The daemon's live state: the parts built from the config, the loops that keep them current, its status.

The parts are named modules of their own: generations, readiness, the OpenClaw sync runner, the status model.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec

from aiosd import __version__
from aiosd.config.settings import Config
from aiosd.config.state_dir import resolve_state_dir
from aiosd.kernel.canary import CanaryState
from aiosd.kernel.client import KernelClient
from aiosd.kernel.pool import KernelPool
from aiosd.kernel.scheduler import Scheduler
from aiosd.models.catalog import ModelCatalog
from aiosd.models.memory import ModelMemory
from aiosd.openclaw import sync as openclaw_sync
from aiosd.openclaw.file import resolve_openclaw_path
from aiosd.openclaw.sync import SyncResult, openclaw_api_key, provider_timeout_seconds
from aiosd.service import loops
from aiosd.service import status_model as sm
from aiosd.service.generations import ConfigGenerations, Generation, ReloadOutcome
from aiosd.service.history import RequestHistory
from aiosd.service.logs import LogRing
from aiosd.service.metrics import Metrics
from aiosd.service.openclaw_runner import OPENCLAW_SYNC_TIMEOUT, SyncRunner
from aiosd.service.readiness import (
    Clock,
    Readiness,
    ReadinessWatch,
    kernel_readiness,
    next_expiry,
    pool_capacity,
    pool_readiness,
)
from aiosd.service.tasks import TaskSupervisor

__all__ = ["OPENCLAW_SYNC_TIMEOUT", "Generation", "Runtime"]

log = logging.getLogger("aiosd.runtime")



class Runtime:
    """The daemon's parts, built once and changed by ``apply`` (a reload); ``start``/``close`` run the
    background loops. Readers (the API, the page, systemd's status line) only read from it."""

    def __init__(self, config: Config, *, notifier_status: Callable[[], object] = lambda: None,
                 kernel_transport: httpx.AsyncBaseTransport | None = None, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.metrics = Metrics()
        self.started_monotonic = clock()
        self.started_wall = time.time()
        self.generations = ConfigGenerations(config)
        # The kernels (one client each for the daemon's life; reloads add, change and remove them)
        # and the one queue in front of them.
        self.pool = KernelPool(config.pool, config.health, transport=kernel_transport, clock=clock)
        self.scheduler = Scheduler(self.pool, config.scheduler)
        # The catalog lists every kernel at once through the pool; each kernel keeps its own list.
        self.catalog = ModelCatalog(config.models, self.pool, memory=ModelMemory(self._state_dir(config)), clock=clock)
        self.openclaw = SyncRunner(timeout=OPENCLAW_SYNC_TIMEOUT)  # read now: tests shorten it
        self.history = RequestHistory()
        self.log_ring = LogRing()
        self.retry_times: collections.deque[float] = collections.deque(maxlen=10_000)
        self._notifier_status = notifier_status
        self.tasks = TaskSupervisor(on_restart=lambda name: self.metrics.task_restarts.labels(name).inc())
        self.readiness_watch = ReadinessWatch()
        self.sync_wanted = asyncio.Event()
        self.config_applied = asyncio.Event()  # wakes the canary loop when probe_interval changes
        self.kernels_changed = asyncio.Event()  # wakes the health loop: a kernel ejected, a call failed
        self._watch_metrics()

    def _watch_metrics(self) -> None:
        self.metrics.models_exposed.set_function(lambda: len(self.catalog.models()))
        self.metrics.in_flight.set_function(lambda: self.scheduler.in_flight)
        self.metrics.queued.set_function(lambda: self.scheduler.queued)
        self.metrics.kernel_ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)
        self.metrics.watch_pool(self.pool, self.scheduler)
        dispatch = self.scheduler.dispatch

        def on_pool_change() -> None:
            dispatch()
            self.kernels_changed.set()

        self.pool.on_change = on_pool_change

    # --- shorthands (the generations' and the sync's state, under the names the API uses) ----------

    @property
    def current(self) -> Generation:
        return self.generations.current

    @property
    def config(self) -> Config:
        return self.generations.current.config

    @property
    def generation(self) -> int:
        return self.generations.current.number

    @property
    def bound_host(self) -> str:
        return self.generations.bound_host

    @property
    def bound_port(self) -> int:
        return self.generations.bound_port

    @property
    def pending_listen(self) -> str | None:
        return self.generations.pending_listen

    @property
    def last_reload(self) -> ReloadOutcome | None:
        return self.generations.last_reload

    @last_reload.setter
    def last_reload(self, outcome: ReloadOutcome | None) -> None:
        self.generations.last_reload = outcome

    @property
    def last_refused_reload(self) -> ReloadOutcome | None:
        return self.generations.last_refused_reload

    @property
    def config_applied_at(self) -> float:
        return self.generations.applied_at

    @property
    def last_sync(self) -> SyncResult | None:
        return self.openclaw.last

    @property
    def syncs_done(self) -> int:
        return self.openclaw.done

    @property
    def kernel(self) -> KernelClient:
        """The first kernel's client (a pool of one: the kernel)."""
        return self.pool.first().client

    @property
    def canary(self) -> CanaryState:
        """The first kernel's canary state (each kernel has its own)."""
        return self.pool.first().canary

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger("aiosd").addHandler(self.log_ring)
        self.catalog.add_listener(lambda _models: self._models_changed())
        # Supervised: a loop that dies is logged, counted and restarted (names: metrics.BACKGROUND_TASKS).
        self.tasks.start("model-refresh", self.catalog.run)
        self.tasks.start("openclaw-sync", functools.partial(loops.openclaw_loop, self))
        self.tasks.start("kernel-canary", functools.partial(loops.canary_loop, self))
        self.tasks.start("kernel-health", functools.partial(loops.health_loop, self))

    async def close(self) -> None:
        await self.tasks.close()
        await self.pool.close()
        logging.getLogger("aiosd").removeHandler(self.log_ring)

    async def apply(self, config: Config) -> list[str]:
        """Swap in a new config; returns notes for the log (what changed, what needs a restart)."""
        old = self.config
        # Kernels join, change (calls in flight finish on their old connections) or leave (calls in
        # flight there finish, nothing new goes there); waiting requests move to whatever is free.
        for note in self.pool.apply(config.pool, config.health):
            log.info("%s", note)
        generation, notes = self.generations.next(config)
        config = generation.config
        self.scheduler.apply(config.scheduler)
        if self._state_dir(config) != self._state_dir(old):
            self.catalog.set_memory(ModelMemory(self._state_dir(config)))
        self.catalog.apply_settings(config.models)
        self.record_reload(ok=True)
        self.sync_wanted.set()
        self.config_applied.set()
        asyncio.get_running_loop().create_task(self.catalog.refresh())
        return notes

    @staticmethod
    def _state_dir(config: Config) -> Path:
        base = config.source_path.parent if config.source_path else None
        return resolve_state_dir(config.state_dir, base=base)

    def record_reload(self, *, ok: bool) -> None:
        self.metrics.reloads.labels("ok" if ok else "refused").inc()
        self.generations.record_reload(ok=ok)
        self._notifier_status()

    def _models_changed(self) -> None:
        self.sync_wanted.set()
        self._notifier_status()

    def kernel_call_done(self, failed: bool) -> None:
        """A forwarded call finished: wake the health loop when readiness may have turned (cheap
        when it cannot: an answer while ready keeps it ready)."""
        last = self.readiness_watch.last
        if failed or last is None or not last.ready:
            self.kernels_changed.set()

    # --- OpenClaw's config file ---------------------------------------------------------------

    async def sync_openclaw_now(self) -> SyncResult:
        config = self.config
        result = await self.openclaw.run(functools.partial(
            openclaw_sync.sync_openclaw,  # looked up at each sync: tests stand in a stuck one
            config.openclaw,
            list(self.catalog.models()),
            base_url=config.own_base_url,
            api_key=openclaw_api_key(config),
            timeout_seconds=provider_timeout_seconds(config),
            previous=self.openclaw.last,
        ), resolve_openclaw_path(config.openclaw))
        self.metrics.syncs.labels(result.outcome).inc()
        self._notifier_status()
        return result

    async def wait_for_sync(self, after: int) -> None:
        """Return once more than ``after`` OpenClaw syncs have finished (for tests and the CLI)."""
        await self.openclaw.wait_for(after)

    def openclaw_path(self) -> str | None:
        """OpenClaw's file as the last sync wrote it, else where it would be; None when it cannot be worked out."""
        sync = self.openclaw.last
        if sync is not None and sync.path is not None:
            return str(sync.path)
        try:
            return str(resolve_openclaw_path(self.config.openclaw))
        except Exception:  # a path it cannot work out is shown as unknown; the sync itself says why
            return None

    # --- readiness ----------------------------------------------------------------------------

    def readiness_now(self) -> Readiness:
        """Whether the pool can serve now (``readiness.pool_readiness``). A pure read: logging a
        change is the health loop's job."""
        return pool_readiness(list(self.pool), self.catalog.last_refresh, self.config.kernel.ready_window, self.clock())

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``, as /readyz answers."""
        state = self.readiness_now()
        return state.ready, state.reason

    def observe_readiness(self) -> float | None:
        """Log a change of readiness; returns seconds until it may turn by time alone (None: not by time)."""
        self.readiness_watch.observe(self.readiness_now(), single_kernel=len(self.pool) == 1,
                                     window=self.config.kernel.ready_window)
        return next_expiry(self.pool, self.config.kernel.ready_window, self.clock())

    # --- reporting ----------------------------------------------------------------------------

    def retries_recent(self, window: float = 300.0) -> int:
        cutoff = self.clock() - window
        return sum(1 for t in self.retry_times if t >= cutoff)

    def status_line(self) -> str:
        """The one-line STATUS= systemd shows in ``systemctl status``."""
        parts = [f"gen {self.generation}", f"{len(self.catalog.models())} models"]
        ready = self.readiness_now().ready
        if len(self.pool) == 1:
            parts.append("kernel ok" if ready else "kernel not ready")
        else:
            healthy = sum(1 for member in self.pool if not member.health.ejected)
            parts.append(f"{healthy}/{len(self.pool)} kernels healthy" + ("" if ready else ", none ready"))
        if self.scheduler.in_flight or self.scheduler.queued:
            parts.append(f"{self.scheduler.in_flight} in flight, {self.scheduler.queued} queued")
        reload = self.last_reload
        if reload is not None and not reload.ok:
            first = reload.problems[0] if reload.problems else "invalid"
            parts.append(f"last reload REFUSED ({len(reload.problems)} problem(s): {first}); serving last good config")
        elif reload is not None and reload.reason != "start":
            parts.append("last reload ok")
        if self.last_sync is not None:
            parts.append(f"openclaw sync {self.last_sync.outcome}")
        return "; ".join(parts)

    def status_model(self) -> sm.Status:
        """The one status model (``status_model.Status``) that /status, ``aiosd status`` and the page render."""
        catalog = self.catalog
        sync = self.last_sync
        return sm.Status(
            version=__version__,
            uptime_seconds=round(self.clock() - self.started_monotonic, 3),
            started_at=self.started_wall,
            config=self._config_status(),
            models=[sm.ModelStatus(id=m.id, kernel_model=m.kernel_model, source=m.source, tools=m.tools,
                                   unconfirmed=m.id in catalog.unconfirmed()) for m in catalog.models()],
            unavailable=[sm.UnavailableStatus(id=e.spec.id, kernel_model=e.spec.kernel_model, reason=e.reason)
                         for e in catalog.unavailable()],
            model_refresh=_convert(catalog.last_refresh_status(), sm.ModelRefreshStatus),
            remembered_models=_convert(catalog.memory_status(), sm.RememberedModels),
            kernel=self._first_kernel_status(),
            calls=self._calls_status(),
            openclaw_sync=None if sync is None else sm.SyncStatus(
                outcome=sync.outcome, path=str(sync.path) if sync.path else None, message=sync.message, at=sync.at),
            background_tasks={name: sm.TaskStatus(**task) for name, task in self.tasks.status().items()},
            kernels=self.kernels_status(),
            classes=[msgspec.convert(item, sm.ClassStatus) for item in self.scheduler.classes_status()],
            sessions=msgspec.convert(self.scheduler.sessions_status(), sm.SessionsStatus),
        )

    def status(self) -> dict[str, object]:
        """/status's JSON body (``status_model()`` as plain data)."""
        return self.status_model().to_builtins()

    def _calls_status(self) -> sm.CallsStatus:
        capacity = pool_capacity(self.pool)
        return sm.CallsStatus(in_flight=self.scheduler.in_flight, queued=self.scheduler.queued,
                              max_concurrency=capacity.usable, retries_last_5m=self.retries_recent(),
                              slots_out=capacity.out, out=list(capacity.why))

    def _config_status(self) -> sm.ConfigStatus:
        config, reload = self.config, self.last_reload
        return sm.ConfigStatus(
            path=str(config.source_path) if config.source_path else None,
            generation=self.generation,
            listen=config.listen,
            listen_pending=self.pending_listen,
            last_reload=None if reload is None else sm.LastReload(
                ok=reload.ok, at=reload.at, reason=reload.reason, problems=list(reload.problems),
                notes=list(reload.notes)),
        )

    def _first_kernel_status(self) -> sm.FirstKernelStatus:
        readiness = self.readiness_now()
        first = self.pool.first()
        kernel = first.client
        now = self.clock()
        return sm.FirstKernelStatus(
            url=first.settings.shown_url,
            ready=readiness.ready,
            reason=readiness.reason,
            last_answer_seconds_ago=None if kernel.last_success_at is None else round(now - kernel.last_success_at, 3),
            recent_latency_seconds=_convert(kernel.recent_latency(), sm.LatencyStatus),
            last_failure=None if kernel.last_failure_at is None else sm.FailureStatus(
                seconds_ago=round(now - kernel.last_failure_at, 3), message=kernel.last_failure),
            canary=_convert(first.canary.as_dict(self.config.kernel.probe_interval), sm.CanaryStatus),
        )

    def kernels_status(self) -> list[sm.PoolKernelStatus]:
        """Every kernel of the pool (``PoolKernel.status()``) with its readiness, in config order."""
        window, now = self.config.kernel.ready_window, self.clock()
        kernels = []
        for member in self.pool:
            readiness = kernel_readiness(member, window, now)
            item = {**member.status(), "ready": readiness.ready, "reason": readiness.reason}
            kernels.append(msgspec.convert(item, sm.PoolKernelStatus))
        return kernels



T = TypeVar("T")


def _convert(data: object, kind: type[T]) -> T | None:
    """Another part's status dict (or None) as one of the status model's structs."""
    return None if data is None else msgspec.convert(data, kind)
