"""``aiosd status``: a running daemon's GET /status, readable in a terminal (or raw with --json)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import httpx
import msgspec
import yaml

from aiosd.config.auth_keys import read_key
from aiosd.config.loader import ConfigError, load_config, read_config_bytes
from aiosd.config.schema import load_schema
from aiosd.config.settings import Config
from aiosd.config.yaml_positions import load_yaml_with_positions
from aiosd.service.status_model import Status, from_json

# The key `aiosd status` (and `sync-openclaw`'s look at a running daemon) sends when --key is not given.
KEY_VARIABLE = "AIOSD_KEY"


def run_status_command(args: argparse.Namespace, config_path: Path) -> int:
    """Exit 0 when the daemon answered, 1 when it did not. An invalid config file does not stop it:
    that is exactly when an operator asks whether the daemon still serves its last good config."""
    given = getattr(args, "key", None) or os.environ.get(KEY_VARIABLE, "").strip() or None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(
            f"warning: {config_path} does not load ({len(exc.problems)} problem(s), first: {exc.problems[0]}); "
            "a running daemon keeps serving its last good config. Asking it anyway.",
            file=sys.stderr,
        )
        listen, key = lenient_target(config_path)
    else:
        listen, key = status_target(config)
    return run_status(args, listen=listen, api_key=given or key)


def run_status(args: argparse.Namespace, *, listen: str, api_key: str | None) -> int:
    base = (args.url or f"http://{listen}").rstrip("/")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base}/status", headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        print(f"aiosd is not answering at {base}: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        hint = (f"; give one of its auth.keys with --key KEY or ${KEY_VARIABLE}" if response.status_code == 401
                else "")
        print(f"aiosd at {base} answered /status with HTTP {response.status_code}: {_error_message(response)}{hint}",
              file=sys.stderr)
        return 1
    try:
        status = response.json()
    except ValueError:
        print(f"the server at {base} answered /status with something that is not JSON; is it aiosd?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    try:
        print(render_status(status))
    except msgspec.ValidationError as exc:
        print(f"the server at {base} answered /status with JSON aiosd does not read ({exc}); is it aiosd?",
              file=sys.stderr)
        return 1
    return 0


def status_target(config: Config) -> tuple[str, str | None]:
    """host:port to reach ``config``'s daemon on, and the API key to send (None without auth)."""
    return _reachable(config.listen_host, config.listen_port), (config.auth.keys or (None,))[0]


def _reachable(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def lenient_target(config_path: Path) -> tuple[str, str | None]:
    """``listen`` and the first usable auth key of a file that does not load, as far as they read: a
    file with a YAML slip elsewhere still gives them, each top-level section read on its own."""
    try:  # bounded like the daemon's own read: a regular file of at most 1 MiB, never a FIFO
        text = read_config_bytes(Path(config_path)).decode("utf-8")
    except (ConfigError, UnicodeDecodeError):
        text = ""
    document = _sections(text)
    listen = document.get("listen")
    if not isinstance(listen, str) or ":" not in listen:
        listen = load_schema()["properties"]["listen"]["default"]
    host, _, port = listen.rpartition(":")
    listen = _reachable(host.strip("[]"), int(port)) if port.isdigit() else listen
    auth = document.get("auth")
    keys = auth.get("keys") if isinstance(auth, dict) else None
    for item in keys if isinstance(keys, list) else ():
        if not isinstance(item, (str, dict)):
            continue
        key, problem = read_key(item, os.environ, Path(config_path).parent)
        if key and not problem:
            return listen, key
    return listen, None


def _sections(text: str) -> dict:
    """The file's top-level mapping; when the whole does not parse, each top-level ``key:`` block
    parsed alone (so a slip under ``models`` still lets ``listen`` and ``auth`` be read)."""
    try:  # the loader's parser: an alias bomb is refused before it is built
        document = load_yaml_with_positions(text)
    except yaml.YAMLError:
        document = None
        blocks: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in text.splitlines():
            top = _TOP_KEY.match(line)
            if top:
                current = blocks.setdefault(top.group(1), [])
            if current is not None:
                current.append(line)
        found: dict = {}
        for block in blocks.values():
            try:
                part = load_yaml_with_positions("\n".join(block))
            except yaml.YAMLError:
                continue
            if isinstance(part, dict):
                found.update(part)
        return found
    return document if isinstance(document, dict) else {}


_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


# --- the readable form ---------------------------------------------------------------------------

def render_status(data: object) -> str:
    """A /status answer (decoded JSON, or the model itself) as the lines ``aiosd status`` prints."""
    status = data if isinstance(data, Status) else from_json(data)
    lines = [f"aiosd {status.version}, up {_duration(status.uptime_seconds)}"]
    for section in (_config_lines, _kernel_lines, _calls_lines, _pool_lines, _class_lines, _model_lines,
                    _openclaw_lines):
        lines += section(status)
    return "\n".join(lines)


def _config_lines(status: Status) -> list[str]:
    cfg = status.config
    lines = [f"config     {cfg.path} (generation {cfg.generation}, listening on {cfg.listen})"]
    if cfg.listen_pending:
        lines.append(f"           listen {cfg.listen_pending} is in the file but applies only after a restart")
    reload = cfg.last_reload
    if reload:
        result = "ok" if reload.ok else "REFUSED, still serving the last good config"
        lines.append(f"reload     {result} at {_clock(reload.at)} ({reload.reason})")
        lines += [f"           - {p}" for p in reload.problems]
        lines += [f"           note: {n}" for n in reload.notes]
    return lines


def _kernel_lines(status: Status) -> list[str]:
    kernel = status.kernel
    ready = "ready" if kernel.ready else f"NOT READY: {kernel.reason}"
    lines = [f"kernel     {kernel.url}: {ready}"]
    if kernel.last_answer_seconds_ago is not None:
        lines.append(f"           last answer {_duration(kernel.last_answer_seconds_ago)} ago")
    failure = kernel.last_failure
    if failure:
        lines.append(f"           last failure {_duration(failure.seconds_ago)} ago: {failure.message}")
    latency = kernel.recent_latency_seconds
    if latency and latency.count:
        lines.append(
            f"           latency of the last {latency.count} calls: p50 {_ms(latency.p50)}, "
            f"p90 {_ms(latency.p90)}, max {_ms(latency.max)}, last {_ms(latency.last)}"
        )
    canary = kernel.canary
    if canary and canary.enabled:
        last = canary.last
        said = "none sent yet" if not last else (
            f"last at {_clock(last.at)}: {'answered' if last.answered else 'FAILED'} ({last.message})")
        waiting = canary.in_flight_seconds
        lines.append(f"           canary every {canary.interval_seconds:g}s, {canary.sent} sent; {said}"
                     + (f"; one waiting {_duration(waiting)}" if waiting is not None else ""))
    return lines


def _calls_lines(status: Status) -> list[str]:
    calls = status.calls
    retries = calls.retries_last_5m
    lines = [f"calls      {calls.in_flight} in flight / {calls.max_concurrency}, {calls.queued} queued, "
             f"{retries} {'retry' if retries == 1 else 'retries'} in the last 5 minutes"]
    out = calls.slots_out
    if out:
        lines.append(f"           {out} slot{'s' if out != 1 else ''} out: {'; '.join(calls.out)}")
    elif calls.out:
        lines.append(f"           every kernel is ejected, so requests still go to them: {'; '.join(calls.out)}")
    return lines


def _pool_lines(status: Status) -> list[str]:
    kernels = status.kernels
    if len(kernels) <= 1:
        return []
    lines = [f"pool       {len(kernels)} kernels"]
    for k in kernels:
        state = k.health if k.health != "healthy" else ("ready" if k.ready else "not ready")
        ejected = f", ejected for {_duration(k.ejected_for_seconds)} more" if k.ejected_for_seconds else ""
        if k.health != "healthy" and k.ejection_cause:
            ejected += f" ({k.ejection_cause})"
        lines.append(
            f"           {k.name} {k.url}: {state}{ejected}; {k.in_flight}/{k.max_concurrency} in flight, "
            f"{k.calls} calls, {k.failures} failed, {k.ejections} ejection(s), latency {_ms(k.latency_seconds)}"
        )
    return lines


def _class_lines(status: Status) -> list[str]:
    lines = []
    for c in status.classes:
        if not c.keys and not c.queued:
            continue
        lines.append(f"class      {c.name}: {c.queued} queued")
        for key in c.keys:
            mean = key.wait_seconds_mean
            lines.append(
                f"           key {key.key}: {key.queued} queued, {key.key_in_flight} in flight, "
                f"{key.admitted} admitted, {key.rejected} rejected, {key.timed_out} timed out, "
                f"mean wait {'-' if mean is None else _duration(mean)}"
            )
    return lines


def _model_lines(status: Status) -> list[str]:
    models = status.models
    lines = [f"models     {len(models)}"]
    width = max((len(m.id) for m in models), default=0)
    lines += [f"           {m.id:<{width}} -> {m.kernel_model} ({m.source}"
              f"{', unconfirmed' if m.unconfirmed else ''}, tools: {m.tools})" for m in models]
    remembered = status.remembered_models
    if remembered and remembered.in_use:
        lines.append(f"           unconfirmed: remembered from the kernel's last list ({remembered.path}); "
                     "kept until the kernel answers")
    lines += [f"           NOT OFFERED {entry.id}: {entry.reason}" for entry in status.unavailable]
    refresh = status.model_refresh
    if refresh:
        lines.append(f"           kernel's list at {_clock(refresh.at)}: "
                     f"{'ok' if refresh.ok else 'FAILED'}, {refresh.message}")
    return lines


def _openclaw_lines(status: Status) -> list[str]:
    sync = status.openclaw_sync
    return [f"openclaw   {sync.outcome} at {_clock(sync.at)}: {sync.message}" if sync else "openclaw   no sync yet"]


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
