"""The typed, immutable configuration object the rest of aiosd reads (built by ``loader``).

Each class mirrors one section of the JSON Schema, field for field (tests/config/test_schema_and_settings.py
holds them to it); a default written here is read from the schema, where every default lives.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from aiosd.config.schema import schema_default

ToolMode = Literal["prompt", "native", "none"]

# kernel.max_answer_bytes' default (8 MiB): the kernel asks its LLM for at most 1000 tokens, so a real
# answer (or model list) is a few KB; 8 MiB leaves room for any kernel configured otherwise.
DEFAULT_MAX_ANSWER_BYTES: int = schema_default("kernel.max_answer_bytes")
TextDroppedPolicy = Literal["retry_without_tools", "error"]


@dataclass(frozen=True, slots=True)
class KernelSettings:
    url: str
    agent_name: str
    timeout: float
    connect_timeout: float
    max_concurrency: int
    queue_timeout: float
    ready_window: float
    probe_interval: float  # 0 means no canary
    probe_model: str | None
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES  # larger kernel answers are refused unread
    max_models: int = schema_default("kernel.max_models")  # entries taken from its model list, first by name
    # One member of the pool (``kernels:``; ``kernel:`` alone is a pool of one): its name in logs,
    # status and metrics, its share when loads tie, and free-form labels shown in status.
    name: str = "kernel"  # not a file default: a kernel is named after its URL
    weight: float = float(schema_default("kernels[].weight"))
    labels: tuple[tuple[str, str], ...] = schema_default("kernels[].labels")
    # Send agent_name as "<agent_name>.<key name>" so the kernel's logs and memory tell keys apart.
    agent_name_per_key: bool = schema_default("kernel.agent_name_per_key")
    # Append ".<session short form>" for requests with a session id: the kernel's logs tell conversations apart.
    agent_name_per_session: bool = schema_default("kernel.agent_name_per_session")
    # The most LLM tokens the kernel lets one answer have; longer answers come back cut (continuation).
    answer_token_cap: int = schema_default("kernel.answer_token_cap")

    @property
    def shown_url(self) -> str:
        """``url`` as it may appear in a log line, a status page or an error: without a password."""
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    initial: float
    multiplier: float
    max: float
    jitter: float


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_retries: int
    on_status: frozenset[int]
    backoff: BackoffSettings
    budget: float


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """What a model entry may set and ``models.defaults`` supplies otherwise."""

    tools: ToolMode
    on_text_dropped: TextDroppedPolicy
    context_window: int
    max_tokens: int
    input: tuple[str, ...]
    reasoning: bool

    def traits(self) -> dict:
        """These fields as keywords, to build a ModelSpec on top of them."""
        return {f.name: getattr(self, f.name) for f in fields(ModelTraits)}


ModelDefaults = ModelTraits  # ``models.defaults``: the traits of every model that sets none


@dataclass(frozen=True, slots=True)
class ModelSpec(ModelTraits):
    """One model as OpenClaw sees it, and where aiosd routes it."""

    id: str  # the OpenClaw-facing id (provider-local: "sonnet", not "aios/sonnet")
    kernel_model: str  # sent as llms[].name; the kernel routes on this only
    backend: str | None
    name: str  # display name in OpenClaw's list
    source: Literal["map", "discovery"]
    priority: str | None = None  # models.map.<id>.priority: the scheduler class of its requests


@dataclass(frozen=True, slots=True)
class ModelSettings:
    discover: bool
    refresh_interval: float
    defaults: ModelDefaults
    map: tuple[ModelSpec, ...]  # in file order
    max_discovered: int = schema_default("models.max_discovered")  # discovered models offered, first by name

    def spec_for_discovered(self, kernel_name: str, backend: str | None) -> ModelSpec:
        """The ModelSpec for a model found at the kernel's /core/llms/list."""
        return ModelSpec(
            **self.defaults.traits(),
            id=kernel_name,
            kernel_model=kernel_name,
            backend=backend,
            name=f"{kernel_name} (via AIOS)",
            source="discovery",
        )


@dataclass(frozen=True, slots=True)
class OpenClawSettings:
    sync: bool
    config_path: str | None  # None: where OpenClaw itself looks
    provider_id: str
    interval: float
    base_url: str | None
    api_key: str | None
    create: bool
    allowlist: Literal["auto", "model_policy", "none"]
    allow_entries: Literal["wildcard", "each"]
    backup: bool
    # None: from aiosd's own worst case for one request
    timeout_seconds: int | None = schema_default("openclaw.timeout_seconds")


@dataclass(frozen=True, slots=True)
class ClientKey:
    """Who an API key belongs to, for the scheduler: never the secret itself."""

    name: str
    priority: str | None = None  # scheduler class; None: scheduler.default_class
    weight: float = float(schema_default("auth.keys[].weight"))  # share within its class against other keys
    max_in_flight: int | None = None
    max_queued: int | None = None
    max_in_flight_per_session: int | None = None  # per session (conversation) of this key


ANONYMOUS = ClientKey("anonymous")  # every request when auth is off


@dataclass(frozen=True, slots=True)
class AuthSettings:
    keys: tuple[str, ...]  # resolved secrets; never logged
    clients: tuple[ClientKey, ...] = ()  # one per key, same order

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def client_at(self, index: int | None) -> ClientKey:
        """The ``ClientKey`` of ``keys[index]``; ``ANONYMOUS`` for None (auth off)."""
        if index is None or not 0 <= index < len(self.clients):
            return ANONYMOUS
        return self.clients[index]


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """``scheduler:``: priority classes (highest first), aging, and the header that may lower a class."""

    classes: tuple[str, ...] = schema_default("scheduler.classes")
    default_class: str = schema_default("scheduler.default_class")
    aging: float = schema_default("scheduler.aging")  # seconds of waiting that raise a request one class; 0: never
    priority_header: str = schema_default("scheduler.priority_header")
    # Sessions (conversations within a key): how long a request waits for its session's kernel,
    # how many sessions are remembered at once, and after how long idle one is forgotten.
    affinity_wait: float = schema_default("scheduler.affinity_wait")
    max_sessions: int = schema_default("scheduler.max_sessions")
    session_idle: float = schema_default("scheduler.session_idle")

    def index_of(self, name: str | None) -> int | None:
        try:
            return self.classes.index(name) if name is not None else None
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """``health:``: outlier ejection of pool members (Envoy's consecutive gateway failures)."""

    consecutive_failures: int = schema_default("health.consecutive_failures")
    base_ejection: float = schema_default("health.base_ejection")
    max_ejection: float = schema_default("health.max_ejection")


@dataclass(frozen=True, slots=True)
class ContinuationSettings:
    """``continuation:``: asking the kernel for the rest of an answer it cut, and joining the pieces."""

    enabled: bool = schema_default("continuation.enabled")
    max_calls: int = schema_default("continuation.max_calls")  # kernel calls per answer, the first included


@dataclass(frozen=True, slots=True)
class ServerSettings:
    max_body_bytes: int
    drain_timeout: float
    reload_debounce: float
    max_connections: int
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    body_deadline: float  # the whole body, however steadily it trickles
    send_timeout: float  # an answer the client does not read
    keep_alive_timeout: float
    event_loop: Literal["uvloop", "asyncio"]  # read at start only
    open_metrics: Literal["key", "loopback"]  # with auth.keys: who may read /metrics and /readyz without a key
    allowed_hosts: tuple[str, ...]  # besides aiosd's own names; "*" for any
    allowed_origins: tuple[str, ...]  # browser origins allowed to call aiosd


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated configuration. Replaced as one object on reload, never mutated."""

    listen_host: str
    listen_port: int
    allow_remote: bool
    kernel: KernelSettings
    retry: RetrySettings
    models: ModelSettings
    openclaw: OpenClawSettings
    auth: AuthSettings
    server: ServerSettings
    log_level: str
    # None: $STATE_DIRECTORY, $XDG_STATE_HOME/aiosd, ~/.local/state/aiosd
    state_dir: str | None = schema_default("state_dir")
    source_path: Path | None = field(default=None, compare=False)
    # The pool: every kernel, each with the shared ``kernel:`` settings and its own url/slots.
    # Empty means a pool of one: ``kernel`` itself (see ``pool``).
    kernels: tuple[KernelSettings, ...] = schema_default("kernels")
    scheduler: SchedulerSettings = SchedulerSettings()
    health: HealthSettings = HealthSettings()
    continuation: ContinuationSettings = ContinuationSettings()

    @property
    def pool(self) -> tuple[KernelSettings, ...]:
        """The kernels aiosd forwards to (at least one)."""
        return self.kernels or (self.kernel,)

    @property
    def shown_pool(self) -> str:
        """The kernels aiosd forwards to, as a log line or ``aiosd check`` names them (no passwords):
        ``kernel URL``, or with ``kernels:`` each ``URL`` (with its name when it has its own)."""
        if not self.kernels:
            return f"kernel {self.kernel.shown_url}"
        shown = [k.shown_url if k.name == urlsplit(k.url).netloc.rpartition("@")[2] else f"{k.name} {k.shown_url}"
                 for k in self.kernels]
        return f"kernels {', '.join(shown)}" if len(shown) > 1 else f"kernel {shown[0]}"

    @property
    def listen(self) -> str:
        return format_listen(self.listen_host, self.listen_port)

    @property
    def own_base_url(self) -> str:
        """The /v1 URL OpenClaw should call, from the listen address."""
        if self.openclaw.base_url:
            return self.openclaw.base_url.rstrip("/")
        host = self.listen_host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.listen_port}/v1"


def format_listen(host: str, port: int) -> str:
    """``host:port`` as written in ``listen`` (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, so it can be shown anywhere."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def exposed_without_auth(host: str, auth: AuthSettings, allow_remote: bool) -> bool:
    """Whether serving on ``host`` would let anyone who can reach it use the LLMs without a key
    (a non-loopback address, no ``auth.keys``, and no ``allow_remote: true`` accepting that)."""
    return not auth.enabled and not allow_remote and not is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_config_path() -> Path:
    """--config, else $AIOSD_CONFIG, else /etc/aiosd.yaml (the CLI passes --config in)."""
    return Path(os.environ.get("AIOSD_CONFIG") or "/etc/aiosd.yaml")
