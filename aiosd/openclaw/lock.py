"""OpenClaw's own write lock on openclaw.json (``openclaw.json.lock``), taken the way OpenClaw takes it.

Current OpenClaw serialises every read-modify-write of its config file with a sidecar lock: a file
``<real directory>/openclaw.json.lock`` created exclusively (mode 0600) holding JSON
``{"pid": ..., "createdAt": "<ISO time>"}``, removed when done. A lock whose process is gone, or
that is older than 30 s, is stale and may be taken over; a ``.lock.reclaim`` directory marks a
take-over in progress. aiosd holds the same lock while it writes, so OpenClaw and aiosd never write
at the same time (OpenClaw 2026.9.6 takes no lock: there the re-checks around the rename in
``sync`` are what protects its writes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# OpenClaw's CONFIG_WRITE_LOCK_OPTIONS.stale: a lock older than this is abandoned.
STALE_AFTER = 30.0
# A lock file without readable content is being written right now unless it is older than this.
UNREADABLE_GRACE = 2.0
# How long aiosd waits for OpenClaw to finish its write before leaving this sync for the next.
WAIT = 3.0
_MAX_LOCK_BYTES = 64 * 1024


class LockBusy(Exception):
    """Another process holds the lock past aiosd's wait. The message says who and for how long."""


@dataclass(frozen=True, slots=True)
class _Held:
    path: Path
    raw: bytes
    inode: tuple[int, int]


# Locks this process holds, by lock path, so a sync nested in another (tests do this) re-enters.
_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def lock_path_for(path: Path) -> Path:
    """Where OpenClaw puts the lock: beside the file, in the directory's real location."""
    return Path(os.path.realpath(path.parent)) / (path.name + ".lock")


@contextlib.contextmanager
def holding_openclaw_lock(path: Path, *, owner: tuple[int | None, int | None] = (None, None),
                          wait: float | None = None) -> Iterator[Path | None]:
    """Hold OpenClaw's lock on ``path`` for the block; yields the lock's path, or None when no lock
    could be created there (no write permission, read-only file system: the write that follows
    reports that itself). Raises ``LockBusy`` when another process holds it for longer than ``wait``."""
    lock = lock_path_for(path)
    with _held_guard:
        if lock in _held:
            _held[lock] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield lock
        finally:
            with _held_guard:
                _held[lock] -= 1
        return
    held = _acquire(lock, owner, WAIT if wait is None else wait)
    if held is None:
        yield None
        return
    with _held_guard:
        _held[lock] = 1
    try:
        yield lock
    finally:
        with _held_guard:
            del _held[lock]
        _release(held)


def _acquire(lock: Path, owner: tuple[int | None, int | None], wait: float) -> _Held | None:
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        raw = (json.dumps({"pid": os.getpid(), "createdAt": _now_iso()}, indent=2) + "\n").encode()
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            holder = _stale_or_holder(lock)
            if holder is None:
                continue  # it was stale and is gone now (or vanished by itself): try again at once
            if time.monotonic() >= deadline:
                raise LockBusy(f"OpenClaw is writing it ({lock.name} held by {holder})") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        try:
            os.write(fd, raw)
            uid, gid = owner
            if os.geteuid() == 0 and uid is not None and gid is not None:
                with contextlib.suppress(OSError):  # so OpenClaw's user can judge and clear it
                    os.fchown(fd, uid, gid)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return _Held(lock, raw, (st.st_dev, st.st_ino))


def _release(held: _Held) -> None:
    """Remove the lock file, unless it is no longer ours (someone judged it stale and took it)."""
    current = _read(held.path)
    if current is not None and current[0] == held.raw and current[1] == held.inode:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(held.path)


def _stale_or_holder(lock: Path) -> str | None:
    """None when the lock is gone or was stale and has been removed; else who holds it, for a message."""
    if (lock.parent / (lock.name + ".reclaim")).exists():
        return "a process taking over a stale lock"
    seen = _read(lock)
    if seen is None:
        return None
    raw, inode, mtime = seen
    pid, created = _payload(raw)
    now = time.time()
    age = now - created if created is not None else now - mtime
    alive = pid is None or pid_alive(pid)
    if created is None and pid is None and age <= UNREADABLE_GRACE:
        return "a process that is writing it now"
    if alive and age <= STALE_AFTER and (created is not None or pid is not None):
        return f"pid {pid}, for {max(age, 0):.1f}s" if pid is not None else f"a process, for {max(age, 0):.1f}s"
    # Stale: take it over as OpenClaw does, under its .reclaim guard, only if it did not change.
    guard = lock.parent / (lock.name + ".reclaim")
    try:
        os.mkdir(guard)
    except FileExistsError:
        return "a process taking over a stale lock"
    except OSError:
        return f"a stale lock aiosd cannot remove (pid {pid})"
    try:
        again = _read(lock)
        if again is not None and again[0] == raw and again[1] == inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(guard)
    return None


def _read(lock: Path) -> tuple[bytes, tuple[int, int], float] | None:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:
        return b"", (0, 0), time.time()  # unreadable (another user's, a symlink): never stale by content
    try:
        st = os.fstat(fd)
        raw = os.read(fd, _MAX_LOCK_BYTES)
    finally:
        os.close(fd)
    return raw, (st.st_dev, st.st_ino), st.st_mtime


def _payload(raw: bytes) -> tuple[int | None, float | None]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(value, dict):
        return None, None
    pid = value.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
    created = None
    if isinstance(value.get("createdAt"), str):
        with contextlib.suppress(ValueError):
            created = datetime.fromisoformat(value["createdAt"].replace("Z", "+00:00")).timestamp()
    return pid, created


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts: it may still hold the file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
