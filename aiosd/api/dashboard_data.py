"""The status page's data: the runtime's status model shaped as the page's JSON, and nothing secret.

Kernels come as a list, the queue by class and key.

This is the one place that knows how the runtime holds kernels and its queue; the page and its
routes (``dashboard``) see only the structures below. Every list is bounded, every text is the
daemon's own (ids, names, numbers, its log lines), never a prompt, an answer or a key.
"""

from __future__ import annotations

import re
import time
from typing import Literal

import msgspec

from aiosd.config.settings import Config
from aiosd.kernel.client import LatencySummary
from aiosd.kernel.scheduler import SESSIONS_SHOWN
from aiosd.service.history import LIVE_SHOWN, Finished
from aiosd.service.readiness import pool_capacity
from aiosd.service.runtime import Runtime
from aiosd.service.status_model import ConfigStatus, PoolKernelStatus, Status

KernelHealth = Literal["up", "down", "ejected", "unknown"]
PROBLEMS_SHOWN = 50
PROBLEM_LIMIT = 500
LOG_LINES_SHOWN = 200


class Latency(msgspec.Struct):
    """Durations (seconds) of the kernel's last answered calls."""

    count: int
    p50: float
    p90: float
    max: float
    last: float


class KernelState(msgspec.Struct):
    name: str
    url: str  # shown without a password
    health: KernelHealth
    reason: str
    in_flight: int
    capacity: int
    latency: Latency | None
    last_answer_seconds_ago: float | None


class WaitingRequest(msgspec.Struct):
    request_id: str
    key: str
    priority_class: str
    model: str
    waited_seconds: float  # in this queue visit
    session: str = "-"  # short form (8 hex characters); "-" without a session id


class RetryWait(msgspec.Struct):
    request_id: str
    key: str
    model: str
    attempts: int
    seconds_left: float


class SessionQueue(msgspec.Struct):
    session: str  # short form; "-": the key's requests without a session id
    waiting: int
    oldest_wait_seconds: float


class KeyQueue(msgspec.Struct):
    key: str
    waiting: int
    in_flight: int
    oldest_wait_seconds: float | None
    sessions: list[SessionQueue] = []  # the sessions waiting, the most waiting first (at most SESSIONS_SHOWN)


class ClassQueue(msgspec.Struct):
    name: str
    waiting: int
    oldest_wait_seconds: float | None
    keys: list[KeyQueue]


class QueueState(msgspec.Struct):
    waiting: int
    in_flight: int
    capacity: int  # slots usable now (an ejected kernel's are out while another kernel is healthy)
    slots_out: int  # slots of ejected kernels
    out: list[str]  # why each kernel is out ("k1 (2 slots): ejected, connection refused")
    oldest_wait_seconds: float | None
    classes: list[ClassQueue]
    waiting_requests: list[WaitingRequest]  # oldest first, at most LIVE_SHOWN
    retry_waits: list[RetryWait]  # soonest first, at most LIVE_SHOWN
    not_shown: int  # requests waiting or in a retry wait beyond the lists above


class RequestRow(msgspec.Struct):
    seq: int
    at: float  # when it started (wall clock)
    finished_at: float  # when it finished: the rows come in this order, newest last
    request_id: str
    key: str
    model: str
    outcome: str
    status: int
    attempts: int
    kernels: list[str]
    queue_wait: float
    kernel_time: float
    retry_wait: float
    total: float
    overhead: float
    pieces: int  # kernel answers joined into this one (more than 1: continued past the kernel's cap)
    session: str = "-"


class Bucket(msgspec.Struct):
    """One second's sums (seconds for the times): divide by ``requests`` for means."""

    second: int
    requests: int
    errors: int
    overhead: float
    queue_wait: float
    kernel_time: float
    retry_wait: float
    total: float


class ModelState(msgspec.Struct):
    id: str
    kernel_model: str
    source: str  # "map" (models.map) or the kernel's list
    available: bool  # False: mapped, but the kernel does not list its kernel model
    unconfirmed: bool  # offered from the kernel's last known list while the kernel has not answered
    reason: str | None  # why it is unavailable


class ModelRefresh(msgspec.Struct):
    ok: bool
    message: str
    seconds_ago: float


class Refusal(msgspec.Struct):
    at: float
    reason: str
    problems: list[str]


class ConfigState(msgspec.Struct):
    path: str | None
    generation: int
    applied_at: float
    last_reload_ok: bool | None
    last_refused: Refusal | None


class OpenClawState(msgspec.Struct):
    sync_enabled: bool
    path: str | None
    outcome: str | None
    message: str | None  # the sync's own line: what it did and changed (models added and removed, ...)
    at: float | None


class LiveState(msgspec.Struct):
    """Everything the page shows, for one poll: the new rows and buckets since the cursors it sent."""

    now: float
    version: str
    uptime_seconds: float
    kernels: list[KernelState]
    queue: QueueState
    requests: list[RequestRow]  # finished since ``requests_after``, oldest first
    requests_seq: int  # pass back as requests_after
    history_second: int  # this second; pass back as history_after
    history_window: int  # seconds the buckets cover
    history: list[Bucket]  # seconds with traffic after ``history_after``, oldest first
    models: list[ModelState]
    model_refresh: ModelRefresh | None
    config: ConfigState
    openclaw: OpenClawState
    refused_auth: int = 0  # requests refused for a missing or wrong key since start: counted, not listed


class LogLine(msgspec.Struct):
    at: float
    level: str
    logger: str
    line: str


class RequestLog(msgspec.Struct):
    request_id: str
    lines: list[LogLine]  # the kept lines about the request, oldest first (the ring is bounded)


def live_state(runtime: Runtime, *, requests_after: int = 0, history_after: int | None = None) -> LiveState:
    """One poll's data: the runtime's status model plus the page's own rings, from the cursors sent."""
    status = runtime.status_model()
    history = runtime.history
    rows = history.finished_since(requests_after)
    second, buckets = history.seconds.since(history_after)
    config = runtime.config
    return LiveState(
        now=time.time(),
        version=status.version,
        uptime_seconds=status.uptime_seconds,
        kernels=_kernels(runtime, status.kernels),
        queue=_queue(runtime),
        requests=[_row(row) for row in rows],
        # The newest number there is, even below the cursor sent: after a restart the page starts over.
        requests_seq=history.recent[-1].seq if history.recent else 0,
        history_second=second,
        history_window=history.seconds.size,
        history=[Bucket(second=b["second"], requests=int(b["requests"]), errors=int(b["errors"]),
                        overhead=b["overhead"], queue_wait=b["queue_wait"], kernel_time=b["kernel_time"],
                        retry_wait=b["retry_wait"], total=b["total"]) for b in buckets],
        models=_models(status),
        model_refresh=None if status.model_refresh is None else ModelRefresh(
            ok=status.model_refresh.ok, message=status.model_refresh.message,
            seconds_ago=status.model_refresh.seconds_ago),
        config=_config(runtime, status.config, config),
        openclaw=_openclaw(runtime, config),
        refused_auth=history.refused_auth,
    )


def request_log(runtime: Runtime, request_id: str) -> RequestLog:
    secrets = _secrets(runtime.config)
    lines = runtime.log_ring.for_request(request_id)[-LOG_LINES_SHOWN:]
    return RequestLog(request_id=request_id, lines=[
        LogLine(at=at, level=level, logger=logger, line=scrub_secrets(line, secrets))
        for at, level, logger, _, line in lines
    ])


# --- kernels and the queue: the parts that change when the kernel pool arrives ---------------------


def kernel_health(kernel: PoolKernelStatus) -> KernelHealth:
    """The page's one word for a kernel of the pool."""
    failure, answered = kernel.last_failure, kernel.last_answer_seconds_ago
    if kernel.health != "healthy":
        return "ejected"  # out of the pool after failing repeatedly
    if kernel.ready:
        return "up"
    if failure is not None and (answered is None or failure.seconds_ago <= answered):
        return "down"  # its last call failed
    return "unknown"  # not asked yet, or quiet for longer than kernel.ready_window


def _kernels(runtime: Runtime, kernels: list[PoolKernelStatus]) -> list[KernelState]:
    """Every kernel of the pool, in config order."""
    states = []
    for kernel in kernels:
        member = runtime.pool.members.get(kernel.name)
        summary = None if member is None else member.client.latency_summary()
        states.append(KernelState(
            name=kernel.name,
            url=kernel.url,
            health=kernel_health(kernel),
            reason=kernel.reason,
            in_flight=kernel.in_flight,
            capacity=kernel.max_concurrency,
            latency=_latency(summary),
            last_answer_seconds_ago=kernel.last_answer_seconds_ago,
        ))
    return states


def _latency(summary: LatencySummary | None) -> Latency | None:
    if summary is None or not summary.count:
        return None
    assert summary.p50 is not None and summary.p90 is not None and summary.max is not None and summary.last is not None
    return Latency(summary.count, summary.p50, summary.p90, summary.max, summary.last)


def _queue(runtime: Runtime) -> QueueState:
    now = time.monotonic()
    waiting: list = []
    retrying: list = []
    calling: dict[tuple[str, str], int] = {}
    for trip in runtime.history.under_way():
        if trip.phase == "queued":
            waiting.append(trip)
        elif trip.phase == "retry_wait":
            retrying.append(trip)
        elif trip.phase == "calling":
            calling[(trip.klass, trip.key)] = calling.get((trip.klass, trip.key), 0) + 1
    waiting.sort(key=lambda t: t.phase_since)
    retrying.sort(key=lambda t: t.retry_until)

    classes: dict[str, dict[str, list]] = {}
    for trip in waiting:
        classes.setdefault(trip.klass, {}).setdefault(trip.key, []).append(trip)
    for klass, key in calling:
        classes.setdefault(klass, {}).setdefault(key, [])
    class_rows = []
    for name in sorted(classes):
        keys = classes[name]
        key_rows = [KeyQueue(key=key, waiting=len(trips), in_flight=calling.get((name, key), 0),
                             oldest_wait_seconds=_age(now, trips[0].phase_since) if trips else None,
                             sessions=_sessions(now, trips))
                    for key, trips in sorted(keys.items())]
        oldest = min((t.phase_since for trips in keys.values() for t in trips), default=None)
        class_rows.append(ClassQueue(name=name, waiting=sum(k.waiting for k in key_rows),
                                     oldest_wait_seconds=None if oldest is None else _age(now, oldest), keys=key_rows))
    if not class_rows:  # nothing waiting or under way: the default class, empty
        class_rows = [ClassQueue(name=runtime.config.scheduler.default_class, waiting=0, oldest_wait_seconds=None,
                                 keys=[KeyQueue(key="-", waiting=0, in_flight=0, oldest_wait_seconds=None)])]
    scheduler = runtime.scheduler
    capacity = pool_capacity(runtime.pool)
    return QueueState(
        waiting=scheduler.queued,
        in_flight=scheduler.in_flight,
        capacity=capacity.usable,
        slots_out=capacity.out,
        out=list(capacity.why),
        oldest_wait_seconds=_age(now, waiting[0].phase_since) if waiting else None,
        classes=class_rows,
        waiting_requests=[WaitingRequest(request_id=t.request_id, key=t.key, priority_class=t.klass, model=t.model,
                                         waited_seconds=_age(now, t.phase_since), session=t.session)
                          for t in waiting[:LIVE_SHOWN]],
        retry_waits=[RetryWait(request_id=t.request_id, key=t.key, model=t.model, attempts=t.attempts,
                               seconds_left=round(max(0.0, t.retry_until - now), 3)) for t in retrying[:LIVE_SHOWN]],
        not_shown=max(0, len(waiting) - LIVE_SHOWN) + max(0, len(retrying) - LIVE_SHOWN),
    )


def _sessions(now: float, trips: list) -> list[SessionQueue]:
    """One key's waiting requests (oldest first) by session, the most waiting first."""
    by_session: dict[str, list] = {}
    for trip in trips:
        by_session.setdefault(trip.session, []).append(trip)
    rows = sorted(by_session.items(), key=lambda item: (-len(item[1]), item[1][0].phase_since))
    return [SessionQueue(session=name, waiting=len(found), oldest_wait_seconds=_age(now, found[0].phase_since))
            for name, found in rows[:SESSIONS_SHOWN]]


def _age(now: float, since: float) -> float:
    return round(max(0.0, now - since), 3)


def _row(row: Finished) -> RequestRow:
    return RequestRow(
        seq=row.seq, at=row.at, finished_at=round(row.at + row.total, 3),
        request_id=row.request_id, key=row.key, model=row.model, outcome=row.outcome,
        status=row.status, attempts=row.attempts, kernels=list(row.kernels), queue_wait=round(row.queue_wait, 6),
        kernel_time=round(row.kernel_time, 6), retry_wait=round(row.retry_wait, 6), total=round(row.total, 6),
        overhead=round(row.overhead, 6), session=row.session, pieces=row.pieces,
    )


# --- models, config, OpenClaw --------------------------------------------------------------------


def _models(status: Status) -> list[ModelState]:
    offered = [ModelState(id=m.id, kernel_model=m.kernel_model, source=m.source, available=True,
                          unconfirmed=m.unconfirmed, reason=None) for m in status.models]
    # The catalog lists what models.map names but the kernel does not, beside what it offers.
    missing = [ModelState(id=m.id, kernel_model=m.kernel_model, source="map", available=False,
                          unconfirmed=False, reason=m.reason) for m in status.unavailable]
    return offered + missing


def _config(runtime: Runtime, shown: ConfigStatus, config: Config) -> ConfigState:
    secrets = _secrets(config)
    refused = runtime.last_refused_reload
    last = shown.last_reload
    return ConfigState(
        path=shown.path,
        generation=shown.generation,
        applied_at=runtime.config_applied_at,
        last_reload_ok=None if last is None else last.ok,
        last_refused=None if refused is None else Refusal(
            at=refused.at, reason=refused.reason,
            problems=[_shown_problem(p, secrets) for p in refused.problems[:PROBLEMS_SHOWN]],
        ),
    )


def _openclaw(runtime: Runtime, config: Config) -> OpenClawState:
    sync = runtime.last_sync
    return OpenClawState(
        sync_enabled=config.openclaw.sync,
        path=runtime.openclaw_path(),
        outcome=None if sync is None else sync.outcome,
        message=None if sync is None else sync.message,
        at=None if sync is None else sync.at,
    )


# --- keeping secrets off the page ----------------------------------------------------------------

_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# A refused edit's problems may quote the value at fault; under these keys that value may be a secret.
_SECRET_KEYS = re.compile(r"(auth\.keys|api_key|apiKey|password|token)", re.IGNORECASE)


def _secrets(config: Config) -> list[str]:
    found = [k for k in config.auth.keys if k]
    api_key = getattr(config.openclaw, "api_key", None)
    if api_key:
        found.append(api_key)
    return found


def scrub_secrets(text: str, secrets: list[str]) -> str:
    """``text`` with every configured key replaced by ``***`` and any URL password dropped."""
    for secret in secrets:
        if len(secret) >= 4:  # shorter "keys" would blank ordinary words; the schema asks for long ones
            text = text.replace(secret, "***")
    return _URL_USERINFO.sub(lambda m: m.group(1) + "***@", text)


def _shown_problem(problem: str, secrets: list[str]) -> str:
    found = _SECRET_KEYS.search(problem)
    if found:
        # Keep where and which key; drop what it says about the value, which may be the secret itself.
        problem = problem[: found.end()] + ": (details in the journal: they may quote a secret)"
    problem = scrub_secrets(problem, secrets)
    return problem if len(problem) <= PROBLEM_LIMIT else problem[: PROBLEM_LIMIT - 1] + "…"

