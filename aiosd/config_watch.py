"""Watching the config file for edits: the directory, not the file, since editors save by rename."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import watchfiles

log = logging.getLogger("aiosd.reload")


def watched_names(config_path: Path) -> tuple[set[Path], set[str]]:
    """Directories to watch and file names that matter, following a symlinked config to its target.

    A symlink swap (``ln -sfn new.yaml aiosd.yaml``, or Kubernetes' ``..data`` links) changes the
    link or the target's directory, so both the link's directory and the target's are watched.
    """
    config_path = Path(config_path).absolute()
    dirs = {config_path.parent}
    names = {config_path.name}
    target = config_path.resolve()
    if target != config_path:
        dirs.add(target.parent)
        names.add(target.name)
    return dirs, names


async def watch_config(
    config_path: Path,
    on_change: Callable[[], Awaitable[None]],
    *,
    debounce: Callable[[], float],
    stop: asyncio.Event,
) -> None:
    """Call ``on_change`` after each burst of changes to the config file, until ``stop`` is set."""
    while not stop.is_set():
        dirs, names = watched_names(config_path)

        def relevant(change: watchfiles.Change, path: str) -> bool:
            name = Path(path).name
            return name in names or name.startswith("..")

        existing = [str(d) for d in dirs if d.is_dir()]
        if not existing:
            log.error("cannot watch %s: its directory does not exist; checking again in 5s", config_path)
            await _wait(stop, 5.0)
            continue
        try:
            async for _changes in watchfiles.awatch(
                *existing,
                watch_filter=relevant,
                debounce=max(1, int(debounce() * 1000)),
                step=20,
                stop_event=stop,
                recursive=False,
            ):
                await on_change()
                # The link target may have moved (symlink swap): watch the new one.
                if watched_names(config_path) != (dirs, names):
                    break
        except (OSError, RuntimeError) as exc:
            log.error("watching %s failed (%s); watching again in 5s, SIGHUP still reloads", config_path, exc)
            await _wait(stop, 5.0)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
