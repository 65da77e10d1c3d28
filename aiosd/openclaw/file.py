"""OpenClaw's config file on disk: where it is, reading it as JSON5, replacing it atomically (no merging)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import json5

from aiosd.config.loader import file_kind
from aiosd.config.settings import OpenClawSettings
from aiosd.openclaw.lock import pid_alive

NEW_FILE_MODE = 0o600
# How long aiosd waits for another writer that is visibly mid-write, and how often it looks.
SETTLE_TIMEOUT = 0.5
SETTLE_POLL = 0.002
NEW_DIR_MODE = 0o700
BACKUP_SUFFIX = ".aiosd-backup"
CONFLICT_SUFFIX = ".aiosd-conflict"
_TEMP_MARK = ".aiosd-"
_TEMP_SUFFIX = ".tmp"


class OpenClawFileError(Exception):
    """The file cannot be read, parsed or written. The message says what and where; the file is as it was."""


# --- where the file is -------------------------------------------------------------------------


def openclaw_home(env: Mapping[str, str] = os.environ) -> str:
    """What ``~`` means to OpenClaw: $OPENCLAW_HOME, else $HOME."""
    return env.get("OPENCLAW_HOME") or env.get("HOME") or os.path.expanduser("~")


def _expand_user(value: str, env: Mapping[str, str]) -> Path:
    if value == "~" or value.startswith("~/"):
        return Path(openclaw_home(env) + value[1:])
    return Path(os.path.expanduser(value))  # "~user/..." or a plain path


def resolve_openclaw_path(settings: OpenClawSettings, env: Mapping[str, str] = os.environ) -> Path:
    """The file OpenClaw reads: ``openclaw.config_path`` if set, else the way OpenClaw looks for it.

    Explicit path (``~`` is $OPENCLAW_HOME, else $HOME); otherwise $OPENCLAW_CONFIG_PATH, else
    $OPENCLAW_STATE_DIR/openclaw.json, else ~/.openclaw/openclaw.json.
    """
    if settings.config_path:
        path = _expand_user(settings.config_path, env)
    elif env.get("OPENCLAW_CONFIG_PATH"):
        path = _expand_user(env["OPENCLAW_CONFIG_PATH"], env)
    elif env.get("OPENCLAW_STATE_DIR"):
        path = _expand_user(env["OPENCLAW_STATE_DIR"], env) / "openclaw.json"
    else:
        path = Path(openclaw_home(env)) / ".openclaw" / "openclaw.json"
    return Path(os.path.abspath(path))


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The file's bytes and metadata as read at one moment; ``raw is None`` means it does not exist."""

    path: Path
    raw: bytes | None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    # Which file and which version of it: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).
    identity: tuple[int, int, int, int, int] | None = None

    @property
    def exists(self) -> bool:
        return self.raw is not None

    @property
    def inode(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the file that was read; None when there was none."""
        return self.identity[:2] if self.identity is not None else None

    def same_file_as(self, other: Snapshot) -> bool:
        """Both absent, or the same inode holding the same bytes (timestamps are too coarse alone)."""
        if not self.exists or not other.exists:
            return self.exists == other.exists
        return self.inode == other.inode and self.raw == other.raw


def _refuse_non_regular(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise OpenClawFileError(
            f"{path} is a symlink; aiosd does not replace symlinks (set openclaw.config_path to its target)"
        )
    if stat.S_ISDIR(st.st_mode):
        raise OpenClawFileError(f"{path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise OpenClawFileError(f"{path} is {file_kind(st.st_mode)}, not a regular file; not touching it")


def read_snapshot(path: Path) -> Snapshot:
    """Read the file (never following a symlink at its own name)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Snapshot(path, None)
    except NotADirectoryError:
        raise OpenClawFileError(f"{path}: a parent of it is not a directory") from None
    except OSError as exc:
        raise OpenClawFileError(f"cannot look at {path}: {_reason(exc)}") from None
    _refuse_non_regular(path, st)
    try:
        # O_NONBLOCK: if a FIFO is swapped in after the lstat, opening it must not wait for a
        # writer forever (fstat below then refuses it); on a regular file the flag changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return Snapshot(path, None)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OpenClawFileError(f"{path} became a symlink while aiosd read it") from None
        raise OpenClawFileError(f"cannot read {path}: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        _refuse_non_regular(path, st)
        raw, st = _read_whole(fd, st)
    except OSError as exc:
        raise OpenClawFileError(f"cannot read {path}: {_reason(exc)}") from None
    finally:
        os.close(fd)
    return _snapshot_of(path, raw, st)


def _snapshot_of(path: Path, raw: bytes, st: os.stat_result) -> Snapshot:
    # Only the permission bits are carried over to what aiosd writes: never set-id or sticky bits.
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return Snapshot(path, raw, stat.S_IMODE(st.st_mode) & 0o777, st.st_uid, st.st_gid, identity)


def _version(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _read_whole(fd: int, st: os.stat_result, attempts: int = 5) -> tuple[bytes, os.stat_result]:
    """The file's bytes, read again when it changed while it was read (an in-place writer at work)."""
    for _ in range(attempts):
        chunks = []
        offset = 0
        while chunk := os.pread(fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
        after = os.fstat(fd)
        if _version(after) == _version(st):
            break
        st = after
    return b"".join(chunks), st


def read_settled(path: Path, timeout: float = SETTLE_TIMEOUT) -> Snapshot:
    """Read the file, waiting (at most ``timeout``) while another writer is visibly mid-write."""
    return _settled(lambda: read_snapshot(path), timeout)


def _settled(read: Callable[[], Snapshot], timeout: float) -> Snapshot:
    """``read()`` again every few milliseconds until two reads agree (a writer rewriting the file in
    place has finished); after ``timeout`` the last read is returned as it is."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL)
        current = read()
        if current.identity == last.identity and current.raw == last.raw:
            return current
        last = current
    return last


def parses(raw: bytes) -> bool:
    """True when the bytes are a whole config document (another writer is not half-way through)."""
    try:
        parse_document(raw, Path("-"))
    except OpenClawFileError:
        return False
    return True


_JSON5_ERROR = re.compile(r"^<string>:(?P<line>\d+) (?P<what>.*) at column (?P<col>\d+)$", re.S)


def parse_document(raw: bytes, path: Path) -> dict:
    """Parse the file's bytes as JSON5 into its top-level object; errors say where the file is broken."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OpenClawFileError(f"{path} is not UTF-8 (byte {exc.start}); not touching it") from None
    if not text.strip():
        raise OpenClawFileError(f"{path} is empty; not touching it")
    try:
        document = _loads(text)
    except ValueError as exc:
        message = str(exc)
        m = _JSON5_ERROR.match(message)
        if m:
            what = m["what"].replace("\n", "\\n").replace("\r", "\\r")
            where = f"line {m['line']}, column {m['col']}: {what[:1].lower()}{what[1:]}"
        else:
            where = message.replace("\n", "\\n")
        raise OpenClawFileError(f"{path} is not valid JSON5 at {where}; not touching it") from None
    except RecursionError:
        raise OpenClawFileError(f"{path} is nested too deeply to parse; not touching it") from None
    if not isinstance(document, dict):
        raise OpenClawFileError(f"{path} does not hold a JSON object at the top; not touching it")
    return document


def _loads(text: str) -> object:
    # OpenClaw rewrites the file as plain JSON: the C parser reads 1 MB in ~10 ms, where json5's
    # pure-Python parser takes ~7 s holding the GIL (stalling the daemon's requests). JSON5 only
    # for files that are not plain JSON; its errors are the ones reported.
    try:
        return json.loads(text)
    except ValueError:
        return json5.loads(text)


def is_plain_json(raw: bytes) -> bool:
    """True when re-serialising loses nothing but whitespace (no comments, no JSON5-only syntax)."""
    try:
        json.loads(raw.decode("utf-8-sig"))
    except ValueError:
        return False
    return True


def render(document: dict) -> str:
    """The text aiosd writes: 2-space JSON with a trailing newline, as OpenClaw writes it.

    Always valid UTF-8, whatever the strings hold: the file's ``\\uD83D\\uDE00`` escapes come back
    from JSON5's parser as two surrogates, which become the one character they encode again (U+1F600),
    and a lone surrogate (legal in JSON, not in UTF-8) is written back as its escape ``\\ud83d``,
    so nothing of the user's file is lost (issue 18 item 6).
    """
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if _SURROGATE.search(text) is None:
        return text
    # Pairs are adjacent only inside one string (quotes separate strings), so this joins no strangers.
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


# --- writing -----------------------------------------------------------------------------------


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _nearest_existing_dir(path: Path) -> Path:
    for candidate in path.parents:
        if candidate.is_dir():
            return candidate
    return Path("/")


def _owner_of(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def _chown_as_root(target: int | Path, uid: int | None, gid: int | None) -> None:
    """Give the file or directory the intended owner; only root can, and failing to is not fatal."""
    if uid is None or gid is None or os.geteuid() != 0:
        return
    try:
        if isinstance(target, int):
            st = os.fstat(target)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(target, uid, gid)
        else:
            st = os.lstat(target)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(target, uid, gid, follow_symlinks=False)
    except OSError:
        pass  # e.g. EPERM in a user namespace: the file keeps aiosd's owner


def ensure_directory(path: Path) -> None:
    """Create the file's directory (0700; owned like its nearest existing parent when root)."""
    directory = path.parent
    if directory.is_dir():
        return
    uid, gid = _owner_of(_nearest_existing_dir(path))
    missing = [d for d in [directory, *directory.parents] if not d.exists()]
    try:
        for d in reversed(missing):
            os.mkdir(d, NEW_DIR_MODE)
            os.chmod(d, NEW_DIR_MODE)  # mkdir's mode is filtered by the umask
            _chown_as_root(d, uid, gid)
    except FileExistsError:
        if not directory.is_dir():
            raise OpenClawFileError(f"cannot create {directory}: a file is in the way") from None
    except OSError as exc:
        raise OpenClawFileError(f"cannot create directory {directory}: {_reason(exc)}") from None


def intended_owner(snapshot: Snapshot) -> tuple[int | None, int | None]:
    """The original owner, or for a new file the owner of its directory."""
    if snapshot.exists:
        return snapshot.uid, snapshot.gid
    try:
        return _owner_of(snapshot.path.parent)
    except OSError:
        return None, None


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def remove_stale_temp_files(path: Path) -> None:
    """Delete temp files (of the file or its backup) left behind by an aiosd process killed mid-write."""
    # the backup's prefix first: the file's own prefix is a prefix of it
    prefixes = (f".{backup_path_for(path).name}{_TEMP_MARK}", f".{path.name}{_TEMP_MARK}")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None or not name.endswith(_TEMP_SUFFIX):
            continue
        try:
            pid = int(name[len(prefix) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            os.unlink(path.parent / name)
        except OSError:
            pass


def write_temp(path: Path, data: bytes, *, mode: int, uid: int | None, gid: int | None) -> Path:
    """Write ``data`` to a new temp file beside ``path``, with its mode and owner, fsynced."""
    tmp = temp_path_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, NEW_FILE_MODE)
    except OSError as exc:
        raise OpenClawFileError(f"cannot write in {path.parent}: {_reason(exc)}") from None
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)
        _chown_as_root(fd, uid, gid)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        discard(tmp)
        raise OpenClawFileError(f"cannot write {path}: {_reason(exc)}") from None
    os.close(fd)
    return tmp


def discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself is done
    finally:
        os.close(fd)


# --- replacing it, and seeing what was replaced -------------------------------------------------
#
# A rename cannot say what it replaced, so a writer that renamed its own version in between aiosd's
# last check and aiosd's rename would be silently undone. renameat2(RENAME_EXCHANGE) swaps the two
# names atomically instead: afterwards the temp name holds exactly the file aiosd replaced, which
# is then compared with what aiosd expected. RENAME_NOREPLACE does the same for a file aiosd creates.

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """libc's renameat2, when this libc has it."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """True when done; False when the kernel or the file system cannot (the caller falls back)."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def snapshot_of_temp(tmp: Path, raw: bytes, path: Path) -> Snapshot:
    """What ``path`` will hold once the temp file ``tmp`` (holding ``raw``) is put in its place."""
    return _snapshot_of(path, raw, os.lstat(tmp))


def put_in_place(tmp: Path, path: Path, expected: Snapshot, ours: Snapshot) -> tuple[bool, Snapshot | None]:
    """Make ``tmp`` (holding ``ours``) the file at ``path`` atomically and durably, if ``path`` still
    holds ``expected`` at that moment.

    Returns (done, replaced). ``done`` is False when another writer got there first: it created the
    file aiosd meant to create, or it changed the file between aiosd's last check and the swap
    (renamed its own version in, or was writing into it). The swap is then undone at once, so
    their version is back at ``path`` within microseconds, never a merge round later, and ``tmp``
    is gone. ``replaced`` is, where the file system cannot swap, the file a plain rename replaced,
    read through a descriptor held across the rename (a writer that renamed its own version in at
    that very moment stays unseen there).
    """
    try:
        if not expected.exists:
            return _create(tmp, path), None
        swapped = _exchange(tmp, path, expected)
        if swapped is not None:
            return swapped, None
        replaced = _replace_watching_old(tmp, path, expected)
    except OSError as exc:
        discard(tmp)
        raise OpenClawFileError(f"cannot replace {path}: {_reason(exc)}") from None
    fsync_directory(path.parent)
    return True, replaced


def _exchange(tmp: Path, path: Path, expected: Snapshot) -> bool | None:
    """Swap ``tmp`` in; True if ``path`` held ``expected``, False if another writer's file was put
    back, None when the file system cannot swap (nothing done)."""
    pins = [_pin(tmp)]  # ours, held open so that its inode number cannot be reused meanwhile
    try:
        if not _renameat2(tmp, path, _RENAME_EXCHANGE):
            return None
        # The temp name now holds what was at ``path``: nobody else knows that name.
        pins.append(_pin(tmp))
        try:
            replaced_expected = read_snapshot(tmp).same_file_as(expected)
        except OpenClawFileError:  # a symlink or a FIFO was renamed in: not what aiosd expected
            replaced_expected = False
        if replaced_expected:
            discard(tmp)
            fsync_directory(path.parent)
            return True
        _swap_back(tmp, path, pins)
        return False
    finally:
        _unpin(pins)


def _pin(name: Path) -> tuple[int, tuple[int, int]]:
    """A descriptor on the file now at ``name`` (whatever its kind), and its (st_dev, st_ino)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    return fd, (st.st_dev, st.st_ino)


def _unpin(pins: list[tuple[int, tuple[int, int]]]) -> None:
    for fd, _ in pins:
        os.close(fd)


def _swap_back(tmp: Path, path: Path, pins: list[tuple[int, tuple[int, int]]], attempts: int = 64) -> None:
    """Put the newest of the other writers' files back at ``path``, and delete only files it superseded.

    ``pins`` hold aiosd's file and the one aiosd's swap replaced: files already known. Each swap
    brings to the temp name what was at ``path``. A known file there means ``path`` now holds the
    newest file (the one aiosd replaced, or one a writer renamed in meanwhile, which then was put
    back by the previous swap), and the known file goes. A file not seen before was renamed in by
    yet another writer since the last swap, so it is newer than what the swap just put at ``path``:
    swap again to put it back. (Swapping a fixed number of times instead, as before, could end
    with an older version in place and the newer one deleted: issue 18 item 6.) Every file seen is
    held open (``pins``; the caller closes them), so no inode number is reused and mistaken for a known one.
    """
    known = {inode for _, inode in pins}
    for _ in range(attempts):
        _renameat2(tmp, path, _RENAME_EXCHANGE)
        pins.append(_pin(tmp))
        if pins[-1][1] in known:
            discard(tmp)
            fsync_directory(path.parent)
            return
        known.add(pins[-1][1])
    # Writers still renaming their files in after `attempts` swaps (never seen in practice): the
    # temp name holds a writer's file newer than the one in place. Never delete it.
    kept = path.with_name(path.name + CONFLICT_SUFFIX)
    os.replace(tmp, kept)
    raise OpenClawFileError(f"{path} kept changing while aiosd put another writer's version back; the newest "
                            f"version it saw is kept as {kept}: compare the two")


def _create(tmp: Path, path: Path) -> bool:
    try:
        if not _renameat2(tmp, path, _RENAME_NOREPLACE):
            os.link(tmp, path)  # no renameat2 here: a hard link never replaces either
            discard(tmp)
    except FileExistsError:
        discard(tmp)
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(tmp, path)  # neither: the check before it is all there is
    fsync_directory(path.parent)
    return True


def _replace_watching_old(tmp: Path, path: Path, expected: Snapshot) -> Snapshot | None:
    """Plain rename, holding the old file open to see whether someone was writing into it meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        fd = None
    try:
        os.replace(tmp, path)
        if fd is None:
            return None

        def read_old() -> Snapshot:
            st = os.fstat(fd)
            raw, st = _read_whole(fd, st)
            return _snapshot_of(path, raw, st)

        old = read_old()
        return old if old.same_file_as(expected) else _settled(read_old, SETTLE_TIMEOUT)
    finally:
        if fd is not None:
            os.close(fd)


def backup_path_for(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def keep_backup_once(snapshot: Snapshot) -> Path | None:
    """Save the original beside the file as ``<name>.aiosd-backup`` unless a backup already exists.

    Returns the backup's path when one was written now. The backup is written to a temp file and
    hard-linked into place, so it is complete or absent and never overwritten.
    """
    assert snapshot.raw is not None
    backup = backup_path_for(snapshot.path)
    if os.path.lexists(backup):
        return None
    # 0600 whatever the original's mode: the copy holds the same secrets and nobody else needs it.
    tmp = write_temp(backup, snapshot.raw, mode=NEW_FILE_MODE, uid=snapshot.uid, gid=snapshot.gid)
    try:
        os.link(tmp, backup)
    except FileExistsError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise OpenClawFileError(f"cannot keep a backup at {backup}: {_reason(exc)}") from None
        try:  # no hard links here: a rename, still never over an existing backup
            if os.path.lexists(backup):
                return None
            os.replace(tmp, backup)
        except OSError as exc2:
            raise OpenClawFileError(f"cannot keep a backup at {backup}: {_reason(exc2)}") from None
    finally:
        discard(tmp)
    fsync_directory(backup.parent)
    return backup


def readable_by_others(mode: int | None) -> str | None:
    """Who besides the owner may read a file of this mode ("group", "others", "group and others"), or None."""
    if mode is None:
        return None
    who = [name for bit, name in ((stat.S_IRGRP, "group"), (stat.S_IROTH, "others")) if mode & bit]
    return " and ".join(who) or None


def check_writable(snapshot: Snapshot) -> None:
    """Refuse a file its owner made read-only for aiosd's user (a rename would bypass that)."""
    if snapshot.exists and not os.access(snapshot.path, os.W_OK, follow_symlinks=False):
        raise OpenClawFileError(f"{snapshot.path} is not writable for aiosd's user")
