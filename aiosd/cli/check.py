"""``aiosd check --kernel [--test]``: the whole chain checked line by line (kernel, models, OpenClaw's file, a chat).

Each line is one check, ``ok``, ``warn`` or ``FAIL``, printed as it completes. The kernel part is
a function of one kernel's settings (``check_kernel``), run for every kernel the config names;
the model mappings are then checked against what the kernels list together.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO
from urllib.parse import urlsplit

from aiosd.config.durations import format_duration
from aiosd.config.settings import Config, KernelSettings, ModelSpec, OpenClawSettings
from aiosd.errors import AiosdError
from aiosd.kernel.client import KernelClient
from aiosd.models.catalog import ModelCatalog
from aiosd.openclaw.file import OpenClawFileError, parse_document, read_snapshot, resolve_openclaw_path
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call

if TYPE_CHECKING:
    import httpx

Status = Literal["ok", "warn", "FAIL"]
# The check should answer soon when the kernel hangs: its own deadlines, not the daemon's 600 s.
LIST_TIMEOUT = 10.0
TEST_TIMEOUT = 60.0
TEST_PROMPT = "This is a connection test. Reply with the single word: pong"
_SHOWN_NAMES = 12
_ANSWER_LIMIT = 200

# `aiosd check` exits 1 for an invalid config (before any of these checks run).
EXIT_OK, EXIT_CHECK_FAILED = 0, 2


@dataclass
class Report:
    """The check lines, printed as they come; ``failed`` once any line is FAIL."""

    out: TextIO
    failed: bool = False
    lines: list[tuple[Status, str]] = field(default_factory=list)

    def add(self, status: Status, text: str) -> None:
        self.lines.append((status, text))
        self.failed |= status == "FAIL"
        print(f"{status:<4}  {text}", file=self.out, flush=True)


@dataclass(frozen=True, slots=True)
class KernelFindings:
    """What one kernel told us: its model list (None when it could not be had)."""

    settings: KernelSettings
    models: list[dict] | None


def kernels_of(config: Config) -> tuple[KernelSettings, ...]:
    """Every kernel the config names (one today: ``kernel``; a ``kernels`` list when the config has one)."""
    many = getattr(config, "kernels", None)
    return tuple(many) if many else (config.kernel,)


async def run_kernel_checks(
    config: Config,
    report: Report,
    *,
    test: bool,
    test_model: str | None = None,
    test_timeout: float = TEST_TIMEOUT,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Everything past the file: each kernel, the mappings, OpenClaw's file, and with ``test`` one chat."""
    env = os.environ if env is None else env
    findings = [await check_kernel(settings, report, transport=transport) for settings in kernels_of(config)]
    exposed = await check_mappings(config, findings, report)
    check_openclaw(config, exposed, report, env=env, kernel_list_known=all(f.models is not None for f in findings))
    if test and not all(f.models is not None for f in findings):
        report.add("warn", "test chat: not sent, as the kernel did not answer")
    elif test:
        await test_chat(config, findings, exposed, report, model_id=test_model, timeout=test_timeout,
                        transport=transport)


# --- one kernel ------------------------------------------------------------------------------


async def check_kernel(
    settings: KernelSettings, report: Report, *, transport: httpx.AsyncBaseTransport | None = None
) -> KernelFindings:
    """Reachable (said in plain words when not), and which models it lists."""
    where = f"kernel {settings.shown_url}"
    parts = urlsplit(settings.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if transport is None:  # an injected transport (tests) has no socket to try
        problem = await tcp_problem(host, port, settings.connect_timeout)
        if problem is not None:
            report.add("FAIL", f"{where}: not reachable: {problem}")
            return KernelFindings(settings, None)
    started = time.monotonic()
    async with KernelClient(settings, transport=transport) as kernel:
        try:
            models = await kernel.list_llms(timeout=min(LIST_TIMEOUT, max(settings.timeout, 1.0)))
        except AiosdError as exc:
            report.add("FAIL", f"{where}: reachable, but listing its models failed: {exc.message}")
            return KernelFindings(settings, None)
    took = time.monotonic() - started
    names = [m["name"] for m in models]
    report.add("ok", f"{where}: reachable, answered /core/llms/list in {format_duration(took)}")
    if names:
        report.add("ok", f"{where}: lists {len(names)} model{'s' if len(names) != 1 else ''}: {_names(names)}")
    else:
        report.add("warn", f"{where}: lists no models (its LLM config is empty?)")
    return KernelFindings(settings, models)


async def tcp_problem(host: str, port: int, timeout: float) -> str | None:
    """Why no TCP connection to host:port opens, in plain words; None when one does."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return f"looking up the host {host!r} took longer than {format_duration(timeout)} (DNS)"
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            return f"the host {host!r} could not be looked up right now (DNS: temporary failure; is the network up?)"
        return f"the host {host!r} is not known (DNS lookup failed; check the name in the URL)"
    reasons: list[str] = []
    for family, _kind, proto, _, address in infos:
        try:
            async with asyncio.timeout(timeout):
                # an IPv4 or IPv6 (host, port, ...): SOCK_STREAM lookups give nothing else
                _, writer = await asyncio.open_connection(str(address[0]), int(address[1]), family=family, proto=proto)
        except TimeoutError:
            reasons.append(f"no answer within {format_duration(timeout)} (kernel.connect_timeout)")
            continue
        except OSError as exc:
            reasons.append(_os_reason(exc))
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return None
    unique = list(dict.fromkeys(reasons))
    said = "; ".join(unique)
    if unique == ["connection refused"]:
        said += f": nothing listens on port {port} of {host} (is the kernel running? is the port right?)"
    return said


def _os_reason(exc: OSError) -> str:
    return {
        errno.ECONNREFUSED: "connection refused",
        errno.EHOSTUNREACH: "no route to the host",
        errno.ENETUNREACH: "the network is unreachable",
        errno.ETIMEDOUT: "the connection timed out",
        errno.EACCES: "not allowed to connect (a firewall or sandbox)",
        errno.EPERM: "not allowed to connect (a firewall or sandbox)",
    }.get(exc.errno or 0, exc.strerror or type(exc).__name__)


# --- the mappings --------------------------------------------------------------------------


async def check_mappings(config: Config, findings: Sequence[KernelFindings], report: Report) -> tuple[ModelSpec, ...]:
    """Each models.map entry present at a kernel; returns the models aiosd would expose now."""
    known = all(f.models is not None for f in findings)
    listed = [m for f in findings for m in (f.models or ())]
    names = {m["name"] for m in listed}
    mapping = config.models.map
    if not mapping and not config.models.discover:
        report.add("FAIL", "models: none exposed (models.map is empty and models.discover is off)")
    if mapping and not known:
        report.add("warn", "models.map: not checked against the kernel (its model list could not be had)")
    elif known:
        for spec in mapping:
            if spec.kernel_model in names:
                report.add("ok", f"models.map.{spec.id}: kernel model {spec.kernel_model!r} is there")
            else:
                report.add("FAIL", f"models.map.{spec.id}: the kernel does not list {spec.kernel_model!r}; "
                                   f"calls to {spec.id} would fail (it lists: {_names(sorted(names))})")

    class _Listed:
        async def list_llms(self) -> list[dict]:
            return listed

    catalog = ModelCatalog(config.models, _Listed())
    if known:
        await catalog.refresh()
    exposed = catalog.models()
    if config.models.discover and known:
        report.add("ok", f"models: aiosd exposes {len(exposed)}: {_names([m.id for m in exposed])}")
    return exposed


# --- OpenClaw's file -------------------------------------------------------------------------


def check_openclaw(
    config: Config, exposed: Sequence[ModelSpec], report: Report, *, env: Mapping[str, str], kernel_list_known: bool
) -> None:
    """Found, parseable, aiosd's provider present and allowed."""
    settings = config.openclaw
    path = resolve_openclaw_path(settings, env)
    how = "openclaw.config_path" if settings.config_path else _lookup_source(env)
    where = f"openclaw {path}"
    # What is missing or stale is a warning: with openclaw.sync the daemon writes it at its first (or next)
    # sync by itself; without, OpenClaw's file is the user's to maintain. FAIL is kept for what stops the
    # chain for good (a file that does not parse, an allowlist nobody will fix).
    missing: Status = "warn"
    document = _openclaw_document(settings, path, how, where, missing, report)
    if document is None:
        return
    provider_id = settings.provider_id
    providers = _get(document, "models", "providers")
    provider = providers.get(provider_id) if isinstance(providers, dict) else None
    if not isinstance(provider, dict):
        sync_note = "" if settings.sync else " (openclaw.sync is off: aiosd does not maintain it)"
        report.add(missing, f"{where}: has no provider {provider_id!r}{sync_note}; the daemon writes it at its "
                            "first sync (or its next, if it runs), 'aiosd sync-openclaw' writes it now")
        ids: list[str] = []
    else:
        ids = _check_provider(config, provider, exposed, where, missing, report, kernel_list_known=kernel_list_known)
    _check_allowlist(document, provider_id, [m.id for m in exposed] or ids, where, report,
                     managed=settings.allowlist != "none", syncing=settings.sync)


def _openclaw_document(
    settings: OpenClawSettings, path: Path, how: str, where: str, missing: Status, report: Report
) -> dict | None:
    """OpenClaw's file parsed, after one line saying it was found; None (the line says why) when it cannot be."""
    try:
        snapshot = read_snapshot(path)
    except OpenClawFileError as exc:
        report.add("FAIL", f"{where}: {exc}")
        return None
    if snapshot.raw is None:
        if settings.sync and settings.create:
            report.add("warn", f"{where}: not there yet ({how}); aiosd creates it at its first sync (openclaw.create)")
        else:
            report.add(missing, f"{where}: not found ({how}); is OpenClaw set up for this user? "
                                "openclaw.config_path names another file (aiosd serves without it, and syncs once "
                                "it exists)")
        return None
    try:
        document = parse_document(snapshot.raw, path)
    except OpenClawFileError as exc:
        report.add("FAIL", f"{where}: found ({how}) but {_after_path(str(exc), path)}")
        return None
    report.add("ok", f"{where}: found ({how}) and parses")
    return document


def _check_provider(
    config: Config, provider: dict, exposed: Sequence[ModelSpec], where: str, missing: Status, report: Report, *,
    kernel_list_known: bool,
) -> list[str]:
    """aiosd's provider entry points at this aiosd and lists its models; returns the model ids it lists."""
    provider_id = config.openclaw.provider_id
    rows = provider.get("models")
    listed = rows if isinstance(rows, list) else []
    ids = [r["id"] for r in listed if isinstance(r, dict) and isinstance(r.get("id"), str)]
    base_url = provider.get("baseUrl")
    if base_url == config.own_base_url:
        report.add("ok", f"{where}: provider {provider_id!r} points at {config.own_base_url} with "
                         f"{len(ids)} model{'s' if len(ids) != 1 else ''}")
    else:
        sync_note = "" if config.openclaw.sync else " (openclaw.sync is off: aiosd does not maintain it)"
        shown = _printable(str(base_url), 100) if base_url is not None else "nothing"
        fix = "; the daemon rewrites it at its next sync" if config.openclaw.sync else ""
        report.add(missing, f"{where}: provider {provider_id!r} points at {shown}, but aiosd serves "
                            f"{config.own_base_url}{sync_note}{fix}")
    if kernel_list_known or not config.models.discover:
        absent = [m.id for m in exposed if m.id not in ids]
        if absent:
            report.add("warn", f"{where}: provider {provider_id!r} does not list {_names(absent)} yet "
                               "(the next sync adds them)")
    return ids


def _check_allowlist(document: dict, provider_id: str, ids: list[str], where: str, report: Report, *,
                     managed: bool, syncing: bool) -> None:
    defaults = _get(document, "agents", "defaults")
    allow = _get(defaults, "modelPolicy", "allow") if isinstance(defaults, dict) else None
    legacy = defaults.get("models") if isinstance(defaults, dict) else None
    wildcard = f"{provider_id}/*"
    found_any = False
    refusal: Status = "FAIL"
    if managed and syncing:
        refusal = "warn"  # the daemon's next sync adds them
        fix = "; aiosd adds its entries at its next sync ('aiosd sync-openclaw' does it now)"
    else:
        fix = f"; add {wildcard} to it (aiosd leaves this allowlist alone: openclaw.sync or openclaw.allowlist)"
    if isinstance(allow, list) and allow:
        found_any = True
        refused = [] if wildcard in allow else [i for i in ids if f"{provider_id}/{i}" not in allow]
        if not refused:
            report.add("ok", f"{where}: agents.defaults.modelPolicy.allow lets {provider_id}/ models through")
        else:
            report.add(refusal,
                       f"{where}: agents.defaults.modelPolicy.allow does not allow "
                       f"{_names([f'{provider_id}/{i}' for i in refused])}: OpenClaw refuses them{fix}")
    if isinstance(legacy, dict) and legacy:
        found_any = True
        refused = [i for i in ids if f"{provider_id}/{i}" not in legacy]
        if not refused:
            report.add("ok", f"{where}: agents.defaults.models allows every {provider_id}/ model")
        else:
            report.add(refusal,
                       f"{where}: agents.defaults.models does not list "
                       f"{_names([f'{provider_id}/{i}' for i in refused])}: OpenClaw refuses them{fix}")
    if not found_any:
        report.add("ok", f"{where}: no model allowlist, so every model is allowed")


def _lookup_source(env: Mapping[str, str]) -> str:
    if env.get("OPENCLAW_CONFIG_PATH"):
        return "OpenClaw's own lookup: $OPENCLAW_CONFIG_PATH"
    if env.get("OPENCLAW_STATE_DIR"):
        return "OpenClaw's own lookup: $OPENCLAW_STATE_DIR"
    return "OpenClaw's own lookup: ~/.openclaw" + (" with $OPENCLAW_HOME" if env.get("OPENCLAW_HOME") else "")


def _after_path(message: str, path: Path) -> str:
    """An OpenClawFileError's message without the path it starts with (the line names it already)."""
    text = message.removeprefix(str(path)).strip()
    return text.removesuffix("; not touching it")


def _get(node: object, *keys: str) -> object:
    """``node[k1][k2]...``, or None where a step is missing or not an object."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


# --- one chat ----------------------------------------------------------------------------------


async def test_chat(
    config: Config,
    findings: Sequence[KernelFindings],
    exposed: Sequence[ModelSpec],
    report: Report,
    *,
    model_id: str | None,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """One short chat, built and read by aiosd's own translation, sent to the kernel that serves the model."""
    spec = _test_model(config, findings, exposed, model_id, report)
    if spec is None:
        return
    kernel_settings = findings[0].settings if findings else config.kernel
    what = f"test chat with {spec.id} (kernel model {spec.kernel_model!r})"
    body = json.dumps({"model": spec.id, "messages": [{"role": "user", "content": TEST_PROMPT}]}).encode()
    call = build_kernel_call(parse_chat_request(body), spec, kernel_settings.agent_name)
    started = time.monotonic()
    try:
        async with KernelClient(kernel_settings, transport=transport) as kernel:
            response = await kernel.query(call.content, timeout=min(timeout, kernel_settings.timeout))
        reply = call.decode(response)
    except AiosdError as exc:
        report.add("FAIL", f"{what}: {exc.message} (after {_seconds(time.monotonic() - started)})")
        return
    took = _seconds(time.monotonic() - started)
    text = (reply.content or "").strip()
    if not text:
        report.add("warn", f"{what}: the kernel answered in {took}, but with no text")
        return
    shown = text if len(text) <= _ANSWER_LIMIT else text[: _ANSWER_LIMIT - 1] + "…"
    report.add("ok", f"{what}: answered in {took}: {shown!r}")  # repr escapes control characters


def _test_model(
    config: Config,
    findings: Sequence[KernelFindings],
    exposed: Sequence[ModelSpec],
    model_id: str | None,
    report: Report,
) -> ModelSpec | None:
    """The model the test chat asks: the one named, else the first mapped one the kernel lists, else any."""
    by_id = {m.id: m for m in exposed}
    if model_id is not None:
        spec = by_id.get(model_id)
        if spec is None:
            report.add("FAIL", f"test chat: aiosd does not expose a model {model_id!r} "
                               f"(it exposes: {_names(list(by_id)) or 'none'})")
        return spec
    names = {m["name"] for f in findings for m in (f.models or ())}
    # The first model that should work: a mapping the kernel lists, else any exposed one.
    for spec in exposed:
        if spec.kernel_model in names:
            return spec
    if exposed:
        return exposed[0]
    report.add("FAIL", "test chat: aiosd exposes no model to test")
    return None


# --- words ---------------------------------------------------------------------------------------


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(_printable(n, 80) for n in names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def _printable(text: str, limit: int) -> str:
    """Text from outside made safe for a terminal: control characters escaped, length bounded."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: float) -> str:
    return format_duration(value)
