"""Writing openclaw.json where the file system cannot swap (no renameat2): plain renames and hard links.

The fallback is forced: libc's renameat2 is replaced by one that fails with the errno a kernel or
file system without it gives (ENOSYS, EINVAL, EOPNOTSUPP), or is missing altogether (an old libc).
What the fallback promises: the file is replaced by a rename of a complete, fsynced temp file (never
written in place, so never truncated or half-written); a file aiosd creates never replaces one
another writer created meanwhile (a hard link never replaces); and another writer who wrote into the
old file between aiosd's last check and its rename is seen through a descriptor held across the
rename, so aiosd merges again on top of their version and writes that.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import aiosd.openclaw.file as files
from aiosd.openclaw.sync import SyncResult, sync_openclaw
from tests.support.openclaw import API_KEY, BASE_URL, assert_valid_openclaw, settings, spec

SONNET = spec("sonnet")
WRITERS_KEY = {"gateway": {"port": 18789}}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may ever see the real ~/.openclaw."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("OPENCLAW_HOME", "OPENCLAW_CONFIG_PATH", "OPENCLAW_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory / "openclaw.json"


def _failing_renameat2(err: int) -> Callable[[int, bytes, int, bytes, int], int]:
    """A renameat2 that fails the way it does where the kernel or the file system lacks it."""

    def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> int:
        calls.append(flags)
        ctypes.set_errno(err)
        return -1

    calls: list[int] = []
    renameat2.calls = calls  # type: ignore[attr-defined]  # the test reads which flags were tried
    return renameat2


@pytest.fixture(params=["ENOSYS", "EINVAL", "EOPNOTSUPP", "no renameat2 in libc"])
def no_renameat2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Force the fallback; returns the renameat2 flags aiosd tried (none when libc has no renameat2)."""
    if request.param == "no renameat2 in libc":
        monkeypatch.setattr(files, "_RENAMEAT2", None)
        return []
    fake = _failing_renameat2(getattr(errno, request.param))
    monkeypatch.setattr(files, "_RENAMEAT2", fake)
    return fake.calls  # type: ignore[attr-defined, no-any-return]  # set by _failing_renameat2


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bytes of the source at each os.replace(source, path) into the state directory, as it happened."""
    seen: list[bytes] = []
    real = os.replace

    def spying_replace(src: str | Path, dst: str | Path) -> None:
        seen.append(Path(src).read_bytes())
        real(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)  # the os module file.py calls
    return seen


def sync(path: Path, **kwargs: object) -> SyncResult:
    result = sync_openclaw(settings(path), [SONNET], base_url=BASE_URL, api_key=API_KEY, **kwargs)  # type: ignore[arg-type]
    if result.changed:
        assert_valid_openclaw(path)
    return result


def leftovers(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path.parent) if n.endswith(".tmp"))


def test_an_existing_file_is_replaced_by_a_whole_new_file_never_rewritten_in_place(
    path: Path, no_renameat2: list[int], renames: list[bytes]
) -> None:
    original = json.dumps(WRITERS_KEY, indent=2).encode()
    path.write_bytes(original)
    os.chmod(path, 0o640)
    old_inode = os.stat(path).st_ino
    with open(path, "rb") as old:  # the old file, as a reader that opened it before the sync sees it
        result = sync(path)
        assert old.read() == original  # never truncated or rewritten: the new file is another inode
    assert result.outcome == "written", result.message
    final = path.read_bytes()
    assert renames == [final]  # one plain rename, of a temp file already holding every byte
    assert os.stat(path).st_ino != old_inode
    document = json.loads(final)
    assert document["gateway"] == WRITERS_KEY["gateway"] and "aios" in document["models"]["providers"]
    assert os.stat(path).st_mode & 0o777 == 0o640  # the mode it found
    assert leftovers(path) == []
    if no_renameat2:
        assert no_renameat2 == [files._RENAME_EXCHANGE]  # it tried the swap, then fell back


def test_a_new_file_is_hard_linked_into_place_whole(path: Path, no_renameat2: list[int], renames: list[bytes]) -> None:
    result = sync(path)
    assert result.outcome == "created", result.message
    assert renames == []  # a hard link, not a rename: it could never have replaced a file
    assert "aios" in json.loads(path.read_text())["models"]["providers"]
    assert os.stat(path).st_mode & 0o777 == files.NEW_FILE_MODE
    assert os.stat(path).st_nlink == 1  # the temp name is gone
    assert leftovers(path) == []
    if no_renameat2:
        assert no_renameat2 == [files._RENAME_NOREPLACE]


def _other_writer_after_the_check(monkeypatch: pytest.MonkeyPatch, write: Callable[[], object]) -> list[bool]:
    """Run ``write`` once, after aiosd's last check and before its rename or link (where only the
    fallback can notice it): inside the first ``snapshot_of_temp``, called right before the swap."""
    landed: list[bool] = []
    real = files.snapshot_of_temp

    def writer_lands_first(tmp: Path, raw: bytes, target: Path) -> files.Snapshot:
        if not landed:
            landed.append(True)
            write()
        return real(tmp, raw, target)

    monkeypatch.setattr(files, "snapshot_of_temp", writer_lands_first)
    return landed


def test_a_writer_who_wrote_into_the_file_before_the_rename_is_merged_on_top_of(
    path: Path, no_renameat2: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path.write_text(json.dumps({"gateway": {"port": 1}}, indent=2))

    def write_in_place() -> None:
        with open(path, "r+") as f:
            f.truncate()
            f.write(json.dumps({**WRITERS_KEY, "logging": {"level": "debug"}}, indent=2))

    landed = _other_writer_after_the_check(monkeypatch, write_in_place)
    result = sync(path)
    assert landed and result.outcome == "written", result.message
    assert "merged again on top of 1 concurrent write(s)" in result.message
    document = json.loads(path.read_text())
    assert document["logging"] == {"level": "debug"} and document["gateway"] == WRITERS_KEY["gateway"]
    assert "aios" in document["models"]["providers"]
    assert leftovers(path) == []


def test_a_file_another_writer_created_meanwhile_is_not_replaced(
    path: Path, no_renameat2: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = {**WRITERS_KEY, "logging": {"level": "debug"}}
    landed = _other_writer_after_the_check(monkeypatch, lambda: path.write_text(json.dumps(theirs, indent=2)))
    result = sync(path)
    assert landed and result.ok, result.message
    document = json.loads(path.read_text())
    assert document["logging"] == theirs["logging"] and document["gateway"] == theirs["gateway"]
    assert "aios" in document["models"]["providers"]
    assert leftovers(path) == []


def test_where_neither_renameat2_nor_hard_links_work_a_new_file_is_still_written_whole(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "_RENAMEAT2", None)

    def no_hard_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    result = sync(path)
    assert result.outcome == "created", result.message
    assert "aios" in json.loads(path.read_text())["models"]["providers"]
    assert leftovers(path) == []


def test_an_unexpected_renameat2_error_is_a_refusal_with_the_file_as_it_was(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = json.dumps(WRITERS_KEY, indent=2)
    path.write_text(original)
    monkeypatch.setattr(files, "_RENAMEAT2", _failing_renameat2(errno.EIO))
    result = sync(path)
    assert result.outcome == "refused" and "cannot replace" in result.message
    assert path.read_text() == original
    assert leftovers(path) == []
