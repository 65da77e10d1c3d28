"""The pool of AIOS kernels: each a ``KernelClient`` with its slot count, health, model list and figures.

What lives here: ``PoolKernel`` (one member: its client, slots in use, ``Health``, the kernel models
its last model-list refresh named, latency EWMA, counters), ``KernelPool`` (the members by name,
live add/change/remove on reload, listing every member's models for the catalog, probing ejected
members back in). What does not: which waiting request gets which free slot (``scheduler``), one
request's attempts and failover (``call``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiosd.config.settings import HealthSettings, KernelSettings
from aiosd.errors import AiosdError, KernelError, KernelUnreachable
from aiosd.kernel.canary import CanaryState
from aiosd.kernel.client import KernelClient, Transport
from aiosd.kernel.health import Health

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("aiosd.pool")

# Weight of the newest call in a kernel's latency estimate (the tie-break between equal loads).
LATENCY_EWMA_WEIGHT = 0.2


class PoolKernel:
    """One kernel of the pool. ``in_flight`` counts slots the scheduler handed out on it."""

    def __init__(self, settings: KernelSettings, health: HealthSettings, *, transport: Transport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.client = KernelClient(settings, transport=transport)
        self.health = Health(health, clock=clock)
        self.in_flight = 0
        self.removed = False  # taken out by a reload: finishes its calls, gets no new ones
        # Kernel model names of its last good /core/llms/list; None until one succeeded.
        self.models: frozenset[str] | None = None
        self.listed: tuple[dict[str, Any], ...] = ()  # its last good /core/llms/list entries
        self.latency: float | None = None  # EWMA of call durations with an answer
        self.calls_total = 0
        self.failures_total = 0
        self.canary = CanaryState()
        self.ejection_cause: str | None = None  # the failure that ejected it last, in a few words

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def slots(self) -> int:
        return self.settings.max_concurrency

    @property
    def free(self) -> int:
        return 0 if self.removed else max(0, self.slots - self.in_flight)

    @property
    def load(self) -> float:
        """Slots in use relative to its size: what "least loaded" compares."""
        return self.in_flight / self.slots

    def serves(self, kernel_model: str, listed_anywhere: bool) -> bool:
        """Whether this kernel can take a call for ``kernel_model``. A kernel whose list is not known
        yet may; when no kernel lists the model at all, every kernel may (the kernel's own error then
        says what is wrong, as with one kernel)."""
        return self.models is None or kernel_model in self.models or not listed_anywhere

    def note_call(self, seconds: float, error: BaseException | None) -> str | None:
        """Record one call's outcome; returns "ejected"/"rejoined" when its health changed."""
        self.calls_total += 1
        if error is None or _kernel_status(error) not in (0, None):  # an answer came: its time counts
            self.latency = (seconds if self.latency is None
                            else self.latency + LATENCY_EWMA_WEIGHT * (seconds - self.latency))
        if error is None:
            return "rejoined" if self.health.record_success() else None
        self.failures_total += 1
        if self.health.record_failure(error):
            self.ejection_cause = failure_cause(error)
            return "ejected"
        if _scheduler_answered(error):
            # An error inside HTTP 200 (a 429, a bad request) still proves the kernel works.
            return "rejoined" if self.health.record_success() else None
        return None

    def status(self) -> dict:
        """This kernel as plain data for /status (no secrets: the URL is redacted)."""
        view = self.health.view()
        client = self.client
        now = time.monotonic()
        return {
            "name": self.name,
            "url": self.settings.shown_url,
            "labels": dict(self.settings.labels),
            "weight": self.settings.weight,
            "health": view.state,
            "consecutive_failures": view.consecutive_failures,
            "ejections": view.ejections_total,
            "ejected_for_seconds": view.ejected_for,
            "ejection_cause": None if view.state == "healthy" else self.ejection_cause,
            "in_flight": self.in_flight,
            "max_concurrency": self.slots,
            "removed": self.removed,
            "models": None if self.models is None else sorted(self.models),
            "latency_seconds": None if self.latency is None else round(self.latency, 3),
            "calls": self.calls_total,
            "failures": self.failures_total,
            "last_answer_seconds_ago": (None if client.last_success_at is None
                                        else round(now - client.last_success_at, 3)),
            "last_failure": None if client.last_failure_at is None else {
                "seconds_ago": round(now - client.last_failure_at, 3), "message": client.last_failure,
            },
        }


def failure_cause(error: BaseException) -> str:
    """A failed call in a few words ("connection refused", "no answer within 10s", "HTTP 502")."""
    reason = error.reason if isinstance(error, KernelError) else None
    return reason or (error.message if isinstance(error, AiosdError) else type(error).__name__)


def _kernel_status(error: BaseException) -> int | None:
    """The kernel's status behind a ``KernelError`` (0: no answer), None for any other error."""
    return error.kernel_status if isinstance(error, KernelError) else None


def _scheduler_answered(error: BaseException) -> bool:
    status = _kernel_status(error)
    return status is not None and 400 <= status < 500 and status != 422


class KernelPool:
    """The kernels by name, in config order. ``on_change()`` (the scheduler's wake-up) is called
    whenever capacity or health may have changed."""

    def __init__(self, settings: tuple[KernelSettings, ...], health: HealthSettings, *,
                 transport: Transport | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._shared_transport = transport  # an injected httpx transport (tests, benchmarks): closed once, by close()
        self._transport = _unclosable(transport)
        self._clock = clock
        self._health = health
        self.members: dict[str, PoolKernel] = {}
        self._leaving: list[PoolKernel] = []  # removed by a reload, calls still in flight
        self.on_change: Callable[[], object] = lambda: None
        for item in settings:
            self.members[item.name] = PoolKernel(item, health, transport=self._transport, clock=clock)

    # --- reading ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PoolKernel]:
        return iter(self.members.values())

    def __len__(self) -> int:
        return len(self.members)

    def first(self) -> PoolKernel:
        return next(iter(self.members.values()))

    def listed_anywhere(self, kernel_model: str) -> bool:
        return any(k.models is not None and kernel_model in k.models for k in self.members.values())

    def serving(self, kernel_model: str) -> list[PoolKernel]:
        listed = self.listed_anywhere(kernel_model)
        return [k for k in self.members.values() if not k.removed and k.serves(kernel_model, listed)]

    @property
    def slots(self) -> int:
        return sum(k.slots for k in self.members.values())

    @property
    def in_flight(self) -> int:
        return sum(k.in_flight for k in self.members.values()) + sum(k.in_flight for k in self._leaving)

    # --- changing -----------------------------------------------------------------------------

    def apply(self, settings: tuple[KernelSettings, ...], health: HealthSettings) -> list[str]:
        """Take a reloaded pool: new kernels join, changed ones take their settings (calls in flight
        finish on the old connections), removed ones get no new calls and close once idle.
        Returns log notes."""
        notes: list[str] = []
        self._health = health
        wanted = {item.name: item for item in settings}
        for name, member in list(self.members.items()):
            if name not in wanted:
                member.removed = True
                del self.members[name]
                notes.append(f"kernel {name} removed from the pool ({member.in_flight} call(s) in flight finish there)")
                if member.in_flight:
                    self._leaving.append(member)
                else:
                    _close_soon(member)
        members: dict[str, PoolKernel] = {}
        for name, item in wanted.items():
            found = self.members.get(name)
            if found is None:
                member = PoolKernel(item, health, transport=self._transport, clock=self._clock)
                notes.append(f"kernel {name} ({item.shown_url}, {item.max_concurrency} slots) joined the pool")
            else:
                member = found
                if item != member.settings:
                    member.client.apply_settings(item)
                    member.settings = item
                member.health.settings = health
            members[name] = member
        self.members = members  # config order
        self.on_change()
        return notes

    def released(self, member: PoolKernel) -> None:
        """A call on ``member`` finished: close a removed kernel once it is idle."""
        if member.removed and member.in_flight == 0 and member in self._leaving:
            self._leaving.remove(member)
            _close_soon(member)

    def note_health(self, member: PoolKernel, change: str | None, why: str = "") -> None:
        """Log an ejection or rejoin once, and wake the scheduler."""
        if change == "ejected":
            view = member.health.view()
            others = len(self) > 1
            log.warning(
                "kernel %s ejected from the pool for %gs (ejection %d in a row, %d failure(s) in a row%s); %s",
                member.name, member.health.backoff(), view.ejections, view.consecutive_failures,
                f": {why}" if why else "",
                "requests go to other healthy kernels serving their model, to it only when none is left" if others
                else "it is the only kernel, so requests still go to it",
            )
        elif change == "rejoined":
            log.info("kernel %s rejoined the pool (it answered again)", member.name)
        if change is not None:
            self.on_change()

    # --- model lists ----------------------------------------------------------------------------

    async def list_llms(self) -> list[dict]:
        """Every kernel's /core/llms/list at once; each member keeps its own list and its health
        learns from it. Returns the union (first kernel's entry wins a name); raises the first
        error when no kernel could list."""
        members = list(self.members.values())
        results = await asyncio.gather(*(m.client.list_llms() for m in members), return_exceptions=True)
        union: dict[str, dict] = {}
        errors: list[AiosdError] = []
        for member, result in zip(members, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, AiosdError):
                    raise result
                errors.append(result)
                change = member.health.record_probe(False) if _counts_for_health(result) else None
                member.ejection_cause = failure_cause(result) if change == "ejected" else member.ejection_cause
                self.note_health(member, change, result.message)
                # One failed refresh says nothing about which models it serves: its last list stays
                # in the union, so /v1/models and OpenClaw's file do not lose them on a blip.
                for entry in member.listed:
                    union.setdefault(entry["name"], entry)
                continue
            member.models = frozenset(entry["name"] for entry in result)
            member.listed = tuple(result)
            self.note_health(member, member.health.record_probe(True))
            for entry in result:
                union.setdefault(entry["name"], entry)
        if errors and len(errors) == len(members):
            error = errors[0]
            if len(members) > 1:
                error.message = f"no kernel of the pool could list its models; {members[0].name}: {error.message}"
                error.args = (error.message,)
            raise error
        self.on_change()  # a model list may have made waiting requests servable
        return list(union.values())

    async def probe_ejected(self) -> None:
        """Probe every ejected kernel whose backoff is over (its model list), so it rejoins by itself."""
        due = [m for m in self.members.values() if m.health.ejected and m.health.backoff_over()]
        if not due:
            return
        results = await asyncio.gather(*(m.client.list_llms() for m in due), return_exceptions=True)
        for member, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, AiosdError):
                    raise result
                change = member.health.record_probe(False)
                member.ejection_cause = failure_cause(result) if change == "ejected" else member.ejection_cause
                self.note_health(member, change, result.message)
            else:
                member.models = frozenset(entry["name"] for entry in result)
                member.listed = tuple(result)
                self.note_health(member, member.health.record_probe(True))

    def next_probe_in(self) -> float | None:
        """Seconds until the earliest ejected kernel's backoff ends (0 if one is due), None if none is ejected."""
        now = self._clock()
        ends = [m.health.ejected_until for m in self.members.values() if m.health.ejected_until is not None]
        return None if not ends else max(0.0, min(ends) - now)

    async def close(self) -> None:
        for member in [*self.members.values(), *self._leaving]:
            await member.client.close()
        if self._shared_transport is not None and not isinstance(self._shared_transport, str):
            await self._shared_transport.aclose()


def _unclosable(transport: Transport | None) -> Transport | None:
    """An injected httpx transport shared by every member, which a member leaving the pool must not close."""
    if transport is None or isinstance(transport, str):
        return transport
    import httpx  # only here: the aiohttp-only daemon never imports httpx

    shared = transport

    class Shared(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await shared.handle_async_request(request)

        async def aclose(self) -> None:
            pass

    return Shared()


def _counts_for_health(error: AiosdError) -> bool:
    """Whether a failed model-list refresh says the kernel is down: no answer, not ready, or a 5xx."""
    status = _kernel_status(error)
    return isinstance(error, KernelUnreachable) or status in (0, None) or (
        error.code == "kernel_not_ready" or (status or 0) >= 500
    )


def _close_soon(member: PoolKernel) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(member.client.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
