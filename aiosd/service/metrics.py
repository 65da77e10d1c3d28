"""Prometheus metrics: one registry per daemon, every label from a closed set."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    exposition,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aiosd.kernel.pool import KernelPool
from aiosd.kernel.scheduler import Scheduler

# The classic text format every scraper reads (prometheus-client >= 0.22 calls 1.0.0 "latest", which
# only Prometheus 3 names; generate_latest's output is 0.0.4 as long as names are plain ASCII).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

# Every model id a client sends that aiosd does not expose is counted under this one label value.
UNKNOWN_MODEL = "_unknown"
RELOAD_RESULTS = ("ok", "refused")
# openclaw.sync.Outcome, every value
SYNC_RESULTS = ("written", "created", "unchanged", "missing", "busy", "refused", "removed", "dry_run")
CANARY_RESULTS = ("answered", "failed")
# service.tasks, named by the runtime
BACKGROUND_TASKS = ("model-refresh", "openclaw-sync", "kernel-canary", "kernel-health")
STATUS_CLASSES = ("ok", "unreachable", "timeout", "429", "1xx", "2xx", "3xx", "4xx", "5xx", "other")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "aiosd_requests", "Chat completion requests by model and outcome.", ["model", "outcome"], registry=r
        )
        self.request_duration = Histogram(
            "aiosd_request_duration_seconds", "Whole request time, queue and retries included.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.kernel_call_duration = Histogram(
            "aiosd_kernel_call_duration_seconds", "One /query call to the kernel.", ["result"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "aiosd_queue_wait_seconds", "Time a kernel call waited for a free slot in aiosd's queue.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.retries = Counter(
            "aiosd_retries", "Kernel calls retried, by the status class that caused it.", ["status_class"], registry=r
        )
        self.retry_wait = Counter(
            "aiosd_retry_wait_seconds", "Time spent waiting between retries (rate limits mostly).", registry=r
        )
        self.in_flight = Gauge("aiosd_kernel_calls_in_flight", "Kernel calls in flight.", registry=r)
        self.queued = Gauge("aiosd_kernel_calls_queued", "Kernel calls waiting in aiosd's queue.", registry=r)
        self.reloads = Counter("aiosd_config_reloads", "Config reloads by result.", ["result"], registry=r)
        self.syncs = Counter("aiosd_openclaw_syncs", "OpenClaw config syncs by result.", ["result"], registry=r)
        self.overhead = Histogram(
            "aiosd_overhead_seconds",
            "aiosd's own time per request: not spent waiting on the kernel, queue or retries.",
            buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.models_exposed = Gauge("aiosd_models_exposed", "Models aiosd currently exposes.", registry=r)
        self.kernel_ready = Gauge("aiosd_kernel_ready", "1 while the kernel has answered recently.", registry=r)
        self.canaries = Counter(
            "aiosd_canary_queries", "Canary /query calls (kernel.probe_interval) by result.", ["result"], registry=r
        )
        self.continued = Counter(
            "aiosd_continued_answers", "Answers the kernel cut at its token cap that aiosd continued, by how the "
            "chain ended: complete, or still cut (max_tokens, max_calls, deadline, max_size, failed).", ["outcome"],
            registry=r,
        )
        self.continuation_calls = Counter(
            "aiosd_continuation_calls", "Kernel calls made to continue answers the kernel cut.", registry=r
        )
        self.task_restarts = Counter(
            "aiosd_background_task_restarts", "Background loops (model refresh, OpenClaw sync, canary) that died "
            "and were restarted.", ["task"], registry=r
        )
        # Every series of a closed label set exists from the start, so rate() sees the first event.
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        for result in SYNC_RESULTS:
            self.syncs.labels(result)
        for result in CANARY_RESULTS:
            self.canaries.labels(result)
        for task in BACKGROUND_TASKS:
            self.task_restarts.labels(task)
        # labels() takes a lock and builds a key on every call; the request path asks for the same
        # few children each time, so keep them (bounded like the series: known model ids only).
        self._request_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    def watch_pool(self, pool: KernelPool, scheduler: Scheduler) -> None:
        """Per kernel and per class/key figures, read from ``pool`` and ``scheduler`` at each scrape
        (kernel and key names come from the config: a closed set)."""
        self.registry.register(_PoolCollector(pool, scheduler))

    def requests_child(self, model: str, outcome: str) -> Counter:
        """``requests.labels(model, outcome)``, cached."""
        child = self._request_children.get((model, outcome))
        if child is None:
            child = self._request_children[(model, outcome)] = self.requests.labels(model, outcome)
        return child

    def request_duration_child(self, model: str) -> Histogram:
        """``request_duration.labels(model)``, cached."""
        child = self._duration_children.get(model)
        if child is None:
            child = self._duration_children[model] = self.request_duration.labels(model)
        return child

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE


def status_class(status: int | None) -> str:
    """A kernel status as one of ``STATUS_CLASSES``: 0 is no usable answer, None aiosd's own deadline."""
    if status is None:
        return "timeout"
    if status == 0:
        return "unreachable"
    if status == 429:
        return "429"
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class _PoolCollector:
    """Reads the pool and the scheduler when /metrics is scraped."""

    def __init__(self, pool: KernelPool, scheduler: Scheduler) -> None:
        self._pool = pool
        self._scheduler = scheduler

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        k = ["kernel"]
        in_flight = GaugeMetricFamily("aiosd_pool_kernel_in_flight", "Calls in flight on each kernel.", labels=k)
        slots = GaugeMetricFamily("aiosd_pool_kernel_slots", "max_concurrency of each kernel.", labels=k)
        healthy = GaugeMetricFamily(
            "aiosd_pool_kernel_healthy", "1 while the kernel is in the rotation, 0 while ejected.", labels=k)
        latency = GaugeMetricFamily(
            "aiosd_pool_kernel_latency_seconds", "Moving average of each kernel's call time.", labels=k)
        ejections = CounterMetricFamily("aiosd_pool_kernel_ejections", "Times each kernel was ejected.", labels=k)
        calls = CounterMetricFamily("aiosd_pool_kernel_calls", "Calls made to each kernel.", labels=k)
        failures = CounterMetricFamily("aiosd_pool_kernel_failures", "Calls to each kernel that failed.", labels=k)
        for member in self._pool:
            name = [member.name]
            in_flight.add_metric(name, member.in_flight)
            slots.add_metric(name, member.slots)
            healthy.add_metric(name, 0 if member.health.ejected else 1)
            if member.latency is not None:
                latency.add_metric(name, member.latency)
            ejections.add_metric(name, member.health.ejections_total)
            calls.add_metric(name, member.calls_total)
            failures.add_metric(name, member.failures_total)
        yield from (in_flight, slots, healthy, latency, ejections, calls, failures)
        ck = ["class", "key"]
        queued = GaugeMetricFamily("aiosd_scheduler_queued", "Requests waiting, by class and API key name.", labels=ck)
        admitted = CounterMetricFamily(
            "aiosd_scheduler_admitted", "Kernel slots handed out, by class and key.", labels=ck)
        rejected = CounterMetricFamily(
            "aiosd_scheduler_rejected", "Requests refused by a per-key limit (429).", labels=ck)
        timed_out = CounterMetricFamily(
            "aiosd_scheduler_timed_out", "Requests that waited past kernel.queue_timeout.", labels=ck)
        wait = CounterMetricFamily(
            "aiosd_scheduler_wait_seconds", "Time spent waiting for a slot, by class and key.", labels=ck)
        classes = self._scheduler.classes_status()
        for item in classes:
            for key in item["keys"]:
                labels = [item["class"], key["key"]]
                queued.add_metric(labels, key["queued"])
                admitted.add_metric(labels, key["admitted"])
                rejected.add_metric(labels, key["rejected"])
                timed_out.add_metric(labels, key["timed_out"])
                wait.add_metric(labels, key["wait_seconds_total"])
        yield from (queued, admitted, rejected, timed_out, wait)
        yield from _session_metrics(self._scheduler, classes)


def _session_metrics(scheduler: Scheduler, classes: list[dict]) -> Iterator[Metric]:
    """Counts of sessions, never one series per session: per key, per kernel, and affinity kept or moved."""
    per_key = GaugeMetricFamily(
        "aiosd_scheduler_sessions", "Sessions (conversations) remembered now, by API key name.", labels=["key"])
    seen: set[str] = set()
    for item in classes:
        for key in item["keys"]:
            if key["key"] not in seen:
                seen.add(key["key"])
                per_key.add_metric([key["key"]], key["sessions_active"])
    status = scheduler.sessions_status()
    per_kernel = GaugeMetricFamily(
        "aiosd_pool_kernel_sessions", "Sessions whose calls go to each kernel.", labels=["kernel"])
    for name, count in status["per_kernel"].items():
        per_kernel.add_metric([name], count)
    affinity = CounterMetricFamily(
        "aiosd_scheduler_session_calls", "Kernel slots handed to sessions: on the kernel of their previous "
        "call (kept), on another (moved).", labels=["affinity"])
    affinity.add_metric(["kept"], status["affinity_kept"])
    affinity.add_metric(["moved"], status["affinity_moved"])
    forgotten = CounterMetricFamily(
        "aiosd_scheduler_sessions_forgotten", "Sessions forgotten (idle past scheduler.session_idle, or to make "
        "room under scheduler.max_sessions).")
    forgotten.add_metric([], status["forgotten"])
    yield from (per_key, per_kernel, affinity, forgotten)
