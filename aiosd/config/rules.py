"""The rules a JSON Schema cannot express (ranges across keys, distinct names, known classes), on a ``Config``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiosd.config.auth_keys import Finding
from aiosd.config.schema import model_id_problem
from aiosd.config.settings import Config, exposed_without_auth

Rule = Callable[[Config, dict[str, Any]], Iterator[Finding]]


def listen_port(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    if not 0 < config.listen_port < 65536:
        yield ("listen",), f"port must be between 1 and 65535, got {config.listen_port}"


def kernel_timeout(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    if config.kernel.timeout <= 0:
        yield ("kernel", "timeout"), "must be more than 0"


def backoff_cap(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    backoff = config.retry.backoff
    if backoff.max < backoff.initial:
        initial = filled["retry"]["backoff"]["initial"]  # as written: "20s", not 20.0
        yield ("retry", "backoff", "max"), f"must be at least retry.backoff.initial ({initial})"


def mapped_models(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    for spec in config.models.map:
        why = model_id_problem(spec.id)
        if why:  # what the schema's pattern cannot see (a trailing newline)
            yield ("models", "map", spec.id), f"model id {spec.id!r}: {why}"
        if spec.max_tokens > spec.context_window:
            yield (("models", "map", spec.id, "max_tokens"),
                   f"{spec.max_tokens} is more than the context_window ({spec.context_window})")


def refresh_interval(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    if config.models.refresh_interval <= 0:
        yield ("models", "refresh_interval"), "must be more than 0"


def server_timeouts(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    server = config.server
    for key, seconds in (("header_timeout", server.header_timeout), ("body_timeout", server.body_timeout),
                         ("body_deadline", server.body_deadline), ("send_timeout", server.send_timeout),
                         ("keep_alive_timeout", server.keep_alive_timeout)):
        if seconds <= 0:
            yield ("server", key), "must be more than 0"


def openclaw_interval(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    if config.openclaw.sync and config.openclaw.interval <= 0:
        yield ("openclaw", "interval"), "must be more than 0"


def _classes(config: Config) -> str:
    return ", ".join(config.scheduler.classes)


def default_class(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    scheduler = config.scheduler
    if scheduler.default_class not in scheduler.classes:
        yield (("scheduler", "default_class"),
               f"{scheduler.default_class!r} is not one of scheduler.classes ({_classes(config)})")


def model_priorities(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    for spec in config.models.map:
        if spec.priority is not None and spec.priority not in config.scheduler.classes:
            yield (("models", "map", spec.id, "priority"),
                   f"{spec.priority!r} is not one of scheduler.classes ({_classes(config)})")


def ejection_cap(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    if config.health.max_ejection < config.health.base_ejection:
        yield ("health", "max_ejection"), f"must be at least health.base_ejection ({filled['health']['base_ejection']})"


def kernel_names(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    for index, member in enumerate(config.kernels):
        if any(other.name == member.name for other in config.kernels[:index]):
            yield ("kernels", index, "name"), f"two kernels are named {member.name!r}; give each a distinct name"


def key_clients(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    clients = config.auth.clients
    for index, client in enumerate(clients):
        if client.priority is not None and client.priority not in config.scheduler.classes:
            yield (("auth", "keys", index, "priority"),
                   f"{client.priority!r} is not one of scheduler.classes ({_classes(config)})")
        if client.name == "anonymous":
            yield (("auth", "keys", index, "name"),
                   "'anonymous' is how aiosd names requests without a key; choose another name")
        elif any(other.name == client.name for other in clients[:index]):
            yield ("auth", "keys", index, "name"), f"two keys are named {client.name!r}; give each a distinct name"


def exposure(config: Config, filled: dict[str, Any]) -> Iterator[Finding]:
    if exposed_without_auth(config.listen_host, config.auth, config.allow_remote):
        yield (("listen",), f"{config.listen_host} is not a loopback address and auth.keys is empty: anyone who "
               "can reach it could use your LLMs; add auth.keys, or set allow_remote: true to accept that")


# In the order their problems are listed; the secrets of auth.keys are read (and reported) between the two.
BEFORE_KEYS: tuple[Rule, ...] = (listen_port, kernel_timeout, backoff_cap, mapped_models, refresh_interval,
                                 server_timeouts, openclaw_interval)
AFTER_KEYS: tuple[Rule, ...] = (default_class, model_priorities, ejection_cap, kernel_names, key_clients, exposure)
