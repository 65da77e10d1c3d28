"""``aiosd sync-openclaw``: one OpenClaw config sync (or ``--remove``) from the command line, diff printed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # annotations only: `aiosd run` builds this parser and need not load httpx
    import httpx

from aiosd.cli.subcommands import Subcommands
from aiosd.config.durations import format_duration
from aiosd.config.settings import Config, ModelSpec
from aiosd.kernel.client import KernelClient
from aiosd.kernel.pool import KernelPool
from aiosd.models.catalog import ModelCatalog
from aiosd.openclaw.file import resolve_openclaw_path
from aiosd.openclaw.sync import openclaw_api_key, provider_timeout_seconds, sync_openclaw

# The CLI should answer quickly when the kernel is down.
KERNEL_LIST_TIMEOUT = 5.0
# How long --remove waits to learn whether a daemon answers at the config's listen address.
DAEMON_PROBE_TIMEOUT = 2.0


def add_sync_openclaw_parser(
    subparsers: Subcommands, *, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.ArgumentParser:
    """The ``sync-openclaw`` subcommand's parser."""
    parser = subparsers.add_parser(
        "sync-openclaw",
        parents=list(parents),
        help="update OpenClaw's openclaw.json with aiosd's models once, and print the diff",
        description=(
            "Write aiosd's provider and allowlist entries into OpenClaw's config file (openclaw.config_path, "
            "else where OpenClaw looks), exactly as the daemon does at every openclaw.interval. "
            "Exit 0 when written or already up to date, 1 when the file was left alone because of a problem."
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    parser.add_argument("--remove", action="store_true", help="take aiosd's provider and allowlist entries out")
    parser.add_argument(
        "--map-only",
        action="store_true",
        help="when the kernel cannot be asked for its models, sync models.map alone "
        "(this takes the kernel's discovered models out of OpenClaw's list until the daemon puts them back)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --remove: remove even while a daemon that keeps the file in step answers at the config's listen "
        "address (it puts its entries back at its next sync)",
    )
    return parser


def run_sync_openclaw(
    args: argparse.Namespace,
    config: Config,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    kernel_transport: httpx.AsyncBaseTransport | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Build the model list (map, plus the kernel's list when discovery is on), sync, print."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    removing = bool(getattr(args, "remove", False))
    models: tuple[ModelSpec, ...] = ()
    env = os.environ if env is None else env
    if removing and config.openclaw.sync and not getattr(args, "dry_run", False):
        daemon = running_daemon(config, env)
        if daemon and not getattr(args, "force", False):
            print(f"aiosd: {daemon} keeps OpenClaw's file in step (openclaw.sync) and would put its entries back "
                  f"at its next sync (within {format_duration(config.openclaw.interval)}); nothing removed. Stop it "
                  "first (systemctl stop aiosd, or aiosd service uninstall), or set openclaw: {sync: false} in its "
                  "config (applied live), then run this again; --force removes them anyway.", file=err)
            return 1
        if daemon:
            print(f"aiosd: warning: {daemon} keeps OpenClaw's file in step and will put its entries back at its "
                  "next sync unless it is stopped or openclaw.sync is turned off", file=err)
    if not removing:
        models, problem = asyncio.run(current_models(config, kernel_transport))
        if problem and not getattr(args, "map_only", False):
            # Syncing the map alone would drop every discovered model from OpenClaw's list.
            print(f"aiosd: {problem}; not syncing, so OpenClaw keeps the models it lists now. "
                  "Try again when the kernel answers, or pass --map-only to sync models.map alone.", file=err)
            return 1
        if problem:
            print(f"aiosd: {problem}; syncing with models.map only ({len(models)} models)", file=err)
    result = sync_openclaw(
        config.openclaw,
        models,
        base_url=config.own_base_url,
        api_key=openclaw_api_key(config),
        timeout_seconds=provider_timeout_seconds(config),
        dry_run=bool(getattr(args, "dry_run", False)),
        remove=removing,
        with_diff=True,
        env=env,
    )
    if result.diff:
        out.write(result.diff)
        if not result.diff.endswith("\n"):
            out.write("\n")
    print(f"{result.outcome}: {result.message}", file=out if result.ok else err)
    return 0 if result.ok else 1


def running_daemon(config: Config, env: Mapping[str, str]) -> str | None:
    """"the daemon at HOST:PORT" when an aiosd answers at ``config``'s listen address and syncs the same
    OpenClaw file (as far as its /status says), else None."""
    import httpx

    from aiosd.cli.status import KEY_VARIABLE, status_target

    listen, key = status_target(config)
    key = env.get(KEY_VARIABLE, "").strip() or key
    try:
        response = httpx.get(f"http://{listen}/status", timeout=DAEMON_PROBE_TIMEOUT,
                             headers={"authorization": f"Bearer {key}"} if key else {})
    except httpx.HTTPError:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if response.status_code != 200:  # an aiosd that wants another key still answers with its error shape
        return f"the daemon at {listen}" if isinstance(body.get("error"), dict) else None
    sync = body.get("openclaw_sync")
    synced = sync.get("path") if isinstance(sync, dict) else None
    ours = str(resolve_openclaw_path(config.openclaw, env))
    if "version" not in body or (isinstance(synced, str) and synced != ours):
        return None
    return f"the daemon at {listen}"


async def current_models(
    config: Config, kernel_transport: httpx.AsyncBaseTransport | None = None
) -> tuple[tuple[ModelSpec, ...], str | None]:
    """The models the daemon would expose now, in its order, and why discovery failed (or None)."""
    if len(config.pool) > 1:  # the union of every pool kernel's list, as the daemon shows it
        pool = KernelPool(config.pool, config.health, transport=kernel_transport)
        try:
            catalog = ModelCatalog(config.models, pool)
            if not config.models.discover:
                return catalog.models(), None
            result = await asyncio.wait_for(catalog.refresh(), KERNEL_LIST_TIMEOUT)
        finally:
            await pool.close()
        problem = None if result.ok else f"could not list the models of the kernel pool ({result.message})"
        return catalog.models(), problem
    async with KernelClient(config.pool[0], transport=kernel_transport) as kernel:
        catalog = ModelCatalog(config.models, _QuickLister(kernel))
        if not config.models.discover:
            return catalog.models(), None
        result = await catalog.refresh()
        where = config.pool[0].shown_url
        problem = None if result.ok else f"could not list the kernel's models at {where} ({result.message})"
        return catalog.models(), problem


class _QuickLister:
    def __init__(self, kernel: KernelClient) -> None:
        self._kernel = kernel

    async def list_llms(self) -> list[dict]:
        return await self._kernel.list_llms(timeout=KERNEL_LIST_TIMEOUT)
