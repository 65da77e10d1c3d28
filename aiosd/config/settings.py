"""The typed, immutable configuration object the rest of aiosd reads (built by ``loader``)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

ToolMode = Literal["prompt", "native", "none"]

# kernel.max_answer_bytes' default: the kernel asks its LLM for at most 1000 tokens, so a real
# answer (or model list) is a few KB; 8 MiB leaves room for any kernel configured otherwise.
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
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


@dataclass(frozen=True, slots=True)
class ModelSettings:
    discover: bool
    refresh_interval: float
    defaults: ModelDefaults
    map: tuple[ModelSpec, ...]  # in file order

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
    timeout_seconds: int | None = None  # None: from aiosd's own worst case for one request


@dataclass(frozen=True, slots=True)
class AuthSettings:
    keys: tuple[str, ...]  # resolved secrets; never logged

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


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
    keep_alive_timeout: float
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
    state_dir: str | None = None  # None: $STATE_DIRECTORY, $XDG_STATE_HOME/aiosd, ~/.local/state/aiosd
    source_path: Path | None = field(default=None, compare=False)

    @property
    def listen(self) -> str:
        return format_listen(self.listen_host, self.listen_port)

    @property
    def listens_on_loopback(self) -> bool:
        return is_loopback_host(self.listen_host)

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
