"""aiosd's one queue in front of the kernel pool: priority classes, fair share across API keys and
their sessions, aging, key and session limits, kernel affinity per session.

What lives here: ``Scheduler`` (waiters grouped class -> key -> session -> arrival order; on every
arrival, freed slot, health or pool change it hands free slots out: the highest effective class
first, within it the key with the least weighted service so far, within that key the session with
the least service, that session's oldest request some free kernel can serve: the kernel of the
session's last call while it is healthy and free, or busy and the request has waited less than
``affinity_wait``; else the least loaded free kernel, the one holding the fewest sessions first for
a session) and its per-class/key figures. What does not: the kernels themselves (``pool``), the
sessions' table (``sessions``), one request's attempts and failover (``call``).

Why a queue of our own rather than letting the kernel queue: the kernel's FIFO scheduler runs
everything it holds as one batch and waits for the slowest, a hung call holds one of its few
worker threads for good, and a client that disconnects does not cancel work inside the kernel.
Work that waits here can still be cancelled for free, and can go to whichever kernel frees first.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosd.config.durations import format_duration
from aiosd.config.settings import ClientKey, SchedulerSettings
from aiosd.errors import CapacityError, QueueLimitExceeded
from aiosd.kernel.pool import KernelPool, PoolKernel
from aiosd.kernel.sessions import SessionState, SessionTable

# Bounds of the Retry-After sent with a queue timeout or a per-key limit.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0
# Weight of the newest slot hold time in the running estimate.
HOLD_EWMA_WEIGHT = 0.2


@dataclass
class KeyState:
    """One API key's place in the scheduler: its share, limits, and what it has now."""

    name: str
    weight: float = 1.0
    max_in_flight: int | None = None
    max_queued: int | None = None
    max_in_flight_per_session: int | None = None
    in_flight: int = 0
    queued: int = 0
    client: ClientKey | None = None  # the config entry the limits above were taken from
    # Weighted service received (stride scheduling): the key with the least goes first.
    served: float = 0.0
    last_served: float = -math.inf
    # Its requests without a session id: one session of their own, never forgotten, no affinity.
    default_session: SessionState = field(init=False)
    session_vtime: float = 0.0  # the ``served`` of its session served last: where an idle session starts

    def __post_init__(self) -> None:
        self.default_session = SessionState(self.name, "-")

    def session_full(self, session: SessionState) -> bool:
        """Whether ``session`` is at this key's ``max_in_flight_per_session``."""
        limit = self.max_in_flight_per_session
        return limit is not None and session.in_flight >= limit


@dataclass
class ClassKeyStats:
    """Figures for one (class, key) pair, for /status and /metrics."""

    admitted: int = 0
    rejected: int = 0
    timed_out: int = 0
    cancelled: int = 0
    wait_seconds_total: float = 0.0
    wait_max_recent: float = 0.0


@dataclass(eq=False)
class _Waiter:
    key: KeyState
    session: SessionState
    level: int  # base class index (0 = highest)
    kernel_model: str
    exclude: frozenset[str]
    enqueued_at: float
    seq: int
    future: asyncio.Future[PoolKernel] = field(repr=False)


class Scheduler:
    """Hands kernel slots of ``pool`` to requests.

    ``kernel = await scheduler.acquire(kernel_model, key=..., level=..., deadline=...)`` returns the
    ``PoolKernel`` whose slot the caller now holds; ``scheduler.release(kernel, key, ...)`` gives it
    back. ``deadline`` (monotonic, on ``clock``) bounds the wait: past it ``CapacityError`` (503)
    with ``retry_after``. A waiter that is cancelled leaves the queue; a slot handed to it in the
    same instant is passed on, never lost. ``exclude`` names kernels this request must not use
    (failover). Per-key limits: a key at ``max_in_flight`` waits; with ``max_queued`` requests
    already waiting, a new one gets ``QueueLimitExceeded`` (429); a session at the key's
    ``max_in_flight_per_session`` waits. ``session`` (from ``session(key, id)``; None: the key-level
    session) shares its key's slots fairly with the key's other sessions and sticks to its kernel.
    """

    def __init__(self, pool: KernelPool, settings: SchedulerSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.settings = settings
        self._clock = clock
        self._keys: dict[str, KeyState] = {}
        # class index -> key name -> session -> waiters in arrival order
        self._queues: list[dict[str, dict[SessionState, deque[_Waiter]]]] = [{} for _ in settings.classes]
        self.sessions = SessionTable(settings.max_sessions, settings.session_idle, clock=clock)
        self._affinity_timer: asyncio.TimerHandle | None = None
        self._affinity_due: float | None = None  # the earliest moment a waiter held for its kernel may move
        self._affinity_timer_due = 0.0  # when the armed timer fires (on ``clock``)
        self.affinity_kept_total = 0  # calls of a session on the kernel of its previous call
        self.affinity_moved_total = 0  # calls of a session on another kernel (its own was down, busy or excluded)
        self._waiting = 0
        self._seq = itertools.count()
        self._vtime = 0.0  # the ``served`` of the key served last: where a key that was idle starts
        self.stats: dict[tuple[str, str], ClassKeyStats] = {}
        self._hold_estimate: float | None = None
        self._index_classes(settings)
        self.admitted_total = 0
        self.timed_out_total = 0
        self.cancelled_total = 0
        self.time_queued_total = 0.0
        pool.on_change = self.dispatch

    # --- gauges -------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight

    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def limit(self) -> int:
        return self.pool.slots

    # --- configuration --------------------------------------------------------------------------

    def _index_classes(self, settings: SchedulerSettings) -> None:
        self._class_index = {name: index for index, name in enumerate(settings.classes)}
        self._default_level = self._class_index.get(settings.default_class, 0)

    def apply(self, settings: SchedulerSettings) -> None:
        """Take reloaded classes. Waiters keep their place; a class that disappeared sends its
        waiters to the lowest class, a renamed order re-files them by name."""
        old_names = self.settings.classes
        self.settings = settings
        self._index_classes(settings)
        self.sessions.max_sessions, self.sessions.idle_after = settings.max_sessions, settings.session_idle
        queues: list[dict[str, dict[SessionState, deque[_Waiter]]]] = [{} for _ in settings.classes]
        for old_level, by_key in enumerate(self._queues):
            name = old_names[old_level] if old_level < len(old_names) else None
            level = settings.index_of(name)
            level = len(settings.classes) - 1 if level is None else level
            for key_name, by_session in by_key.items():
                for session, waiters in by_session.items():
                    for waiter in waiters:
                        waiter.level = level
                    sessions = queues[level].setdefault(key_name, {})
                    target = sessions.setdefault(session, deque())
                    target.extend(waiters)
                    if len(target) > len(waiters):  # merged two classes: keep arrival order
                        sessions[session] = deque(sorted(target, key=lambda w: w.seq))
        self._queues = queues
        self.dispatch()

    def key_state(self, client: ClientKey) -> KeyState:
        """The scheduler's state for ``client`` (created on first use; limits follow reloads)."""
        state = self._keys.get(client.name)
        if state is None:
            state = self._keys[client.name] = KeyState(client.name)
        elif state.client is client:
            return state  # the same config entry as last time: nothing to update
        state.client = client
        state.weight = client.weight
        state.max_in_flight = client.max_in_flight
        state.max_queued = client.max_queued
        state.max_in_flight_per_session = client.max_in_flight_per_session
        return state

    def session(self, key: KeyState, session_id: str | None) -> SessionState:
        """The state of ``session_id`` (already checked for length and characters) within ``key``; the
        key-level session for None, or when the table is full of sessions with calls under way."""
        if session_id is None:
            return key.default_session
        found = self.sessions.get(key.name, session_id)
        return key.default_session if found is None else found

    def class_level(self, key_class: str | None, model_class: str | None, header: str | None) -> int:
        """The class index of a request: the key's class, else the model's, else the default;
        a header naming a known lower class lowers it, a higher one is ignored."""
        index = self._class_index
        level = index.get(key_class) if key_class is not None else None
        if level is None:
            level = index.get(model_class, self._default_level) if model_class is not None else self._default_level
        if header:
            named = header.strip()
            wanted = index.get(named, index.get(named.lower()))
            if wanted is not None and wanted > level:
                level = wanted
        return level

    # --- use --------------------------------------------------------------------------------------

    async def acquire(self, kernel_model: str, *, key: KeyState, level: int = 0,
                      deadline: float | None = None, exclude: frozenset[str] = frozenset(),
                      new_request: bool = True, since: float | None = None,
                      session: SessionState | None = None) -> PoolKernel:
        """Wait for a slot on a kernel serving ``kernel_model``; see the class docstring.
        ``new_request`` False (a failover or retry of a request already admitted) skips the
        ``max_queued`` check; ``since`` (when the request first queued) keeps its place and its age."""
        level = min(level, len(self._queues) - 1)
        stats = self._stats(level, key.name)
        if session is None:
            session = key.default_session
        if (not self._waiting and (key.max_in_flight is None or key.in_flight < key.max_in_flight)
                and (key.max_in_flight_per_session is None or not key.session_full(session))):
            # Fast path: a free slot and nobody waiting (a session waits a moment for its own kernel).
            kernel = (self._pick_kernel(kernel_model, exclude) if not session.tracked
                      else self._kernel_for(session, kernel_model, exclude, self.settings.affinity_wait <= 0))
            if kernel is not None:
                self._grant(kernel, key, session)
                stats.admitted += 1
                return kernel
        if new_request and key.max_queued is not None and key.queued >= key.max_queued:
            stats.rejected += 1
            raise self._limit_error(key)
        started = self._clock()
        waiter = _Waiter(key, session, level, kernel_model, exclude,
                         started if since is None else min(since, started),
                         next(self._seq), asyncio.get_running_loop().create_future())
        self._enqueue(waiter)
        try:
            self.dispatch()
            if deadline is None:
                kernel = await waiter.future
            else:
                async with asyncio.timeout(deadline - started):
                    kernel = await waiter.future
        except BaseException as exc:
            waited = self._clock() - started
            self.time_queued_total += waited
            stats.wait_seconds_total += waited
            if waiter.future.done() and not waiter.future.cancelled():
                # The slot was handed over just as we were cancelled or timed out: pass it on.
                self.release(waiter.future.result(), key, session=session)
            else:
                waiter.future.cancel()
                self._forget(waiter)
            if isinstance(exc, TimeoutError):
                self.timed_out_total += 1
                stats.timed_out += 1
                raise self._timeout_error(waited, kernel_model) from None
            if isinstance(exc, asyncio.CancelledError):
                self.cancelled_total += 1
                stats.cancelled += 1
            raise
        waited = self._clock() - started
        self.time_queued_total += waited
        stats.wait_seconds_total += waited
        stats.wait_max_recent = max(stats.wait_max_recent * 0.9, waited)
        stats.admitted += 1
        return kernel

    def release(self, kernel: PoolKernel, key: KeyState, *, held: float | None = None,
                session: SessionState | None = None) -> None:
        """Give back a slot ``acquire`` returned (``held``: how long, for the Retry-After estimate;
        ``session``: the one ``acquire`` was given)."""
        kernel.in_flight -= 1
        key.in_flight -= 1
        if session is None:
            session = key.default_session
        session.in_flight -= 1
        if session.tracked and not session.in_flight and not session.queued:
            self.sessions.went_idle(session)
        if held is not None:
            self._hold_estimate = held if self._hold_estimate is None else (
                self._hold_estimate + HOLD_EWMA_WEIGHT * (held - self._hold_estimate))
        self.pool.released(kernel)
        self.dispatch()

    def can_fail_over(self, kernel_model: str, exclude: frozenset[str]) -> bool:
        """Whether a healthy kernel serving ``kernel_model`` is left outside ``exclude``."""
        return any(not k.health.ejected and k.name not in exclude for k in self.pool.serving(kernel_model))

    def retry_after_estimate(self) -> float:
        """Seconds until a new request would likely get a slot, clamped to [1, 60]."""
        hold = self._hold_estimate if self._hold_estimate is not None else 5.0
        rounds = (self.queued + 1) / max(1, self.pool.slots)
        return float(min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, math.ceil(hold * rounds))))

    # --- dispatch ---------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand every free slot some waiter can use: highest effective class, then the key with the
        least weighted service, then its session with the least service, then that session's oldest
        servable request. Cheap when nobody waits."""
        while self._waiting:
            choice = self._choose()
            if choice is None:
                break
            waiter, kernel = choice
            self._forget(waiter)
            if waiter.future.done():  # cancelled or timed out, its task not yet run to remove it
                continue
            self._grant(kernel, waiter.key, waiter.session)
            waiter.future.set_result(kernel)
        self._arm_affinity_timer()

    def _choose(self) -> tuple[_Waiter, PoolKernel] | None:
        self._affinity_due = None
        if not any(k.free for k in self.pool):
            return None
        now = self._clock()
        best: tuple[_Waiter, PoolKernel] | None = None
        best_rank: tuple | None = None
        for level, by_key in enumerate(self._queues):
            for by_session in by_key.values():
                for session, waiters in by_session.items():
                    key = waiters[0].key
                    if key.max_in_flight is not None and key.in_flight >= key.max_in_flight:
                        break  # the whole key waits
                    if key.session_full(session):
                        continue
                    found = self._servable(session, waiters, now)
                    if found is None:
                        continue
                    waiter = found[0]
                    rank = (self._effective(level, waiter, now), key.served, key.last_served,
                            session.served, session.last_served, waiter.enqueued_at, waiter.seq)
                    if best_rank is None or rank < best_rank:
                        best, best_rank = found, rank
        return best

    def _servable(self, session: SessionState, waiters: deque[_Waiter],
                  now: float) -> tuple[_Waiter, PoolKernel] | None:
        """The oldest of ``session``'s waiters that a free kernel can serve now, and that kernel."""
        bound = self.settings.affinity_wait
        for waiter in waiters:
            if not session.tracked:
                kernel = self._pick_kernel(waiter.kernel_model, waiter.exclude)
            else:
                due = waiter.enqueued_at + bound
                kernel = self._kernel_for(session, waiter.kernel_model, waiter.exclude, now >= due)
                if kernel is None and now < due and (self._affinity_due is None or due < self._affinity_due):
                    self._affinity_due = due  # held for its own kernel: look again when that ends
            if kernel is not None:
                return waiter, kernel
        return None

    def _effective(self, level: int, waiter: _Waiter, now: float) -> int:
        aging = self.settings.aging
        if aging > 0:
            return max(0, level - int((now - waiter.enqueued_at) // aging))
        return level

    def _kernel_for(self, session: SessionState, kernel_model: str, exclude: frozenset[str],
                    may_move: bool) -> PoolKernel | None:
        """A free kernel for a call of ``session``: the kernel of its last call (for a new session, the
        healthy kernel holding the fewest sessions per slot) while that one is healthy, serves the model
        and is free; while it is healthy but busy, None until ``may_move`` (the request waited
        ``affinity_wait``); otherwise the best other free kernel (the session then moves)."""
        members = self.pool.members
        if len(members) > 1:
            home = members.get(session.kernel) if session.kernel is not None else self._emptiest(kernel_model, exclude)
            if home is not None and not home.removed and not home.health.ejected and home.name not in exclude \
                    and home.serves(kernel_model, self.pool.listed_anywhere(kernel_model)):
                if home.free:
                    return home
                if not may_move:
                    return None
        return self._pick_kernel(kernel_model, exclude, place=True)

    def _emptiest(self, kernel_model: str, exclude: frozenset[str]) -> PoolKernel | None:
        """The healthy kernel serving ``kernel_model`` with the fewest sessions per slot: a new session's."""
        sessions = self.sessions
        healthy = [k for k in self.pool.serving(kernel_model) if not k.health.ejected and k.name not in exclude]
        if not healthy:
            return None
        return min(healthy, key=lambda k: (sessions.sessions_on(k.name) / k.slots, k.load, -k.settings.weight))

    def _arm_affinity_timer(self) -> None:
        """Wake ``dispatch`` when the earliest request held for its session's kernel may move, so that
        no slot stays idle longer than ``affinity_wait`` while work waits."""
        due = self._affinity_due if self._waiting else None
        if self._affinity_timer is not None:
            if due is not None and self._affinity_timer_due <= due:
                return  # one as early is armed: it looks again and re-arms for the rest
            self._affinity_timer.cancel()
            self._affinity_timer = None
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._affinity_timer_due = due
        self._affinity_timer = loop.call_later(max(0.0, due - self._clock()), self._affinity_expired)

    def _affinity_expired(self) -> None:
        self._affinity_timer = None
        self.dispatch()

    def _pick_kernel(self, kernel_model: str, exclude: frozenset[str], *, place: bool = False) -> PoolKernel | None:
        """The least loaded free kernel serving ``kernel_model`` outside ``exclude``; healthy ones
        only, unless none serving the model is healthy (then the ejected ones: better a try than a wait).
        ``place``: for a session, the kernel holding the fewest sessions per slot first."""
        members = self.pool.members
        if len(members) == 1:  # a pool of one serves every model (its own error says what it lacks)
            for only in members.values():
                if only.in_flight < only.settings.max_concurrency and not only.removed and only.name not in exclude:
                    return only
                return None
        serving = [k for k in self.pool.serving(kernel_model) if k.name not in exclude]
        healthy = [k for k in serving if not k.health.ejected]
        candidates = [k for k in (healthy or serving) if k.free]
        if not candidates:
            return None
        if place:
            sessions = self.sessions
            return min(candidates, key=lambda k: (sessions.sessions_on(k.name) / k.slots, k.load,
                                                  -k.settings.weight, k.latency or 0.0))
        return min(candidates, key=lambda k: (k.load, -k.settings.weight, k.latency or 0.0))

    def _grant(self, kernel: PoolKernel, key: KeyState, session: SessionState) -> None:
        kernel.in_flight += 1
        key.in_flight += 1
        self.admitted_total += 1
        self._vtime = key.served
        key.served += 1.0 / key.weight
        now = key.last_served = self._clock()
        session.in_flight += 1
        key.session_vtime = session.served
        session.served += 1.0
        session.last_served = now
        if not session.tracked:
            return
        if session.kernel != kernel.name:
            if session.kernel is not None:
                self.affinity_moved_total += 1
            self.sessions.set_kernel(session, kernel.name)
        else:
            self.affinity_kept_total += 1

    def _enqueue(self, waiter: _Waiter) -> None:
        key, session = waiter.key, waiter.session
        if key.queued == 0 and key.in_flight == 0:
            # A key that was idle starts level with the others, not with credit saved up.
            key.served = max(key.served, self._vtime)
        if not session.busy:
            # The same within the key: an idle session starts level with the key's busy ones.
            session.served = max(session.served, key.session_vtime)
        waiters = self._queues[waiter.level].setdefault(key.name, {}).setdefault(session, deque())
        place = len(waiters)
        while place and waiters[place - 1].enqueued_at > waiter.enqueued_at:
            place -= 1  # a failover or retry goes back to where it first queued, not to the end
        waiters.insert(place, waiter)
        key.queued += 1
        session.queued += 1
        self._waiting += 1

    def _forget(self, waiter: _Waiter) -> None:
        key, session = waiter.key, waiter.session
        for by_key in self._queues:
            by_session = by_key.get(key.name)
            if by_session is None or session not in by_session:
                continue
            waiters = by_session[session]
            try:
                waiters.remove(waiter)
            except ValueError:
                continue
            if not waiters:
                del by_session[session]
                if not by_session:
                    del by_key[key.name]
            key.queued -= 1
            session.queued -= 1
            self._waiting -= 1
            if session.tracked and not session.busy:
                self.sessions.went_idle(session)
            return

    def _stats(self, level: int, key_name: str) -> ClassKeyStats:
        name = self.settings.classes[level]
        stats = self.stats.get((name, key_name))
        if stats is None:
            stats = self.stats[(name, key_name)] = ClassKeyStats()
        return stats

    # --- errors and reporting ---------------------------------------------------------------------

    def _timeout_error(self, waited: float, kernel_model: str) -> CapacityError:
        serving = self.pool.serving(kernel_model)
        slots = sum(k.slots for k in serving)
        return CapacityError(
            f"aiosd's queue for the AIOS kernels is full: waited {format_duration(waited)} for one of "
            f"{slots} kernel slots on {len(serving)} kernel{'s' if len(serving) != 1 else ''} serving "
            f"{kernel_model!r} ({self.queued} request{'s' if self.queued != 1 else ''} still waiting). "
            "Try again later, or raise max_concurrency or add kernels.",
            retry_after=self.retry_after_estimate(),
        )

    def _limit_error(self, key: KeyState) -> QueueLimitExceeded:
        if key.max_queued == 0 and key.max_in_flight is not None:
            what = (f"API key {key.name!r} has {key.in_flight} kernel calls in flight, its max_in_flight "
                    f"({key.max_in_flight}), and may not queue more (max_queued 0)")
        else:
            what = (f"API key {key.name!r} already has {key.queued} requests waiting, its max_queued "
                    f"({key.max_queued})")
        return QueueLimitExceeded(f"{what}. Try again later, or raise the key's limit in auth.keys.",
                                  retry_after=self.retry_after_estimate())

    def classes_status(self) -> list[dict]:
        """Per class, then per key: waiting now, in flight, admitted, rejected, timed out, mean wait,
        its sessions seen lately and those waiting now (the most waiting first, at most ``SESSIONS_SHOWN``)."""
        active: dict[str, int] = {}
        for state in self.sessions:
            active[state.key_name] = active.get(state.key_name, 0) + 1
        out = []
        for level, name in enumerate(self.settings.classes):
            by_key = self._queues[level]
            keys = []
            for (class_name, key_name), stats in sorted(self.stats.items()):
                if class_name != name:
                    continue
                key = self._keys.get(key_name)
                by_session = by_key.get(key_name, {})
                done = stats.admitted + stats.timed_out + stats.cancelled
                keys.append({
                    "key": key_name,
                    "queued": sum(len(waiters) for waiters in by_session.values()),
                    "key_in_flight": 0 if key is None else key.in_flight,
                    "admitted": stats.admitted,
                    "rejected": stats.rejected,
                    "timed_out": stats.timed_out,
                    "cancelled": stats.cancelled,
                    "wait_seconds_mean": round(stats.wait_seconds_total / done, 3) if done else None,
                    "wait_seconds_total": round(stats.wait_seconds_total, 3),
                    "sessions_active": active.get(key_name, 0),
                    "sessions": _sessions_waiting(by_session, self._clock()),
                })
            out.append({
                "class": name,
                "queued": sum(len(w) for by_session in by_key.values() for w in by_session.values()),
                "keys": keys,
            })
        return out

    def sessions_status(self) -> dict:
        """The session table: how many, its bounds, sessions per kernel, affinity kept and moved."""
        table = self.sessions
        return {
            "active": len(table),
            "max_sessions": table.max_sessions,
            "idle_seconds": table.idle_after,
            "affinity_wait_seconds": self.settings.affinity_wait,
            "per_kernel": {k.name: table.sessions_on(k.name) for k in self.pool},
            "affinity_kept": self.affinity_kept_total,
            "affinity_moved": self.affinity_moved_total,
            "forgotten": table.forgotten_total,
            "overflow": table.overflow_total,
        }


# Sessions listed per key and class in /status and on the status page.
SESSIONS_SHOWN = 20


def _sessions_waiting(by_session: dict[SessionState, deque[_Waiter]], now: float) -> list[dict]:
    """The sessions of one key waiting in one class, the most waiting first (short ids only)."""
    rows = sorted(by_session.items(), key=lambda item: (-len(item[1]), item[1][0].enqueued_at))
    return [{
        "session": session.short,
        "queued": len(waiters),
        "in_flight": session.in_flight,
        "kernel": session.kernel,
        "oldest_wait_seconds": round(max(0.0, now - waiters[0].enqueued_at), 3),
    } for session, waiters in rows[:SESSIONS_SHOWN]]
