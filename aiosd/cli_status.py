"""``aiosd status``: a running daemon's GET /status, readable in a terminal."""

from __future__ import annotations

import json
import sys
import time

import httpx

from aiosd.config import Config


def run_status(args, config: Config) -> int:
    base = args.url or f"http://{_reachable(config)}"
    headers = {"authorization": f"Bearer {config.auth.keys[0]}"} if config.auth.keys else {}
    try:
        response = httpx.get(f"{base.rstrip('/')}/status", headers=headers, timeout=5.0)
        response.raise_for_status()
        status = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"aiosd is not answering at {base}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status))
    return 0


def _reachable(config: Config) -> str:
    host = config.listen_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{config.listen_port}" if ":" in host else f"{host}:{config.listen_port}"


def render_status(s: dict) -> str:
    cfg, kernel, calls = s["config"], s["kernel"], s["calls"]
    reload = cfg.get("last_reload") or {}
    lines = [
        f"aiosd {s['version']}, up {_ago(s['uptime_seconds'])}",
        f"config     {cfg['path']} (generation {cfg['generation']}, listening on {cfg['listen']})",
    ]
    if reload:
        when = time.strftime("%H:%M:%S", time.localtime(reload["at"]))
        result = "ok" if reload["ok"] else "REFUSED, serving the last good config"
        lines.append(f"reload     {result} at {when} ({reload['reason']})")
        lines += [f"           - {p}" for p in reload.get("problems", [])]
        lines += [f"           note: {n}" for n in reload.get("notes", [])]
    ready = "ready" if kernel["ready"] else f"NOT READY: {kernel['reason']}"
    lines.append(f"kernel     {kernel['url']}: {ready}")
    latency = kernel.get("recent_latency_seconds")
    if latency:
        lines.append(f"           recent latency {json.dumps(latency)}")
    lines.append(
        f"calls      {calls['in_flight']} in flight / {calls['max_concurrency']}, {calls['queued']} queued, "
        f"{calls['retries_last_5m']} retries in the last 5 minutes"
    )
    models = s.get("models", [])
    lines.append(f"models     {len(models)}")
    lines += [f"           {m['id']:<24} -> {m['kernel_model']} ({m['source']}, tools: {m['tools']})" for m in models]
    refresh = s.get("model_refresh")
    if refresh:
        lines.append(f"           last refresh: {refresh}")
    sync = s.get("openclaw_sync")
    lines.append(f"openclaw   {sync['outcome']}: {sync['message']}" if sync else "openclaw   no sync yet")
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
