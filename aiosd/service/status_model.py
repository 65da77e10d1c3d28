"""The one status model: the runtime's state as typed structs that /status (JSON), ``aiosd status``
(text) and the status page all render from.

Field order is /status's key order. Fields an older daemon may not send have defaults, so
``aiosd status`` reads any daemon's answer (``from_json``).
"""

from __future__ import annotations

from typing import Any

import msgspec


class LastReload(msgspec.Struct):
    ok: bool
    at: float  # wall clock
    reason: str  # "start", "file changed", "SIGHUP"
    problems: list[str] = []
    notes: list[str] = []


class ConfigStatus(msgspec.Struct):
    path: str | None
    generation: int
    listen: str  # the address bound: a reload cannot move it
    listen_pending: str | None = None  # a listen from a reload, applied at the next restart
    last_reload: LastReload | None = None


class ModelStatus(msgspec.Struct):
    id: str
    kernel_model: str
    source: str  # "map" or "discovery"
    tools: str
    unconfirmed: bool = False  # offered from the remembered list; the kernel has not confirmed it yet


class UnavailableStatus(msgspec.Struct):
    """A models.map entry whose kernel model the kernel does not list."""

    id: str
    kernel_model: str
    reason: str | None = None


class ModelRefreshStatus(msgspec.Struct):
    ok: bool
    message: str
    kernel_list_known: bool
    at: float  # wall clock
    seconds_ago: float


class RememberedModels(msgspec.Struct):
    path: str
    models: int | None
    saved_at: float | None
    in_use: bool


class LatencyStatus(msgspec.Struct):
    """Durations (seconds) of the kernel's last answered calls."""

    count: int
    p50: float
    p90: float
    max: float
    last: float


class FailureStatus(msgspec.Struct):
    seconds_ago: float
    message: str | None


class CanaryLast(msgspec.Struct):
    at: float  # wall clock
    answered: bool | None
    message: str | None


class CanaryStatus(msgspec.Struct):
    enabled: bool
    interval_seconds: int | float
    sent: int
    in_flight_seconds: float | None
    last: CanaryLast | None


class FirstKernelStatus(msgspec.Struct):
    """The first kernel of the pool (a pool of one: the kernel); ``ready`` is the pool's."""

    url: str
    ready: bool
    reason: str
    last_answer_seconds_ago: float | None = None
    recent_latency_seconds: LatencyStatus | None = None
    last_failure: FailureStatus | None = None
    canary: CanaryStatus | None = None


class CallsStatus(msgspec.Struct):
    in_flight: int
    queued: int
    max_concurrency: int  # the slots usable now: an ejected kernel's are out while another kernel is healthy
    retries_last_5m: int
    slots_out: int = 0  # slots of ejected kernels, not counted in max_concurrency
    out: list[str] = []  # why, one entry per kernel out: "k1 (2 slots): ejected, connection refused"


class SyncStatus(msgspec.Struct):
    """The last OpenClaw sync."""

    outcome: str
    path: str | None
    message: str
    at: float


class TaskStatus(msgspec.Struct):
    """One supervised background loop."""

    running: bool
    restarts: int
    last_error: str | None
    last_error_at: float | None


class PoolKernelStatus(msgspec.Struct, kw_only=True):
    """One kernel of the pool (``PoolKernel.status()``) with its readiness as /readyz judges it."""

    name: str
    url: str  # password redacted
    labels: dict[str, str]
    weight: int | float
    health: str  # "healthy", "ejected" while its backoff runs, "probing" until a probe succeeds
    consecutive_failures: int
    ejections: int
    ejected_for_seconds: int | float | None
    ejection_cause: str | None = None  # while ejected or probing: the failure that ejected it, in a few words
    in_flight: int
    max_concurrency: int
    removed: bool
    models: list[str] | None  # its last model list, None before one
    latency_seconds: float | None  # moving average
    calls: int
    failures: int
    last_answer_seconds_ago: float | None
    last_failure: FailureStatus | None
    ready: bool
    reason: str


class SessionQueueStatus(msgspec.Struct):
    """One session of a key waiting in a class: its short form (8 hex characters), never its id."""

    session: str
    queued: int
    in_flight: int
    kernel: str | None  # the kernel of its last call
    oldest_wait_seconds: float


class KeyQueueStatus(msgspec.Struct):
    """One API key (its name, never the secret) within a priority class."""

    key: str
    queued: int
    key_in_flight: int
    admitted: int
    rejected: int
    timed_out: int
    cancelled: int
    wait_seconds_mean: float | None
    wait_seconds_total: float
    sessions_active: int = 0  # its sessions remembered now (all classes)
    sessions: list[SessionQueueStatus] = []  # waiting in this class, the most waiting first


class ClassStatus(msgspec.Struct):
    name: str = msgspec.field(name="class")
    queued: int = 0
    keys: list[KeyQueueStatus] = []


class SessionsStatus(msgspec.Struct):
    """The scheduler's table of sessions (conversations within keys)."""

    active: int
    max_sessions: int
    idle_seconds: int | float
    affinity_wait_seconds: int | float
    per_kernel: dict[str, int]  # sessions whose calls go to each kernel
    affinity_kept: int  # calls of a session on the kernel of its previous call
    affinity_moved: int  # calls of a session moved to another kernel
    forgotten: int
    overflow: int  # requests counted key-level because the table was full of busy sessions


class Status(msgspec.Struct, kw_only=True):
    """Everything /status says, in its order."""

    version: str
    uptime_seconds: float
    started_at: float = 0.0  # wall clock; not shown by aiosd status
    config: ConfigStatus
    models: list[ModelStatus] = []
    unavailable: list[UnavailableStatus] = []
    model_refresh: ModelRefreshStatus | None = None
    remembered_models: RememberedModels | None = None
    kernel: FirstKernelStatus
    calls: CallsStatus
    openclaw_sync: SyncStatus | None = None
    background_tasks: dict[str, TaskStatus] = {}
    kernels: list[PoolKernelStatus] = []
    classes: list[ClassStatus] = []
    sessions: SessionsStatus | None = None

    def to_builtins(self) -> dict[str, Any]:
        """/status's JSON body as plain data."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data


def from_json(data: object) -> Status:
    """A /status answer (as decoded JSON) as the model; raises ``msgspec.ValidationError`` for one
    that is not aiosd's."""
    return msgspec.convert(data, Status)
