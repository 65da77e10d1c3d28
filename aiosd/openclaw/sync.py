"""One sync of OpenClaw's openclaw.json with aiosd's models: read, merge, write if changed, report.

``sync_openclaw`` is blocking (the daemon runs it in a thread of its own) and never raises for
file problems; it returns a ``SyncResult`` and logs one line on the ``aiosd.openclaw`` logger
(plus a warning, once, about a file others can read or a short user timeout). Path handling and
atomic writes live in ``file``, OpenClaw's write lock in ``lock``, the pure merge in ``merge``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiosd.config.settings import Config, ModelSpec, OpenClawSettings
from aiosd.openclaw import file as files
from aiosd.openclaw.file import OpenClawFileError, resolve_openclaw_path
from aiosd.openclaw.lock import LockBusy, holding_openclaw_lock
from aiosd.openclaw.merge import (
    MergeConflict,
    allowlists_in,
    describe_changes,
    desired_provider,
    existing_timeout,
    merge,
    remove,
)

__all__ = [
    "SyncResult",
    "openclaw_api_key",
    "provider_timeout_seconds",
    "resolve_openclaw_path",
    "sync_openclaw",
]

log = logging.getLogger("aiosd.openclaw")

# "missing": the file does not exist and openclaw.create is off, so aiosd left it so.
# "busy": OpenClaw held its lock on the file for longer than aiosd waits; the next sync writes.
Outcome = Literal["written", "created", "unchanged", "missing", "busy", "refused", "removed", "dry_run"]

# How often aiosd merges again on top of someone else's write before giving up until next time.
MAX_MERGE_ROUNDS = 5
DEFAULT_API_KEY = "aiosd-local"
# Added to aiosd's worst case for one request: the answer still has to be streamed back after it.
TIMEOUT_MARGIN_SECONDS = 30
_REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync did. ``message`` is the one human line that was logged; ``diff`` is never logged."""

    outcome: Outcome
    path: Path | None
    message: str
    diff: str = ""
    at: float = field(default_factory=time.time)
    # Warnings already given by this or an earlier sync (passed on through ``previous``), so each is said once.
    warned: frozenset[str] = frozenset()
    # The provider's timeoutSeconds in the file when aiosd chose it (so a later sync may change it);
    # None when the value there is the user's.
    timeout_written: int | None = None
    timeout_kept_user: int | None = None  # the user's own timeoutSeconds, kept

    @property
    def ok(self) -> bool:
        """False when the file was left alone although aiosd wanted to change it (the CLI exits 1)."""
        return self.outcome not in ("refused", "missing", "busy")

    @property
    def changed(self) -> bool:
        return self.outcome in ("written", "created", "removed")

    def status_line(self) -> str:
        """For STATUS= and ``aiosd status``: outcome, local time, message."""
        return f"openclaw {self.outcome} at {time.strftime('%H:%M:%S', time.localtime(self.at))}: {self.message}"

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "path": str(self.path) if self.path else None,
                "message": self.message, "at": self.at}


def openclaw_api_key(config: Config) -> str:
    """The apiKey written for OpenClaw: openclaw.api_key, else the first auth key, else "aiosd-local"."""
    if config.openclaw.api_key:
        return config.openclaw.api_key
    if config.auth.keys:
        return config.auth.keys[0]
    return DEFAULT_API_KEY


def provider_timeout_seconds(config: Config) -> int:
    """aiosd's longest time for one request, as the config defines it, rounded up plus a margin.

    The same bound the forwarding puts on a request: waiting for a kernel slot
    (``kernel.queue_timeout``), every attempt (``retry.max_retries + 1`` times ``kernel.timeout``) and
    the waits between them (``retry.budget``). OpenClaw aborts a silent stream after its provider's
    ``timeoutSeconds`` (120 s, 300 s on loopback, when unset), so this is what it must wait at least.
    """
    kernel, retry = config.kernel, config.retry
    # One call per retry, plus one failover per further kernel of the pool (forwarding's deadline).
    worst = kernel.queue_timeout + kernel.timeout * (retry.max_retries + len(config.pool)) + retry.budget
    return math.ceil(worst) + TIMEOUT_MARGIN_SECONDS


def sync_openclaw(
    settings: OpenClawSettings,
    models: Sequence[ModelSpec],
    *,
    base_url: str,
    api_key: str,
    timeout_seconds: int | None = None,
    dry_run: bool = False,
    remove: bool = False,
    with_diff: bool = False,
    env: Mapping[str, str] = os.environ,
    previous: SyncResult | None = None,
    _before_replace: Callable[[Path], None] | None = None,
) -> SyncResult:
    """Bring OpenClaw's file in step with ``models`` (or take aiosd's entries out with ``remove``).

    Blocking: the daemon runs it in a thread. File problems never raise: they come back as outcome
    "refused" (or "busy", "missing") with the file as it was. ``_before_replace`` is a test hook
    called with the path after the temp file is written and before the last re-read.
    ``with_diff`` fills ``SyncResult.diff`` (always filled for ``dry_run``): a whole-file diff of
    a 1 MB file costs seconds, so the daemon, which never shows it, does not ask for it.
    ``previous`` is the last sync's result: a missing file is warned about once, then at debug.
    ``timeout_seconds`` is the provider's timeoutSeconds aiosd wants (``provider_timeout_seconds``);
    ``settings.timeout_seconds`` overrides it, a value the user wrote into the file is kept.
    """
    path: Path | None = None
    try:
        path = resolve_openclaw_path(settings, env)
        ours = frozenset({previous.timeout_written} if previous and previous.timeout_written else ())
        timeouts = (timeout_seconds, ours)
        result = _sync(settings, models, path, base_url, api_key, timeouts, dry_run, remove, with_diff or dry_run,
                       _before_replace)
    except (OpenClawFileError, MergeConflict) as exc:
        reason = str(exc) if isinstance(exc, OpenClawFileError) else f"{path}: {exc}; not touching it"
        result = SyncResult("refused", path, f"{reason}; will try again at the next sync")
    except Exception as exc:  # a bug must not take the daemon down; say so loudly, traceback included
        result = SyncResult("refused", path, f"internal error ({type(exc).__name__}: {exc}); will try again")
        log.error("openclaw sync refused: %s", _printable(result.message), exc_info=True)
        return result
    _log(result, previous)
    warned = previous.warned if previous is not None else frozenset()
    timeout_written = result.timeout_written
    if result.outcome in ("written", "created", "unchanged") and not remove and result.path is not None:
        warned |= _warn_if_readable_by_others(result.path, api_key, warned)
        warned |= _warn_if_users_timeout_is_short(result, timeout_seconds, warned)
    elif previous is not None and result.outcome not in ("removed", "dry_run"):
        timeout_written = previous.timeout_written  # nothing written: what aiosd wrote before is still its own
    return dataclasses.replace(result, warned=warned, timeout_written=timeout_written)


def _warn_if_users_timeout_is_short(result: SyncResult, wanted: int | None, warned: frozenset[str]) -> frozenset[str]:
    kept = result.timeout_kept_user
    key = f"timeout:{result.path}:{kept}"
    if kept is None or wanted is None or kept >= wanted or key in warned:
        return frozenset()
    log.warning("%s: the provider's timeoutSeconds is %d, shorter than aiosd's longest time for one request "
                "(%d s with queueing and retries): OpenClaw may abort answers aiosd is still waiting for. aiosd "
                "keeps the value found there; delete it to let aiosd set it, or set openclaw.timeout_seconds",
                _printable(str(result.path)), kept, wanted)
    return frozenset({key})


def _warn_if_readable_by_others(path: Path, api_key: str, warned: frozenset[str]) -> frozenset[str]:
    """Once per file: say so when the file holding aiosd's API key can be read by other users."""
    key = f"mode:{path}"
    if key in warned or api_key == DEFAULT_API_KEY:  # the default key opens nothing: aiosd has no auth then
        return frozenset()
    try:
        st = os.lstat(path)
    except OSError:
        return frozenset()
    who = files.readable_by_others(stat.S_IMODE(st.st_mode)) if stat.S_ISREG(st.st_mode) else None
    if who is None:
        return frozenset()
    log.warning("%s holds aiosd's API key for OpenClaw and is readable by %s (mode %04o); aiosd keeps the mode "
                "it found; to fix it run: chmod 600 %s", _printable(str(path)), who, stat.S_IMODE(st.st_mode),
                _printable(str(path)))
    return frozenset({key})


def _log(result: SyncResult, previous: SyncResult | None) -> None:
    """One line: changes at info, nothing-to-do at debug, problems at warning/error."""
    if result.outcome == "refused":
        level = logging.ERROR
    elif result.outcome == "busy":
        level = logging.WARNING
    elif result.outcome == "missing":
        repeated = previous is not None and previous.outcome == "missing" and previous.path == result.path
        level = logging.DEBUG if repeated else logging.WARNING
    elif result.outcome == "unchanged":
        level = logging.DEBUG
    else:
        level = logging.INFO
    log.log(level, "openclaw sync %s: %s", result.outcome, _printable(result.message))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """Control characters (from a kernel's model id, a path) escaped, so one event stays one line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


@dataclass(slots=True)
class _Plan:
    """What one merge of aiosd's entries into one version of the file gives."""

    document: dict
    new_document: dict
    text: str
    unchanged: bool
    parts: list[str]
    changes: list[str]
    timeout_written: int | None = None
    timeout_kept_user: int | None = None


def _sync(
    settings: OpenClawSettings,
    models: Sequence[ModelSpec],
    path: Path,
    base_url: str,
    api_key: str,
    timeouts: tuple[int | None, frozenset[int]],
    dry_run: bool,
    removing: bool,
    with_diff: bool,
    before_replace: Callable[[Path], None] | None,
) -> SyncResult:
    provider_id = settings.provider_id
    try:
        desired_provider(models, base_url, api_key)  # refuses an empty base URL or key
    except ValueError as exc:
        return SyncResult("refused", path, f"not writing {path}: {exc}")

    def plan_for(snapshot: files.Snapshot) -> _Plan:
        document = files.parse_document(snapshot.raw, path) if snapshot.raw is not None else {}
        notes: list[str] = []
        timeout_written = timeout_kept_user = None
        if removing:
            new_document = remove(document, provider_id, notes=notes)
            parts = list(notes)
        else:
            timeout, owned = _choose_timeout(document, provider_id, settings.timeout_seconds, *timeouts)
            timeout_written, timeout_kept_user = (timeout, None) if owned else (None, timeout)
            provider = desired_provider(models, base_url, api_key, timeout)
            new_document = merge(
                document, provider_id, provider,
                allowlist=settings.allowlist, allow_entries=settings.allow_entries, notes=notes,
            )
            allowlists = allowlists_in(new_document, settings.allowlist)
            parts = [f"provider {provider_id}, {_count(provider['models'])}",
                     "allowlist: " + (", ".join(allowlists) or "none to maintain"), *notes]
        text = files.render(new_document)
        unchanged = snapshot.exists and files.render(document) == text
        changes = [] if unchanged else describe_changes(document, new_document, provider_id) + notes
        return _Plan(document, new_document, text, unchanged, parts, changes, timeout_written, timeout_kept_user)

    snapshot = files.read_snapshot(path)
    try:
        plan = plan_for(snapshot)
    except OpenClawFileError:
        # Broken, or caught half-way through another writer's in-place rewrite: look again once
        # it has settled, and refuse only a file that stays broken.
        settled = files.read_settled(path)
        if settled.same_file_as(snapshot):
            raise
        snapshot, plan = settled, plan_for(settled)
    if not snapshot.exists:
        if removing:
            return SyncResult("unchanged", path, f"{path} does not exist; nothing to remove")
        if not settings.create:
            return _missing(path, provider_id, models)
    if plan.unchanged:
        return _unchanged(path, provider_id, plan, removing)
    diff = ""
    if with_diff:
        old_text = snapshot.raw.decode("utf-8-sig", errors="replace") if snapshot.raw is not None else ""
        diff = _redacted(_diff(old_text, plan.text, path))
    if dry_run:
        verb = "would create" if not snapshot.exists else "would change"
        return SyncResult("dry_run", path, _line(f"{verb} {path}", plan.changes), diff)

    if not snapshot.exists:
        files.ensure_directory(path)
    try:
        with holding_openclaw_lock(path, owner=files.intended_owner(snapshot)):
            return _write(settings, path, plan_for, (snapshot, plan), removing, diff, before_replace)
    except LockBusy as exc:
        return SyncResult("busy", path, f"{path}: {exc}; aiosd writes it at the next sync")


@dataclass(slots=True)
class _Rounds:
    """What the write rounds under one hold of the lock have done so far."""

    first: _Plan | None = None  # the first round's plan: its changes are the ones reported
    last: _Plan | None = None  # the last round's plan: its timeouts are the ones in the file now
    wrote: bool = False
    backup_tried: bool = False
    backup: Path | None = None  # the backup written by this sync, if one was
    checks_failed: int = 0  # rounds lost to another writer before or during the swap
    conflicts: int = 0  # rounds that merged again on top of a version a plain rename replaced


def _write(
    settings: OpenClawSettings,
    path: Path,
    plan_for: Callable[[files.Snapshot], _Plan],
    planned: tuple[files.Snapshot, _Plan],
    removing: bool,
    diff: str,
    before_replace: Callable[[Path], None] | None,
) -> SyncResult:
    """Write aiosd's entries, never undoing another writer's change.

    Each round merges into ``base`` and replaces ``expected`` (what must be at the path right
    before the swap: checked by inode and bytes). A change between the read and the swap means
    reading again. A change caught by the swap itself (the file aiosd replaced is not the one it
    expected) means another writer's version was just replaced: aiosd merges again on top of it
    and writes that, at once."""
    base = expected = files.read_snapshot(path)  # under the lock: the latest version
    existed = base.exists
    rounds = _Rounds()
    while True:
        gone = _nothing_to_write_to(settings, path, base, removing)
        if gone is not None:
            return gone
        # the version read before taking the lock, unchanged since: its merge is already done
        plan = planned[1] if base.same_file_as(planned[0]) else plan_for(base)
        rounds.first = rounds.first or plan
        rounds.last = plan
        if plan.unchanged and base is expected:
            if not rounds.wrote:
                return _unchanged(path, settings.provider_id, plan, removing)
            break
        following = _write_round(settings, path, base, expected, plan, rounds, before_replace)
        if following is None:
            break
        base, expected = following
    return _written(settings, path, rounds, existed, removing, diff)


def _nothing_to_write_to(
    settings: OpenClawSettings, path: Path, base: files.Snapshot, removing: bool
) -> SyncResult | None:
    """The result when the file is (now) absent and aiosd must not create it; None otherwise."""
    if base.exists:
        return None
    if removing:
        return SyncResult("unchanged", path, f"{path} does not exist; nothing to remove")
    if not settings.create:
        return _missing(path, settings.provider_id, ())
    return None


def _write_round(
    settings: OpenClawSettings,
    path: Path,
    base: files.Snapshot,
    expected: files.Snapshot,
    plan: _Plan,
    rounds: _Rounds,
    before_replace: Callable[[Path], None] | None,
) -> tuple[files.Snapshot, files.Snapshot] | None:
    """One round: write the temp file, check the file is still ``expected``, swap it in.

    Returns the (base, expected) the next round merges into and replaces, or None when the
    writing is over (done, or given up after ``MAX_MERGE_ROUNDS``: ``rounds`` says which)."""
    # Another writer's version that already has aiosd's entries goes back in as it was.
    data = base.raw if plan.unchanged and base.raw is not None else plan.text.encode("utf-8")
    tmp = _write_temp_beside(path, data, base, expected)
    try:
        if before_replace is not None:
            before_replace(path)
        current = files.read_snapshot(path)
        if not current.same_file_as(expected):
            files.discard(tmp)
            # someone else wrote meanwhile: merge again on top of their version
            return _after_lost_race(path, rounds, current)
        _keep_backup_once(settings, expected, rounds)
        ours = files.snapshot_of_temp(tmp, data, path)
        done, replaced = files.put_in_place(tmp, path, expected, ours)
    except BaseException:
        files.discard(tmp)
        raise
    if not done:  # another writer got there first; their version is in place: start again from it
        return _after_lost_race(path, rounds, None)
    rounds.wrote = True
    if (replaced is None or replaced.same_file_as(expected) or replaced.raw is None
            or not files.parses(replaced.raw) or rounds.conflicts >= MAX_MERGE_ROUNDS):
        return None
    # Only where the file system cannot swap: the rename replaced another writer's version
    # (written after aiosd's check), so merge again on top of theirs, and write that at once.
    rounds.conflicts += 1
    return replaced, ours


def _write_temp_beside(path: Path, data: bytes, base: files.Snapshot, expected: files.Snapshot) -> Path:
    """The temp file holding ``data``, with the mode and owner of the file it replaces."""
    files.check_writable(expected)
    files.remove_stale_temp_files(path)
    uid, gid = files.intended_owner(expected if expected.exists else base)
    mode = next((s.mode for s in (expected, base) if s.mode is not None), files.NEW_FILE_MODE)
    return files.write_temp(path, data, mode=mode, uid=uid, gid=gid)


def _after_lost_race(
    path: Path, rounds: _Rounds, current: files.Snapshot | None
) -> tuple[files.Snapshot, files.Snapshot] | None:
    """Count a round lost to another writer; the version to merge into next, or None after too many.

    ``current`` is what the check before the swap read (None when the swap itself lost): used as
    it is when whole, else the file is read again once the other writer has settled."""
    rounds.checks_failed += 1
    if rounds.checks_failed >= MAX_MERGE_ROUNDS:
        return None
    if current is not None and (current.raw is None or files.parses(current.raw)):
        return current, current
    settled = files.read_settled(path)
    return settled, settled


def _keep_backup_once(settings: OpenClawSettings, expected: files.Snapshot, rounds: _Rounds) -> None:
    """The first time aiosd replaces a JSON5 file (comments and all), keep the original if asked to."""
    if rounds.backup_tried or expected.raw is None or not settings.backup or files.is_plain_json(expected.raw):
        return
    rounds.backup_tried = True
    rounds.backup = files.keep_backup_once(expected)


def _written(
    settings: OpenClawSettings, path: Path, rounds: _Rounds, existed: bool, removing: bool, diff: str
) -> SyncResult:
    """The result of the write rounds: written, created or removed, or refused after too many races."""
    if not rounds.wrote or rounds.checks_failed >= MAX_MERGE_ROUNDS:
        return SyncResult("refused", path, (
            f"{path} changed {MAX_MERGE_ROUNDS} times while aiosd was writing it; will try again at the next sync"))
    first, last = rounds.first, rounds.last
    assert first is not None and last is not None  # every round plans before it can write
    changes = list(first.changes)
    if rounds.conflicts:
        changes.append(f"merged again on top of {rounds.conflicts} concurrent write(s)")
    if rounds.backup is not None:
        changes.append(f"original (JSON5, comments) kept as {rounds.backup.name}")
    if not existed:
        return SyncResult("created", path, _line(f"created {path}", first.parts), diff,
                          timeout_written=last.timeout_written, timeout_kept_user=last.timeout_kept_user)
    if removing:
        head = f"took provider {settings.provider_id} and its allowlist entries out of {path}"
        return SyncResult("removed", path, _line(head, changes), diff)
    return SyncResult("written", path, _line(f"updated {path}", changes), diff,
                      timeout_written=last.timeout_written, timeout_kept_user=last.timeout_kept_user)


def _missing(path: Path, provider_id: str, models: Sequence[ModelSpec]) -> SyncResult:
    return SyncResult("missing", path, (
        f"{path} does not exist and openclaw.create is off; aiosd would create it with provider {provider_id} "
        f"({_count(list(models))}). Set openclaw.create: true to let it, or openclaw.config_path "
        "to the file OpenClaw reads"))


def _unchanged(path: Path, provider_id: str, plan: _Plan, removing: bool) -> SyncResult:
    if removing:
        return SyncResult("unchanged", path, f"{path} has no entries of provider {provider_id}; nothing to remove")
    return SyncResult("unchanged", path, _line(f"{path} already up to date", plan.parts),
                      timeout_written=plan.timeout_written, timeout_kept_user=plan.timeout_kept_user)


def _choose_timeout(
    document: dict, provider_id: str, configured: int | None, wanted: int | None, ours: frozenset[int]
) -> tuple[int | None, bool]:
    """(timeoutSeconds to write, whether it is aiosd's own): openclaw.timeout_seconds when set; else the
    user's value in the file, kept; else ``wanted``. A value aiosd wrote before (``ours``) or would
    write now is not the user's."""
    if configured is not None:
        return configured, True
    found = existing_timeout(document, provider_id)
    if found is not None and found not in ours and found != wanted:
        return found, False
    return wanted, True


def _line(head: str, parts: list[str]) -> str:
    return f"{head} ({'; '.join(parts)})" if parts else head


def _count(rows: list) -> str:
    return f"{len(rows)} model" + ("" if len(rows) == 1 else "s")


def _diff(old_text: str, new_text: str, path: Path) -> str:
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{path} (before)" if old_text else "/dev/null",
            tofile=f"{path} (after)",
        )
    )


_API_KEY_VALUE = re.compile(r"""(["']?apiKey["']?\s*:\s*)(["'])(?:(?!\2)[^\\]|\\.)*\2""")


def _redacted(diff: str) -> str:
    """The diff without any provider's string apiKey (the CLI prints it; it is never logged)."""
    return _API_KEY_VALUE.sub(lambda m: f'{m[1]}{m[2]}{_REDACTED}{m[2]}', diff)
