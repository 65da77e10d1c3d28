"""The kernel's last known model list, remembered across restarts in aiosd's state directory.

A restart while the kernel is down must not drop discovered models from OpenClaw's file: until the
kernel answers, the catalog offers what it listed last time (marked unconfirmed). The file is
small, written by temp file + fsync + rename, and read with a size cap; anything wrong with it
(corrupt, oversized, not a regular file, unreadable) counts as no file, with one warning.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from aiosd.config.schema import model_id_problem

log = logging.getLogger("aiosd.models")

FILE_NAME = "known-models.json"
FORMAT = 1
MAX_FILE_BYTES = 1024 * 1024
MAX_MODELS = 4096
MAX_BACKEND_LENGTH = 64

Entries = tuple[tuple[str, str | None], ...]


class ModelMemory:
    """``load()`` and ``save()`` the discovered (name, backend) pairs in ``directory/known-models.json``.

    Blocking file I/O: the catalog calls ``save`` through ``asyncio.to_thread``; ``load`` once at
    start (one bounded read). Neither raises for file problems: they are logged once per problem.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.saved: Entries | None = None  # what the file holds, as far as this process knows
        self.saved_at: float | None = None  # wall clock of that content
        self._last_problem: str | None = None

    def load(self) -> Entries:
        """The remembered list, or () when there is none (or it cannot be trusted)."""
        try:
            raw = self._read_capped()
        except FileNotFoundError:
            return ()
        except _Unusable as exc:
            self._problem(f"{self.path} {exc}; ignoring it (no remembered models until the kernel answers)")
            return ()
        except OSError as exc:
            self._problem(
                f"cannot read {self.path} ({exc.strerror or exc}); no remembered models until the kernel answers")
            return ()
        try:
            document = json.loads(raw)
            entries = _entries_from(document)
        except (ValueError, RecursionError, _Unusable) as exc:
            why = exc if isinstance(exc, _Unusable) else "is not valid JSON"
            self._problem(f"{self.path} {why}; ignoring it (no remembered models until the kernel answers)")
            return ()
        self.saved = entries
        saved_at = document.get("saved_at")
        self.saved_at = float(saved_at) if isinstance(saved_at, (int, float)) else None
        return entries

    def save(self, entries: Entries) -> bool:
        """Write ``entries`` atomically unless the file already holds them; False if it could not."""
        if entries == self.saved:
            return True
        if len(entries) > MAX_MODELS:
            self._problem(f"not remembering the kernel's {len(entries)} models in {self.path}: more than "
                          f"{MAX_MODELS}; the file keeps the previous list")
            return False
        now = time.time()
        document = {"format": FORMAT, "saved_at": now,
                    "models": [{"name": name, "backend": backend} for name, backend in entries]}
        data = json.dumps(document, indent=1).encode("utf-8")
        if len(data) > MAX_FILE_BYTES:  # load() would refuse it
            self._problem(f"not remembering the kernel's model list in {self.path}: {len(data)} bytes, more than "
                          f"{MAX_FILE_BYTES}; the file keeps the previous list")
            return False
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{FILE_NAME}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            _fsync_directory(self.directory)
        except OSError as exc:
            self._problem(f"cannot remember the kernel's model list in {self.path} ({exc.strerror or exc}); "
                          "a restart while the kernel is down will offer models.map only (set state_dir to a "
                          "writable directory)")
            return False
        if self._last_problem is not None:
            log.info("the kernel's model list is remembered in %s again", self.path)
            self._last_problem = None
        self.saved, self.saved_at = entries, now
        return True

    def _read_capped(self) -> bytes:
        # O_NONBLOCK: a FIFO put in the file's place must not hang the start.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Unusable("is not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise _Unusable(f"is {info.st_size} bytes, more than the {MAX_FILE_BYTES} a model list takes")
            chunks, size = [], 0
            while size <= MAX_FILE_BYTES:
                chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_FILE_BYTES:  # it grew after fstat
                raise _Unusable(f"is more than {MAX_FILE_BYTES} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            log.warning("%s", message)
            self._last_problem = message


class _Unusable(Exception):
    """The state file is there but cannot be trusted."""


def _entries_from(document: object) -> Entries:
    if (not isinstance(document, dict) or document.get("format") != FORMAT
            or not isinstance(document.get("models"), list)):
        raise _Unusable(f"is not a model list aiosd wrote (format {FORMAT})")
    models = document["models"]
    if len(models) > MAX_MODELS:
        raise _Unusable(f"lists {len(models)} models, more than {MAX_MODELS}")
    entries: dict[str, str | None] = {}
    for entry in models:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or model_id_problem(name) is not None:  # as a fresh list: never a bad id
            continue
        entries.setdefault(name, clean_backend(entry.get("backend")))
    return tuple(sorted(entries.items()))


def clean_backend(backend: object) -> str | None:
    """A backend name the kernel gave, if it is short printable text; else None (the kernel ignores it)."""
    if isinstance(backend, str) and 0 < len(backend) <= MAX_BACKEND_LENGTH and backend.isprintable():
        return backend
    return None


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse a directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
