"""The daemon's live state: the current config generation and the long-lived parts built from it."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import threading
import time
from dataclasses import dataclass

from aiosd import __version__
from aiosd.config.settings import Config
from aiosd.kernel.canary import CanaryState
from aiosd.kernel.client import KernelClient
from aiosd.config.state_dir import resolve_state_dir
from aiosd.models.catalog import ModelCatalog
from aiosd.models.memory import ModelMemory
from aiosd.kernel.pool import KernelPool, PoolKernel
from aiosd.kernel.retry import RetryPolicy
from aiosd.kernel.scheduler import Scheduler
from aiosd.service.history import RequestHistory
from aiosd.service.logs import LogRing
from aiosd.service.metrics import Metrics
from aiosd.service.tasks import TaskSupervisor

log = logging.getLogger("aiosd.runtime")

# The longest one OpenClaw sync may take (it waits up to a few seconds for OpenClaw's lock; the
# file I/O itself takes milliseconds) before the daemon stops waiting for its thread.
OPENCLAW_SYNC_TIMEOUT = 30.0
# After a sync found OpenClaw writing its file (outcome "busy"), the next one comes this soon.
OPENCLAW_BUSY_RETRY = 5.0


@dataclass(frozen=True, slots=True)
class Generation:
    """What one request runs on from start to end, even if the config is reloaded meanwhile."""

    number: int
    config: Config
    retry: RetryPolicy


class Runtime:
    def __init__(self, config: Config, *, notifier_status=lambda: None, kernel_transport=None) -> None:
        self.metrics = Metrics()
        self.started_monotonic = time.monotonic()
        self.started_wall = time.time()
        # The HTTP server binds once, at start; a reload cannot move it (changing listen needs a restart).
        self.bound_host, self.bound_port = config.listen_host, config.listen_port
        self.pending_listen: str | None = None  # a listen from a reload, applied at the next restart
        # The kernels (one client each for the daemon's life; reloads add, change and remove them)
        # and the one queue in front of them.
        self.pool = KernelPool(config.pool, config.health, transport=kernel_transport)
        self.scheduler = Scheduler(self.pool, config.scheduler)
        self.current = Generation(1, config, RetryPolicy(config.retry))
        # The catalog lists every kernel at once through the pool; each kernel keeps its own list.
        self.catalog = ModelCatalog(config.models, self.pool, memory=ModelMemory(self._state_dir(config)))
        self.last_reload = None  # set by the daemon: a ReloadOutcome
        self.last_sync = None  # an openclaw_sync.SyncResult
        # For the status page: the config's last apply and last refusal (last_reload holds only the newest).
        self.config_applied_at = self.started_wall
        self.last_refused_reload = None
        self.history = RequestHistory()
        self.log_ring = LogRing()
        self.retry_times: collections.deque[float] = collections.deque(maxlen=10_000)
        self._notifier_status = notifier_status
        self.tasks = TaskSupervisor(on_restart=lambda name: self.metrics.task_restarts.labels(name).inc())
        self._sync_wanted = asyncio.Event()
        self.syncs_done = 0
        self._sync_finished = asyncio.Condition()
        self.sync_timeout = OPENCLAW_SYNC_TIMEOUT
        self._stuck_sync: tuple[threading.Thread, float] | None = None
        self._config_applied = asyncio.Event()  # wakes the canary loop when probe_interval changes
        self._was_ready: bool | None = None  # for logging readiness changes once each
        self._pool_changed = asyncio.Event()  # wakes the health loop when a kernel is ejected
        self.metrics.models_exposed.set_function(lambda: len(self.catalog.models()))
        self.metrics.in_flight.set_function(lambda: self.scheduler.in_flight)
        self.metrics.queued.set_function(lambda: self.scheduler.queued)
        self.metrics.kernel_ready.set_function(lambda: 1.0 if self.readiness()[0] else 0.0)
        self.metrics.watch_pool(self.pool, self.scheduler)
        dispatch = self.scheduler.dispatch

        def on_pool_change() -> None:
            dispatch()
            self._pool_changed.set()

        self.pool.on_change = on_pool_change

    @property
    def kernel(self) -> KernelClient:
        """The first kernel's client (a pool of one: the kernel)."""
        return self.pool.first().client

    @property
    def canary(self) -> CanaryState:
        """The first kernel's canary state (each kernel has its own)."""
        return self.pool.first().canary

    # --- shorthands -------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.current.config

    @property
    def generation(self) -> int:
        return self.current.number

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger("aiosd").addHandler(self.log_ring)
        self.catalog.add_listener(lambda _models: self._models_changed())
        # Supervised: a loop that dies is logged, counted and restarted (names: metrics.BACKGROUND_TASKS).
        self.tasks.start("model-refresh", self.catalog.run)
        self.tasks.start("openclaw-sync", self._openclaw_loop)
        self.tasks.start("kernel-canary", self._canary_loop)
        self.tasks.start("kernel-health", self._health_loop)

    async def close(self) -> None:
        await self.tasks.close()
        await self.pool.close()
        logging.getLogger("aiosd").removeHandler(self.log_ring)

    async def apply(self, config: Config) -> list[str]:
        """Swap in a new config; returns notes for the log (what changed, what needs a restart)."""
        old = self.current.config
        notes = []
        if (config.listen_host, config.listen_port) != (self.bound_host, self.bound_port):
            # Until a restart everything that says where aiosd listens (OpenClaw's baseUrl, /status)
            # names the socket actually bound, not the file's new address nobody listens on yet.
            self.pending_listen = config.listen
            config = dataclasses.replace(config, listen_host=self.bound_host, listen_port=self.bound_port)
            notes.append(f"listen changed to {self.pending_listen} but needs a restart (still on {config.listen})")
        else:
            self.pending_listen = None
        # Kernels join, change (calls in flight finish on their old connections) or leave (calls in
        # flight there finish, nothing new goes there); waiting requests move to whatever is free.
        for note in self.pool.apply(config.pool, config.health):
            log.info("%s", note)
        self.current = Generation(self.current.number + 1, config, RetryPolicy(config.retry))
        self.scheduler.apply(config.scheduler)
        self._apply_state_dir(old, config)
        self.catalog.apply_settings(config.models)
        self.record_reload(ok=True)
        self._sync_wanted.set()
        self._config_applied.set()
        asyncio.get_running_loop().create_task(self.catalog.refresh())
        return notes

    @staticmethod
    def _state_dir(config: Config):
        base = config.source_path.parent if config.source_path else None
        return resolve_state_dir(config.state_dir, base=base)

    def _apply_state_dir(self, old: Config, new: Config) -> None:
        if self._state_dir(new) != self._state_dir(old):
            self.catalog.set_memory(ModelMemory(self._state_dir(new)))

    def record_reload(self, *, ok: bool) -> None:
        self.metrics.reloads.labels("ok" if ok else "refused").inc()
        if ok:
            self.config_applied_at = time.time()
        else:
            self.last_refused_reload = self.last_reload
        self._notifier_status()

    def _models_changed(self) -> None:
        self._sync_wanted.set()
        self._notifier_status()

    # --- OpenClaw's config file ---------------------------------------------------------------

    async def sync_openclaw_now(self):
        from aiosd.openclaw.sync import openclaw_api_key, provider_timeout_seconds, sync_openclaw

        config = self.config
        result = await self._sync_in_own_thread(functools.partial(
            sync_openclaw,
            config.openclaw,
            list(self.catalog.models()),
            base_url=config.own_base_url,
            api_key=openclaw_api_key(config),
            timeout_seconds=provider_timeout_seconds(config),
            previous=self.last_sync,
        ))
        self.last_sync = result
        self.metrics.syncs.labels(result.outcome).inc()
        self._notifier_status()
        async with self._sync_finished:
            self.syncs_done += 1
            self._sync_finished.notify_all()
        return result

    async def _sync_in_own_thread(self, sync):
        """Run one blocking sync in a daemon thread of its own, waiting at most ``sync_timeout``.

        Not ``asyncio.to_thread``: a thread stuck in the file system (a hung NFS or FUSE mount)
        would hold up the default executor's shutdown, and so the daemon's exit. A stuck thread is
        abandoned, and no second one is started while it lives."""
        from aiosd.openclaw.file import resolve_openclaw_path
        from aiosd.openclaw.sync import SyncResult

        path = resolve_openclaw_path(self.config.openclaw)
        last = self.last_sync
        # what the last sync knew (warnings given, aiosd's own timeoutSeconds) is not forgotten
        carried = {} if last is None else {"warned": last.warned, "timeout_written": last.timeout_written}
        stuck = self._stuck_sync
        if stuck is not None and stuck[0].is_alive():
            return SyncResult("refused", path, **carried, message=(
                f"the sync started {time.monotonic() - stuck[1]:.0f}s ago has not returned (a file system that "
                "does not answer?); not starting another until it does"))
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def deliver(outcome: tuple) -> None:
            if not done.done():
                done.set_result(outcome)

        def run() -> None:
            try:
                outcome = (sync(), None)
            except BaseException as exc:  # handed to the loop, raised there
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(deliver, outcome)
            except RuntimeError:
                pass  # the loop is gone: the daemon stopped while this sync was stuck

        thread = threading.Thread(target=run, name="openclaw-sync", daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            value, error = await asyncio.wait_for(asyncio.shield(done), self.sync_timeout)
        except asyncio.TimeoutError:
            self._stuck_sync = (thread, started)
            result = SyncResult("refused", path, **carried, message=(
                f"the sync did not finish within {self.sync_timeout:g}s (a file system that does not answer?); "
                "aiosd stops waiting for it and tries again once it returns"))
            log.error("openclaw sync refused: %s", result.message)
            return result
        if error is not None:
            raise error
        return value

    async def wait_for_sync(self, after: int) -> None:
        """Return once more than ``after`` OpenClaw syncs have finished (for tests and the CLI)."""
        async with self._sync_finished:
            await self._sync_finished.wait_for(lambda: self.syncs_done > after)

    async def _openclaw_loop(self) -> None:
        # Let the first model-list refresh finish, so the first write already lists the kernel's models.
        try:
            await asyncio.wait_for(self.catalog.refresh(), 5.0)
        except asyncio.TimeoutError:
            pass
        while True:
            self._sync_wanted.clear()
            if self.config.openclaw.sync:
                try:
                    await self.sync_openclaw_now()
                except Exception:  # a bug here must not stop the daemon serving
                    log.exception("OpenClaw sync failed unexpectedly; trying again next interval")
            wait = self.config.openclaw.interval
            if self.last_sync is not None and self.last_sync.outcome == "busy":
                wait = min(wait, OPENCLAW_BUSY_RETRY)
            try:
                await asyncio.wait_for(self._sync_wanted.wait(), wait)
            except asyncio.TimeoutError:
                pass

    # --- readiness ----------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): ready while at least one kernel of the pool is, i.e. it gave a meaningful
        answer within ``kernel.ready_window``, nothing has failed since and it is not ejected. Only
        answers count (forwarded calls, model-list refreshes, the canary), never the kernel's
        /status, which says ok with a dead scheduler."""
        states = [(member, *self._kernel_readiness(member)) for member in self.pool]
        ready_ones = [member for member, ok, _ in states if ok]
        ready = bool(ready_ones)
        if len(states) == 1:
            reason = states[0][2]
        elif ready:
            reason = "ok" if len(ready_ones) == len(states) else (
                f"ok: {len(ready_ones)} of {len(states)} kernels ready; "
                + "; ".join(f"{m.name}: {why}" for m, ok, why in states if not ok))
        else:
            reason = f"none of the {len(states)} kernels is ready: " + "; ".join(f"{m.name}: {why}" for m, _, why in states)
        if ready:
            lists_ok, why = self._model_list_readiness()
            if not lists_ok:
                ready, reason = False, why
        if ready != self._was_ready and (self._was_ready is not None or ready):
            if ready:
                log.info("kernel ready: %s", "it answered within the last %gs" % self.config.kernel.ready_window
                         if len(states) == 1 else reason)
            else:
                log.warning("kernel not ready: %s", reason)
        self._was_ready = ready
        return ready, reason

    def _kernel_readiness(self, member: PoolKernel) -> tuple[bool, str]:
        kernel = member.client
        url = member.settings.shown_url
        window = self.config.kernel.ready_window
        now = time.monotonic()
        last, failed_at = kernel.last_success_at, kernel.last_failure_at
        if last is None:
            tried = "" if failed_at is None else f" (last try {now - failed_at:.1f}s ago: {kernel.last_failure})"
            return False, f"the kernel at {url} has not answered yet{tried}"
        if failed_at is not None and failed_at >= last:
            return False, (f"the kernel at {url} failed {now - failed_at:.1f}s ago: {kernel.last_failure} "
                           f"(last answer {now - last:.1f}s ago)")
        view = member.health.view()
        if view.state != "healthy":
            return False, f"the kernel at {url} is ejected from the pool ({view.state}) after failing repeatedly"
        age = now - last
        if age > window:
            waiting = member.canary.waiting_for(now)
            canary = "" if waiting is None else f"; a canary /query has been waiting {waiting:.1f}s"
            return False, f"the kernel at {url} has not answered for {age:.1f}s (ready_window {window:g}s){canary}"
        return True, "ok"

    def _model_list_readiness(self) -> tuple[bool, str]:
        """Not ready while the latest model-list refresh failed after the kernel's last answer: an
        answer aiosd cannot read (deeply nested JSON) does not count as the kernel answering."""
        refresh = self.catalog.last_refresh
        answered = [m.client.last_success_at for m in self.pool if m.client.last_success_at is not None]
        last = max(answered, default=None)  # the pool lists as a whole: any kernel's answer counts
        if refresh is None or refresh.ok or (last is not None and last > refresh.at_monotonic):
            return True, "ok"
        ago = time.monotonic() - refresh.at_monotonic
        return False, f"the kernel's model list could not be read {ago:.1f}s ago: {refresh.message}"

    async def _canary_loop(self) -> None:
        from aiosd.kernel.canary import run_canary

        while True:
            interval = self.config.kernel.probe_interval
            self._config_applied.clear()
            if interval <= 0:  # off: costs nothing until a reload turns it on
                await self._config_applied.wait()
                continue
            try:
                await asyncio.wait_for(self._config_applied.wait(), interval)
                continue  # reloaded: start over with the new interval
            except asyncio.TimeoutError:
                pass
            due = []
            for member in self.pool:
                kernel = member.client
                last = kernel.last_success_at
                failed_since = kernel.last_failure_at is not None and (last is None or kernel.last_failure_at >= last)
                if last is not None and time.monotonic() - last < interval and not failed_since:
                    continue  # real traffic already proved the kernel works
                due.append(member)
            # Awaited here, so at most one canary per kernel is ever in flight (a hung one holds a kernel worker).
            results = await asyncio.gather(*(run_canary(self, member) for member in due), return_exceptions=True)
            for member, result in zip(due, results):
                if isinstance(result, BaseException):  # a bug here must not end the canary for the daemon's life
                    log.error("kernel canary on %s failed unexpectedly (%r); trying again next interval", member.name, result)
                else:
                    self.pool.note_health(member, member.health.record_probe(result))
            self.readiness()  # logs a change of readiness the canary caused

    async def _health_loop(self) -> None:
        """Probe ejected kernels (their model list) as their backoff ends, so they rejoin by themselves;
        with discovery off, also refresh each kernel's model list (routing needs it either way)."""
        from aiosd.errors import AiosdError
        from aiosd.models.catalog import FAILED_REFRESH_RETRY

        next_list = time.monotonic()
        while True:
            self._pool_changed.clear()
            waits = []
            probe = self.pool.next_probe_in()
            if probe is not None:
                waits.append(probe)
            # With discovery on, the catalog lists every kernel; a pool of one routes everything to it anyway.
            listing = not self.config.models.discover and len(self.pool) > 1
            if listing:
                waits.append(max(0.0, next_list - time.monotonic()))
            if not waits or min(waits) > 0:
                try:
                    await asyncio.wait_for(self._pool_changed.wait(), min(waits) if waits else None)
                    continue  # a kernel ejected or the pool changed: work out the next wake-up again
                except asyncio.TimeoutError:
                    pass
            try:
                if listing and time.monotonic() >= next_list:
                    try:
                        await self.pool.list_llms()
                        next_list = time.monotonic() + self.config.models.refresh_interval
                    except AiosdError:
                        next_list = time.monotonic() + min(FAILED_REFRESH_RETRY, self.config.models.refresh_interval)
                if self.pool.next_probe_in() == 0:
                    await self.pool.probe_ejected()
            except Exception:  # a bug here must not end the probing
                log.exception("probing the pool's kernels failed unexpectedly; trying again shortly")
            await asyncio.sleep(0.05)  # a probe that failed again set a longer backoff
            self.readiness()

    # --- reporting ----------------------------------------------------------------------------

    def _models_status(self) -> dict:
        """/status's model part: what is offered, what models.map names but the kernel does not list."""
        catalog = self.catalog
        unconfirmed = catalog.unconfirmed()
        return {
            "models": [
                {"id": m.id, "kernel_model": m.kernel_model, "source": m.source, "tools": m.tools,
                 "unconfirmed": m.id in unconfirmed}
                for m in catalog.models()
            ],
            "unavailable": [entry.as_dict() for entry in catalog.unavailable()],
            "model_refresh": catalog.last_refresh_status(),
            "remembered_models": catalog.memory_status(),
        }

    def retries_recent(self, window: float = 300.0) -> int:
        cutoff = time.monotonic() - window
        return sum(1 for t in self.retry_times if t >= cutoff)

    def status_line(self) -> str:
        """The one-line STATUS= systemd shows in ``systemctl status``."""
        parts = [f"gen {self.generation}", f"{len(self.catalog.models())} models"]
        ready, reason = self.readiness()
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

    def status(self) -> dict:
        config = self.config
        ready, reason = self.readiness()
        kernel = self.kernel
        reload = self.last_reload
        sync = self.last_sync
        return {
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_monotonic, 3),
            "started_at": self.started_wall,
            "config": {
                "path": str(config.source_path) if config.source_path else None,
                "generation": self.generation,
                "listen": config.listen,  # the address bound: a reload cannot move it
                "listen_pending": self.pending_listen,
                "last_reload": None if reload is None else {
                    "ok": reload.ok, "at": reload.at, "reason": reload.reason,
                    "problems": reload.problems, "notes": reload.notes,
                },
            },
            **self._models_status(),
            "kernel": {  # the first kernel of the pool (a pool of one: the kernel); readiness is the pool's
                "url": self.pool.first().settings.shown_url,
                "ready": ready,
                "reason": reason,
                "last_answer_seconds_ago": None if kernel.last_success_at is None
                else round(time.monotonic() - kernel.last_success_at, 3),
                "recent_latency_seconds": kernel.recent_latency(),
                "last_failure": None if kernel.last_failure_at is None else {
                    "seconds_ago": round(time.monotonic() - kernel.last_failure_at, 3),
                    "message": kernel.last_failure,
                },
                "canary": self.canary.as_dict(config.kernel.probe_interval),
            },
            "calls": {
                "in_flight": self.scheduler.in_flight,
                "queued": self.scheduler.queued,
                "max_concurrency": self.pool.slots,
                "retries_last_5m": self.retries_recent(),
            },
            "openclaw_sync": None if sync is None else sync.as_dict(),
            "background_tasks": self.tasks.status(),
            **self.pool_status(),
        }

    def pool_status(self) -> dict:
        """The pool and the scheduler as plain data (for /status, ``aiosd status`` and the status page).

        ``{"kernels": [...], "classes": [...]}``:

        - each kernel: ``name``, ``url`` (password redacted), ``labels``, ``weight``, ``health``
          ("healthy", "ejected" while its backoff runs, "probing" once it is over until a probe
          succeeds), ``ready`` and ``reason`` (as /readyz judges it), ``consecutive_failures``,
          ``ejections`` (total), ``ejected_for_seconds``, ``in_flight``, ``max_concurrency``,
          ``models`` (its last model list, null before one), ``latency_seconds`` (moving average),
          ``calls``, ``failures``, ``last_answer_seconds_ago``, ``last_failure``;
        - each class, highest first: ``class``, ``queued``, and ``keys``, one per API key seen in
          that class: ``key`` (its name, never the secret), ``queued``, ``key_in_flight``,
          ``admitted``, ``rejected`` (per-key limits), ``timed_out``, ``cancelled``,
          ``wait_seconds_mean``, ``wait_seconds_total``.
        """
        kernels = []
        for member in self.pool:
            item = member.status()
            item["ready"], item["reason"] = self._kernel_readiness(member)
            kernels.append(item)
        return {"kernels": kernels, "classes": self.scheduler.classes_status()}



