"""Test harness: a real aiosd (runtime + HTTP server on a loopback port) inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path

from aiosd.api.app import build_app
from aiosd.config.loader import load_config
from aiosd.config.settings import Config
from aiosd.daemon import EmbeddedServer
from aiosd.server.connections import uvicorn_config
from aiosd.service.runtime import Runtime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(directory: Path, yaml_text: str, *, name: str = "aiosd.yaml") -> Path:
    """Write a config file; ``yaml_text`` may use {port} for a free listen port."""
    path = Path(directory) / name
    path.write_text(textwrap.dedent(yaml_text).replace("{port}", str(free_port())), encoding="utf-8")
    return path


def config_for(tmp_path: Path, kernel_url: str, extra: str = "", *, openclaw_sync: bool = False) -> Config:
    """A config that points at ``kernel_url`` with fast test timings; ``extra`` is more YAML (top-level keys).

    ``openclaw_sync`` keeps a scratch openclaw.json under ``tmp_path`` in step, creating it if absent."""
    text = f"""\
listen: "127.0.0.1:{free_port()}"
kernel:
  url: "{kernel_url}"
  timeout: "5s"
  connect_timeout: "1s"
  queue_timeout: "5s"
retry:
  max_retries: 3
  on_status: [429]
  backoff: {{initial: "10ms", multiplier: 1.0, max: "50ms", jitter: 0.0}}
  budget: "1s"
models:
  discover: false
  map:
    sonnet: {{kernel_model: "gpt-4o-mini", backend: "openai"}}
openclaw:
  sync: {"true" if openclaw_sync else "false"}
  create: {"true" if openclaw_sync else "false"}
  config_path: "{tmp_path / 'openclaw' / 'openclaw.json'}"
"""
    merged = merge_yaml(text, textwrap.dedent(extra))
    path = Path(tmp_path) / "aiosd.yaml"
    path.write_text(merged, encoding="utf-8")
    return load_config(path, env={})


def merge_yaml(base: str, extra: str) -> str:
    """``extra`` laid over ``base`` key by key (maps merge, anything else is replaced)."""
    import yaml

    def merge(target: dict, update: dict) -> dict:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = value
        return target

    return yaml.safe_dump(merge(yaml.safe_load(base) or {}, yaml.safe_load(extra) or {}), sort_keys=False)


@dataclass
class RunningAiosd:
    runtime: Runtime
    server: EmbeddedServer

    @property
    def url(self) -> str:
        config = self.runtime.config
        return f"http://{config.listen_host}:{config.listen_port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


@contextlib.asynccontextmanager
async def serve_aiosd(config: Config, *, kernel_transport=None):
    """Run aiosd's runtime and HTTP server on ``config.listen`` until the block ends."""
    runtime = Runtime(config, kernel_transport=kernel_transport)
    server = EmbeddedServer(uvicorn_config(build_app(runtime), runtime, graceful_timeout=1))
    await runtime.start()
    serving = asyncio.create_task(server.serve())
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
    if not server.listening.is_set():
        listening.cancel()
        await runtime.close()
        raise RuntimeError(f"aiosd could not listen on {config.listen}")
    try:
        yield RunningAiosd(runtime, server)
    finally:
        server.should_exit = True
        await serving
        await runtime.close()
