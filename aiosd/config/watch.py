"""Watching the config file for edits: the directory, not the file, since editors save by rename."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import watchfiles

log = logging.getLogger("aiosd.reload")

# How often the watch is set up again while the config's directory does not exist.
MISSING_DIRECTORY_RETRY = 5.0


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
    watching: asyncio.Event | None = None,
) -> None:
    """Call ``on_change`` once the config file has been quiet for ``debounce()`` seconds after a change.

    Runs until ``stop`` is set. ``watching`` is set once the directory is watched; ``on_change`` is
    also called then, since the file may have changed after it was read and before the watch began.
    The caller compares contents, so a call with nothing changed costs little. The quiet time is
    aiosd's own rather than watchfiles' ``step``:
    watchfiles counts distinct (change, path) pairs, so a second write to the same file would not
    hold back a batch, and a tool writing the file in pieces would get its half-written file loaded.
    """
    changed = asyncio.Event()
    watcher_stop = asyncio.Event()  # watchfiles sets its stop event when cancelled: never hand it ``stop``
    watcher = asyncio.create_task(_watch_changes(config_path, changed, watcher_stop, watching),
                                  name="config-watch-files")
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            if not await _first_of(changed, stopping):
                return
            while True:  # wait for the burst of changes to end
                changed.clear()
                quiet = max(0.0, debounce())
                if not await _first_of(changed, stopping, timeout=quiet):
                    if stopping.done():
                        return
                    break
            try:
                await on_change()
            except Exception:  # the watch must outlive a failed reload, or later edits would go unseen
                log.exception("reloading after a change to %s failed; still watching", config_path)
    finally:
        watcher_stop.set()
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _first_of(changed: asyncio.Event, stopping: asyncio.Task, timeout: float | None = None) -> bool:
    """True when ``changed`` was set first; False on stop or timeout."""
    if changed.is_set():
        return True
    waiting = asyncio.ensure_future(changed.wait())
    try:
        await asyncio.wait({waiting, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    return changed.is_set() and not stopping.done()


async def _watch_changes(config_path: Path, changed: asyncio.Event, stop: asyncio.Event,
                         watching: asyncio.Event | None) -> None:
    """Set ``changed`` for every batch of file events that concern the config file."""
    gap = True  # a change may have been missed while nothing was watched (before the first watch, too)
    while not stop.is_set():
        dirs, names = watched_names(config_path)

        def relevant(change: watchfiles.Change, path: str, names: set[str] = names) -> bool:
            name = Path(path).name
            return name in names or name.startswith("..")

        existing = [str(d) for d in dirs if d.is_dir()]
        if len(existing) < len(dirs):
            log.error("cannot watch %s: its directory does not exist; checking again in %gs",
                      config_path, MISSING_DIRECTORY_RETRY)
            gap = True
            await _wait(stop, MISSING_DIRECTORY_RETRY)
            continue
        missed = gap
        gap = False

        def established(missed: bool = missed) -> None:
            # Runs once awatch has added its inotify watches (they are added before its first await).
            if missed:
                changed.set()
            if watching is not None:
                watching.set()

        asyncio.get_running_loop().call_soon(established)
        try:
            async for _changes in watchfiles.awatch(
                *existing, watch_filter=relevant, step=20, stop_event=stop, recursive=False
            ):
                changed.set()
                # A symlink swap may have moved the target, or the directory may be gone: watch again.
                if watched_names(config_path) != (dirs, names) or not all(d.is_dir() for d in dirs):
                    gap = True
                    break
        except (OSError, RuntimeError) as exc:
            log.error("watching %s failed (%s); watching again in %gs, SIGHUP still reloads",
                      config_path, exc, MISSING_DIRECTORY_RETRY)
            gap = True
            await _wait(stop, MISSING_DIRECTORY_RETRY)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
