"""Syncing OpenClaw's openclaw.json on disk: never damaging it, writing only when needed, saying what happened.

Every file aiosd writes here is validated against OpenClaw's own config schema. All files live in
pytest's temp directories; HOME and OPENCLAW_* point there. The suite runs as root, which ignores
file modes, so "unwritable" and "disk full" are simulated by making ``os.open``, ``os.write`` or
``os.replace`` fail with the errno the kernel would give (EACCES, ENOSPC, EROFS).
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import json5
import pytest

from aiosd.openclaw.file import BACKUP_SUFFIX, resolve_openclaw_path
from aiosd.openclaw.sync import MAX_MERGE_ROUNDS, sync_openclaw
from tests.support.openclaw import (
    API_KEY,
    BASE_URL,
    assert_valid_openclaw,
    rich_file,
    settings,
    spec,
)

REPO = Path(__file__).resolve().parents[2]
SONNET, OPUS = spec("sonnet"), spec("opus", reasoning=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test may ever see the real ~/.openclaw."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("OPENCLAW_HOME", "OPENCLAW_CONFIG_PATH", "OPENCLAW_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def path(tmp_path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory / "openclaw.json"


def sync(path: Path, models=(SONNET,), **kwargs):
    """One sync with test settings; every file aiosd wrote must be valid for OpenClaw."""
    overrides = kwargs.pop("settings", {})
    kwargs.setdefault("base_url", BASE_URL)
    kwargs.setdefault("api_key", API_KEY)
    result = sync_openclaw(settings(path, **overrides), list(models), **kwargs)
    if result.changed:
        assert_valid_openclaw(path)
    return result


def leftovers(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path.parent) if n.endswith(".tmp"))


# --- where the file is -------------------------------------------------------------------------


def test_path_follows_openclaws_own_rules():
    s = settings(None)
    assert resolve_openclaw_path(s, {"HOME": "/h"}) == Path("/h/.openclaw/openclaw.json")
    assert resolve_openclaw_path(s, {"HOME": "/h", "OPENCLAW_HOME": "/oc"}) == Path("/oc/.openclaw/openclaw.json")
    assert resolve_openclaw_path(s, {"HOME": "/h", "OPENCLAW_STATE_DIR": "/state"}) == Path("/state/openclaw.json")
    env = {"HOME": "/h", "OPENCLAW_STATE_DIR": "/state", "OPENCLAW_CONFIG_PATH": "~/cfg/oc.json5"}
    assert resolve_openclaw_path(s, env) == Path("/h/cfg/oc.json5")
    # an explicit openclaw.config_path wins; ~ is $OPENCLAW_HOME, else $HOME
    explicit = settings("~/x/openclaw.json")
    assert resolve_openclaw_path(explicit, env) == Path("/h/x/openclaw.json")
    assert resolve_openclaw_path(explicit, {**env, "OPENCLAW_HOME": "/oc"}) == Path("/oc/x/openclaw.json")
    assert resolve_openclaw_path(settings("/etc/oc.json"), env) == Path("/etc/oc.json")


def test_default_path_is_used_when_nothing_is_configured(isolated_home):
    result = sync_openclaw(settings(None), [SONNET], base_url=BASE_URL, api_key=API_KEY)
    assert result.outcome == "created"
    assert result.path == isolated_home / ".openclaw" / "openclaw.json"
    assert stat.S_IMODE(os.stat(result.path.parent).st_mode) == 0o700


# --- a missing file ----------------------------------------------------------------------------


def test_a_missing_file_is_created_with_only_aiosds_keys(tmp_path):
    path = tmp_path / "new" / "dir" / "openclaw.json"
    result = sync(path)
    assert result.outcome == "created" and result.ok and result.changed
    document = json.loads(path.read_text())
    assert list(document) == ["models"] and list(document["models"]["providers"]) == ["aios"]
    assert path.read_text().endswith("}\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert not (path.parent / ("openclaw.json" + BACKUP_SUFFIX)).exists()


def test_a_missing_file_is_not_created_when_create_is_off_and_that_is_said_once(tmp_path, caplog):
    path = tmp_path / "absent" / "openclaw.json"
    with caplog.at_level(logging.DEBUG, logger="aiosd.openclaw"):
        first = sync(path, [SONNET, OPUS], settings={"create": False})
        again = sync(path, [SONNET, OPUS], settings={"create": False}, previous=first)
    assert first.outcome == again.outcome == "missing" and not first.ok
    # what it would do, and how to let it
    assert "would create it with provider aios (2 models)" in first.message
    assert "openclaw.create: true" in first.message and str(path) in first.message
    assert not path.parent.exists()
    # a warning at the first sync, debug at every one after it
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG]


def test_create_is_off_unless_the_config_says_so(tmp_path):
    from aiosd.config.loader import load_config

    config = tmp_path / "aiosd.yaml"
    config.write_text("openclaw: {sync: true}\n")
    assert load_config(config, env={}).openclaw.create is False
    config.write_text("openclaw: {create: true}\n")
    assert load_config(config, env={}).openclaw.create is True


# --- writing only when needed ------------------------------------------------------------------


def test_nothing_is_written_when_nothing_changed(path):
    assert sync(path).outcome == "created"
    before = os.stat(path)
    time.sleep(0.01)
    result = sync(path)
    assert result.outcome == "unchanged" and not result.changed and result.diff == ""
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_that_differs_only_in_comments_and_layout_is_not_rewritten(path):
    sync(path, [SONNET, OPUS])
    document = json.loads(path.read_text())
    text = "// mine\n" + json.dumps(document, indent=4).replace('"models": [', '"models": [ // the catalog\n')
    text = text.rstrip()[:-1] + ",}"  # a JSON5 trailing comma
    path.write_text(text)
    os.chmod(path, 0o600)
    assert sync(path, [SONNET, OPUS]).outcome == "unchanged"
    assert path.read_text() == text


def test_a_changed_model_list_is_written(path):
    sync(path, [SONNET])
    result = sync(path, [SONNET, OPUS], with_diff=True)
    assert result.outcome == "written"
    ids = [row["id"] for row in json.loads(path.read_text())["models"]["providers"]["aios"]["models"]]
    assert ids == ["sonnet", "opus"]
    assert any(line.startswith("+") and '"id": "opus"' in line for line in result.diff.splitlines())


def test_the_daemons_syncs_skip_the_diff_nobody_reads(path):
    sync(path, [SONNET])
    assert sync(path, [SONNET, OPUS]).diff == ""


# --- an existing file of either generation -------------------------------------------------------


@pytest.mark.parametrize("model_policy", [True, False], ids=["modelPolicy", "legacy-map"])
def test_an_existing_hand_edited_file_keeps_everything_else(path, model_policy):
    original = rich_file(model_policy=model_policy)
    path.write_text(original)
    os.chmod(path, 0o640)
    result = sync(path, [SONNET, OPUS])
    assert result.outcome == "written"
    document = json.loads(path.read_text())  # plain JSON now
    expected = json5.loads(original)
    for key in ("meta", "gateway", "logging"):
        assert document[key] == expected[key]
    assert document["models"]["providers"]["openrouter"] == expected["models"]["providers"]["openrouter"]
    defaults = document["agents"]["defaults"]
    assert defaults["model"] == expected["agents"]["defaults"]["model"]
    assert defaults["models"]["openrouter/qwen"] == {"alias": "q"}
    assert defaults["models"]["aios/sonnet"] == {"alias": "s"}  # the alias survives
    assert "aios/old" not in defaults["models"] and "aios/opus" in defaults["models"]
    if model_policy:
        assert defaults["modelPolicy"]["allow"] == ["openrouter/qwen", "q", "aios/*"]
    else:
        assert "modelPolicy" not in defaults
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    # the comments are gone from the file, so the original was kept beside it, once
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    assert backup.read_text() == original
    assert "kept as openclaw.json.aiosd-backup" in result.message
    path.write_text("// edited again\n" + path.read_text())
    assert sync(path, [SONNET]).outcome == "written"
    assert backup.read_text() == original


def test_no_backup_for_plain_json_or_when_switched_off(path):
    path.write_text(json.dumps({"gateway": {"port": 18789}}))
    assert sync(path).outcome == "written"
    path.write_text("// c\n" + json.dumps({"gateway": {"port": 18789}}))
    assert sync(path, settings={"backup": False}).outcome == "written"
    assert not path.with_name(path.name + BACKUP_SUFFIX).exists()


def test_owner_is_kept(path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file another owner")
    path.write_text("{}")
    os.chown(path, 1234, 2345)
    assert sync(path).outcome == "written"
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 2345)


def test_a_new_file_belongs_to_the_owner_of_its_directory(path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory another owner")
    os.chown(path.parent, 1234, 2345)
    assert sync(path).outcome == "created"
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 2345)


# --- someone else writing at the same time ---------------------------------------------------------


def test_a_concurrent_writer_between_read_and_rename_keeps_its_change(path):
    path.write_text(json.dumps({"gateway": {"port": 18789}}, indent=2))
    calls = []

    def openclaw_writes(p: Path) -> None:
        calls.append(p)
        if len(calls) == 1:  # OpenClaw saves its own change (temp + rename) while aiosd is mid-write
            document = json.loads(p.read_text())
            document["logging"] = {"level": "debug"}
            document.setdefault("agents", {})["defaults"] = {"modelPolicy": {"allow": ["openai/gpt-4o"]}}
            tmp = p.with_name("openclaw.json.openclaw-tmp")
            tmp.write_text(json.dumps(document, indent=2))
            os.replace(tmp, p)

    result = sync(path, [SONNET], _before_replace=openclaw_writes)
    assert result.outcome == "written" and len(calls) == 2
    document = json.loads(path.read_text())
    assert document["logging"] == {"level": "debug"} and document["gateway"] == {"port": 18789}
    assert document["agents"]["defaults"]["modelPolicy"]["allow"] == ["openai/gpt-4o", "aios/*"]
    assert "aios" in document["models"]["providers"]
    assert leftovers(path) == []


def test_a_concurrent_writer_who_already_wrote_aiosds_entries_means_no_write(path):
    path.write_text("{}")
    wanted = None

    def writes_the_same(p: Path) -> None:
        nonlocal wanted
        if wanted is None:
            wanted = sync_openclaw(settings(p), [SONNET], base_url=BASE_URL, api_key=API_KEY).outcome

    result = sync(path, _before_replace=writes_the_same)
    assert wanted == "written" and result.outcome == "unchanged"
    assert leftovers(path) == []


@pytest.mark.parametrize("how", ["rename", "in-place"])
def test_a_writer_between_the_last_check_and_the_swap_is_not_undone(path, monkeypatch, how):
    """The writer lands after aiosd's last re-read, right before its swap (simulated by running the
    writer inside the first swap call): the swap sees it replaced a file it did not expect, puts
    the writer's version back at once, and merges again on top of it."""
    import aiosd.openclaw.file as files

    path.write_text(json.dumps({"gateway": {"port": 18789}}, indent=2))
    real = files._renameat2
    landed = []

    def writer_lands_first(src, dst, flags):
        if not landed and flags == files._RENAME_EXCHANGE:
            landed.append(True)
            document = json.loads(path.read_text())
            document["logging"] = {"level": "debug"}
            if how == "rename":
                other = path.with_name("openclaw.json.openclaw-tmp")
                other.write_text(json.dumps(document, indent=2))
                os.replace(other, path)
            else:
                with open(path, "w") as f:
                    f.write(json.dumps(document, indent=2))
        return real(src, dst, flags)

    monkeypatch.setattr(files, "_renameat2", writer_lands_first)
    result = sync(path, [SONNET])
    assert landed and result.outcome == "written"
    document = json.loads(path.read_text())
    assert document["logging"] == {"level": "debug"} and "aios" in document["models"]["providers"]
    assert leftovers(path) == []


def test_a_second_writer_during_the_swap_back_is_not_reverted(path, monkeypatch):
    """Issue 18 item 6 (``_swap_back``): writer 1 renames its version in right before aiosd's swap, and
    writer 2 renames its own (made from what it read then: aiosd's) in right before the swap back.
    The swap back used to swap the two writers' files back and forth five times and leave writer 1's
    older version in place, deleting writer 2's: a reverted write. Now writer 2's version stays and
    aiosd merges again on top of it."""
    import aiosd.openclaw.file as files

    path.write_text(json.dumps({"gateway": {"port": 18789}}, indent=2))
    real = files._renameat2
    exchanges = []

    def writer_renames_in(marker: str) -> None:
        document = json.loads(path.read_text())
        document.setdefault("messages", {})["responsePrefix"] = marker
        other = path.with_name(f"openclaw.json.{marker}-tmp")
        other.write_text(json.dumps(document, indent=2))
        os.replace(other, path)

    def two_writers_land(src, dst, flags):
        if flags == files._RENAME_EXCHANGE:
            exchanges.append(flags)
            if len(exchanges) in (1, 2):  # before aiosd's swap, then before its swap back
                writer_renames_in(f"writer{len(exchanges)}")
        return real(src, dst, flags)

    monkeypatch.setattr(files, "_renameat2", two_writers_land)
    result = sync(path, [SONNET])
    # writer 2 copied aiosd's entries from what it read: there is nothing left for aiosd to write
    assert result.outcome in ("written", "unchanged"), result.message
    document = json.loads(path.read_text())
    assert document["messages"]["responsePrefix"] == "writer2"  # the newest write, not reverted
    assert "aios" in document["models"]["providers"] and document["gateway"] == {"port": 18789}
    assert leftovers(path) == [] and not list(path.parent.glob("*.aiosd-conflict"))


def test_writers_that_never_stop_during_the_swap_back_lose_nothing(path, monkeypatch):
    """Issue 18 item 6 (``_swap_back``): a new writer before every swap: the newest version seen is
    kept beside the file, never deleted, and the sync says so."""
    import aiosd.openclaw.file as files

    path.write_text(json.dumps({"gateway": {"port": 18789}}, indent=2))
    real = files._renameat2
    count = []

    def a_writer_every_time(src, dst, flags):
        if flags == files._RENAME_EXCHANGE:
            count.append(1)
            other = path.with_name("openclaw.json.w-tmp")
            other.write_text(json.dumps({"messages": {"responsePrefix": f"w{len(count)}"}}))
            os.replace(other, path)
        return real(src, dst, flags)

    monkeypatch.setattr(files, "_renameat2", a_writer_every_time)
    result = sync(path, [SONNET])
    assert result.outcome == "refused" and ".aiosd-conflict" in result.message
    versions = {json.loads(p.read_text())["messages"]["responsePrefix"]
                for p in (path, path.with_name("openclaw.json.aiosd-conflict"))}
    assert f"w{len(count)}" in versions  # the last writer's version is one of the two kept
    assert leftovers(path) == []


def test_a_file_that_keeps_changing_is_left_to_the_other_writer(path):
    path.write_text("{}")
    rounds = []

    def always_writes(p: Path) -> None:
        rounds.append(1)
        p.write_text(json.dumps({"gateway": {"port": 18000 + len(rounds)}}))

    result = sync(path, _before_replace=always_writes)
    assert result.outcome == "refused" and "changed" in result.message
    assert len(rounds) == MAX_MERGE_ROUNDS
    assert json.loads(path.read_text()) == {"gateway": {"port": 18000 + MAX_MERGE_ROUNDS}}
    assert leftovers(path) == []


# --- never damaging the file ---------------------------------------------------------------------


def test_an_unparseable_file_is_not_touched_and_the_error_says_where(path, caplog):
    broken = '{\n  gateway: { port: 18789 },\n  models: { providers: { x: } }\n}\n'
    path.write_text(broken)
    with caplog.at_level(logging.INFO, logger="aiosd.openclaw"):
        result = sync(path)
        again = sync(path)  # and the next interval tries again, with the same answer
    assert result.outcome == again.outcome == "refused"
    assert "line 3, column 29" in result.message and "not valid JSON5" in result.message
    assert path.read_text() == broken and leftovers(path) == []
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    path.write_text('{ gateway: { port: 18789 } }')  # fixed by hand: the next sync writes
    assert sync(path).outcome == "written"


@pytest.mark.parametrize("content, says", [("", "empty"), ("  \n", "empty"), ("[1, 2]", "JSON object"),
                                           (b"\xff\xfe{}", "not UTF-8"), ('{"a": 1}{"b": 2}', "JSON5")])
def test_an_empty_truncated_or_strange_file_is_not_touched(path, content, says):
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    result = sync(path)
    assert result.outcome == "refused" and says in result.message
    assert (path.read_bytes() if isinstance(content, bytes) else path.read_text()) == content


def test_a_symlink_is_refused_and_its_target_untouched(path, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    path.symlink_to(target)
    result = sync(path)
    assert result.outcome == "refused" and "symlink" in result.message
    assert path.is_symlink() and target.read_text() == "{}"


def test_a_directory_in_place_of_the_file_is_refused(path):
    path.mkdir()
    result = sync(path)
    assert result.outcome == "refused" and "is a directory" in result.message
    assert path.is_dir() and leftovers(path) == []


def test_a_directory_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "blocker").write_text("a file where the directory should be")
    result = sync(tmp_path / "blocker" / "sub" / "openclaw.json")
    assert result.outcome == "refused"


def test_an_unwritable_directory_is_refused(path, monkeypatch):
    """Simulated: root may write anywhere, so creating the temp file fails with EACCES instead."""
    path.write_text("{}")
    real_open = os.open

    def deny_new_files(file, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny_new_files)
    result = sync(path)
    assert result.outcome == "refused" and "Permission denied" in result.message
    assert str(path.parent) in result.message
    assert path.read_text() == "{}"


def test_a_read_only_file_is_refused(path, monkeypatch):
    """Simulated: root passes every access check, so os.access answers as it would for another user."""
    path.write_text("{}")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    result = sync(path)
    assert result.outcome == "refused" and "not writable" in result.message
    assert path.read_text() == "{}"


def test_a_full_disk_leaves_the_original_and_no_temp_file(path, monkeypatch):
    """Simulated: os.write fails with ENOSPC part-way through the temp file."""
    original = rich_file(model_policy=True)
    path.write_text(original)
    real_write = os.write

    def write_some_then_fail(fd, data):
        if len(data) > 100:
            real_write(fd, bytes(data[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_some_then_fail)
    result = sync(path)
    assert result.outcome == "refused" and "No space left on device" in result.message
    assert path.read_text() == original and leftovers(path) == []


def test_a_read_only_file_system_at_rename_leaves_the_original(path, monkeypatch):
    """Simulated: the rename (renameat2, or os.replace where that is missing) fails with EROFS."""
    import aiosd.openclaw.file as files

    path.write_text('{"gateway": {"port": 1}}')

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr(files, "_renameat2", read_only)
    result = sync(path)
    assert result.outcome == "refused" and "Read-only file system" in result.message
    assert path.read_text() == '{"gateway": {"port": 1}}' and leftovers(path) == []


def test_a_conflicting_value_where_aiosd_writes_is_refused(path):
    path.write_text('{"models": {"providers": ["not", "an", "object"]}}')
    result = sync(path)
    assert result.outcome == "refused" and "models.providers is not an object" in result.message


def test_temp_files_of_killed_writers_are_cleaned_up(path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = dead.stdout.strip()
    stale = [path.with_name(f".openclaw.json.aiosd-{pid}-abcd1234.tmp"),
             path.with_name(f".openclaw.json.aiosd-backup.aiosd-{pid}-abcd1234.tmp")]
    alive = path.with_name(".openclaw.json.aiosd-1-abcd1234.tmp")  # pid 1 is alive: not ours to delete
    for file in [*stale, alive]:
        file.write_text("{")
    sync(path)
    assert [file.exists() for file in [*stale, alive]] == [False, False, True]


KILL_CHILD = textwrap.dedent("""
    import sys
    from aiosd.config.settings import ModelSpec, OpenClawSettings
    from aiosd.openclaw.sync import sync_openclaw

    s = OpenClawSettings(sync=True, config_path=sys.argv[1], provider_id="aios", interval=60.0, base_url=None,
                         api_key=None, create=True, allowlist="auto", allow_entries="wildcard", backup=True,
                         timeout_seconds=None)

    def spec(i):
        return ModelSpec(id=f"m{i}", kernel_model=f"m{i}", backend=None, name=f"m{i} (via AIOS)", tools="prompt",
                         on_text_dropped="error", context_window=100000 + i, max_tokens=4096, input=("text",),
                         reasoning=False, source="map")

    lists = [[spec(0)], [spec(0), spec(1)], [spec(i) for i in range(40)]]
    print("ready", flush=True)
    i = 0
    while True:
        sync_openclaw(s, lists[i % 3], base_url="http://127.0.0.1:8700/v1", api_key="k" * (8 + i % 5))
        i += 1
""")


def test_a_writer_killed_at_random_points_leaves_a_file_that_parses(tmp_path):
    """SIGKILL aiosd mid-sync, many times: the file is always whole (the old or the new version)."""
    rng = random.Random(4)
    rounds, parallel = 30, 2
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    mid_write = 0
    for batch in range(rounds // parallel):
        procs = []
        for n in range(parallel):
            directory = tmp_path / f"run{batch}-{n}"
            directory.mkdir()
            path = directory / "openclaw.json"
            path.write_text("// seed\n{ gateway: { port: 18789 } }\n")
            proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            procs.append((proc, path))
        for proc, _ in procs:
            assert proc.stdout.readline() == b"ready\n"
        for proc, _ in procs:
            time.sleep(rng.uniform(0, 0.04))
            proc.send_signal(signal.SIGKILL)
        for proc, path in procs:
            proc.wait()
            proc.stdout.close()
            document = json5.loads(path.read_text())
            assert document["gateway"] == {"port": 18789}
            if "models" in document:
                assert_valid_openclaw(document)
            mid_write += bool(leftovers(path))
            # the next sync finishes the job and removes the dead writer's temp file
            assert sync(path).ok and leftovers(path) == []
    print(f"{mid_write} of {rounds} kills left a temp file behind (killed mid-write)")


# --- --dry-run and --remove ------------------------------------------------------------------------


def test_dry_run_prints_the_diff_and_writes_nothing(path):
    original = rich_file(model_policy=True)
    path.write_text(original)
    before = os.stat(path)
    result = sync(path, [SONNET, OPUS], dry_run=True)
    assert result.outcome == "dry_run" and not result.changed
    assert path.read_text() == original and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert not path.with_name(path.name + BACKUP_SUFFIX).exists()
    assert '-// OpenClaw config, edited by hand' in result.diff
    assert any(line.startswith("+") and '"aios/*"' in line for line in result.diff.splitlines())
    assert API_KEY not in result.diff and "sk-or-other-provider-secret" not in result.diff
    assert "<redacted>" in result.diff


def test_dry_run_of_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "nothing" / "openclaw.json"
    result = sync(path, dry_run=True)
    assert result.outcome == "dry_run" and "would create" in result.message
    assert result.diff.startswith("--- /dev/null") and not path.parent.exists()


def test_remove_takes_aiosds_entries_out_again(path):
    original = rich_file(model_policy=True)
    path.write_text(original)
    assert sync(path).outcome == "written"
    dry = sync(path, remove=True, dry_run=True)
    assert dry.outcome == "dry_run" and '-      "aios": {' in dry.diff
    result = sync(path, remove=True)
    assert result.outcome == "removed" and result.changed
    document = json.loads(path.read_text())
    assert list(document["models"]["providers"]) == ["openrouter"]
    assert document["agents"]["defaults"]["modelPolicy"]["allow"] == ["openrouter/qwen", "q"]
    assert document["agents"]["defaults"]["models"] == {"openrouter/qwen": {"alias": "q"}}
    assert sync(path, remove=True).outcome == "unchanged"


def test_remove_never_creates_a_file(tmp_path):
    path = tmp_path / "none" / "openclaw.json"
    assert sync(path, remove=True).outcome == "unchanged"
    assert not path.parent.exists()


# --- what it says ----------------------------------------------------------------------------------


def test_every_sync_logs_one_line_without_the_api_key(path, caplog):
    with caplog.at_level(logging.DEBUG, logger="aiosd.openclaw"):
        results = [sync(path), sync(path), sync(path, [OPUS]), sync(path, dry_run=True), sync(path, remove=True)]
        path.write_text("{ broken")
        results.append(sync(path))
    assert [r.outcome for r in results] == ["created", "unchanged", "written", "dry_run", "removed", "refused"]
    records = [r for r in caplog.records if r.name == "aiosd.openclaw"]
    assert len(records) == len(results)
    # nothing to do is debug (a minute's interval must not fill the journal); changes are info
    levels = [logging.INFO, logging.DEBUG, logging.INFO, logging.INFO, logging.INFO, logging.ERROR]
    assert [r.levelno for r in records] == levels
    for record, result in zip(records, results, strict=True):
        line = record.getMessage()
        assert "\n" not in line and API_KEY not in line and result.message in line
    assert "1 model" in results[0].message and "allowlist" in results[0].message


def test_a_changed_sync_says_what_changed_in_one_line(path, caplog):
    sync(path, [SONNET, spec("haiku")])
    with caplog.at_level(logging.INFO, logger="aiosd.openclaw"):
        result = sync(path, [SONNET, OPUS], base_url="http://127.0.0.1:9999/v1", api_key="sk-another-key-123456")
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    [record] = caplog.records
    line = record.getMessage()
    assert record.levelno == logging.INFO and "\n" not in line
    assert "models added: opus" in line and "models removed: haiku" in line
    assert "baseUrl http://127.0.0.1:8700/v1 -> http://127.0.0.1:9999/v1" in line
    assert "apiKey replaced" in line and "sk-another-key" not in line and API_KEY not in line
    assert result.message in line


def test_a_model_id_with_control_characters_stays_on_one_log_line(path, caplog):
    with caplog.at_level(logging.INFO, logger="aiosd.openclaw"):
        sync(path, [SONNET])
        sync(path, [SONNET, spec("evil\nINFO fake line\x1b[31m")])
    line = caplog.records[-1].getMessage()
    assert "\n" not in line and "\x1b" not in line and "evil\\x0aINFO fake line\\x1b[31m" in line


def test_status_line_names_the_outcome(path):
    result = sync(path)
    assert result.status_line().startswith("openclaw created at ")
    assert result.as_dict()["outcome"] == "created" and result.as_dict()["path"] == str(path)


# --- the command line --------------------------------------------------------------------------------


def write_config(tmp_path: Path, openclaw_path: Path, *, discover: bool, extra: str = "", create: bool = True) -> Path:
    config = tmp_path / "aiosd.yaml"
    config.write_text(textwrap.dedent(f"""\
        listen: 127.0.0.1:8711
        kernel:
          url: http://127.0.0.1:9
        models:
          discover: {str(discover).lower()}
          map:
            sonnet: {{kernel_model: claude-sonnet, backend: anthropic}}
        openclaw:
          config_path: {openclaw_path}
          create: {str(create).lower()}
        """) + extra)
    return config


def kernel_listing(*names):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/core/llms/list"
        llms = [{"name": n, "backend": "ollama", "hostname": "http://secret-host", "api_key": "kernel-secret"}
                for n in names]
        return httpx.Response(200, json={"status": "success", "llms": llms})

    return httpx.MockTransport(handler)


def kernel_down():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    return httpx.MockTransport(handler)


def run_cli(config_file: Path, *argv: str, transport=None):
    from aiosd.cli.openclaw import add_sync_openclaw_parser, run_sync_openclaw
    from aiosd.config.loader import load_config

    parser = argparse.ArgumentParser()
    add_sync_openclaw_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sync-openclaw", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = run_sync_openclaw(args, load_config(config_file), stdout=out, stderr=err, kernel_transport=transport)
    return code, out.getvalue(), err.getvalue()


def test_cli_syncs_map_and_discovered_models_map_winning(tmp_path, path):
    config = write_config(tmp_path, path, discover=True)
    # The kernel lists the mapped model (claude-sonnet) and a model named like the map id (sonnet).
    listing = ("sonnet", "llama3", "claude-sonnet")
    code, out, err = run_cli(config, transport=kernel_listing(*listing))
    assert code == 0 and err == ""
    assert out.rstrip().splitlines()[-1].startswith("created: created ")
    document = assert_valid_openclaw(path)
    rows = document["models"]["providers"]["aios"]["models"]
    assert [(r["id"], r["name"]) for r in rows] == [
        ("sonnet", "sonnet (via AIOS)"), ("claude-sonnet", "claude-sonnet (via AIOS)"), ("llama3", "llama3 (via AIOS)")]
    provider = document["models"]["providers"]["aios"]
    assert provider["baseUrl"] == "http://127.0.0.1:8711/v1" and provider["apiKey"] == "aiosd-local"
    assert "kernel-secret" not in path.read_text() and "secret-host" not in path.read_text()
    code, out, _ = run_cli(config, transport=kernel_listing(*listing))
    assert code == 0 and out.startswith("unchanged: ")


def test_cli_with_the_kernel_down_keeps_the_discovered_models_unless_told_map_only(tmp_path, path):
    config = write_config(tmp_path, path, discover=True)
    assert run_cli(config, transport=kernel_listing("sonnet", "llama3"))[0] == 0
    before = path.read_bytes()

    code, _out, err = run_cli(config, transport=kernel_down())
    assert code == 1
    assert "could not list the kernel's models" in err and "not syncing" in err and "--map-only" in err
    assert path.read_bytes() == before  # llama3 stays in OpenClaw's list

    code, _out, err = run_cli(config, "--map-only", transport=kernel_down())
    assert code == 0 and "models.map only" in err
    rows = json.loads(path.read_text())["models"]["providers"]["aios"]["models"]
    assert [r["id"] for r in rows] == ["sonnet"]


def test_cli_dry_run_prints_the_diff_and_remove_takes_it_out(tmp_path, path):
    config = write_config(tmp_path, path, discover=False,
                          extra="auth:\n  keys: [cli-test-secret-key]\n")
    code, out, _ = run_cli(config, "--dry-run")
    assert code == 0 and "+++ " in out and "would create" in out and not path.exists()
    assert "cli-test-secret-key" not in out
    assert run_cli(config)[0] == 0
    assert json.loads(path.read_text())["models"]["providers"]["aios"]["apiKey"] == "cli-test-secret-key"
    code, out, _ = run_cli(config, "--remove")
    assert code == 0 and "removed: " in out
    assert json.loads(path.read_text()) == {}


def test_cli_with_create_off_and_no_file_says_how_to_enable_and_exits_1(tmp_path, path):
    config = write_config(tmp_path, path, discover=False, create=False)
    code, out, err = run_cli(config)
    assert code == 1 and out == "" and not path.exists()
    assert err.startswith("missing: ") and "openclaw.create: true" in err


def test_cli_exits_1_when_refused(tmp_path, path):
    config = write_config(tmp_path, path, discover=False)
    path.write_text("{ nope")
    code, out, err = run_cli(config)
    assert code == 1 and out == "" and err.startswith("refused: ") and "line 1" in err


def test_cli_end_to_end_through_main(tmp_path, path, capsys):
    from aiosd.cli.main import main

    config = write_config(tmp_path, path, discover=False)
    assert main(["sync-openclaw", "--config", str(config), "--dry-run"]) == 0
    assert "would create" in capsys.readouterr().out and not path.exists()


# --- a FIFO or other special file --------------------------------------------------------------


def test_a_fifo_in_place_of_the_file_is_refused(path):
    os.mkfifo(path)
    result = sync(path)
    assert result.outcome == "refused" and "is a FIFO (named pipe), not a regular file" in result.message
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def test_a_fifo_swapped_in_after_the_check_does_not_hang_the_sync(path, monkeypatch):
    """The race of issue 11: the file is regular when aiosd looks, a FIFO when it opens it."""
    import threading

    path.write_text("{}")
    real_lstat = os.lstat
    swapped = []

    def lstat_then_swap(p, *args, **kwargs):
        st = real_lstat(p, *args, **kwargs)
        if Path(p) == path and not swapped:
            swapped.append(True)
            os.unlink(path)
            os.mkfifo(path)  # a real FIFO, with no writer: a blocking open waits for one forever
        return st

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    results = []
    thread = threading.Thread(target=lambda: results.append(sync(path)), daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # unblock the stuck reader before failing, so the test run can end
        fd = os.open(path, os.O_WRONLY)
        os.close(fd)
        thread.join(5)
        pytest.fail("the sync hung on a FIFO")
    [result] = results
    assert result.outcome == "refused" and "FIFO" in result.message and "not touching it" in result.message
    assert stat.S_ISFIFO(real_lstat(path).st_mode) and leftovers(path) == []


def test_a_socket_in_place_of_the_file_is_refused(tmp_path):
    import socket

    path = tmp_path / "oc.json"  # short: a socket path must fit in 108 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        result = sync(path)
    assert result.outcome == "refused" and "is a socket, not a regular file" in result.message


# --- file modes ----------------------------------------------------------------------------------


def test_what_aiosd_creates_is_0600_whatever_the_umask(tmp_path):
    path = tmp_path / "fresh" / "openclaw.json"
    old = os.umask(0)
    try:
        assert sync(path).outcome == "created"
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_the_backup_is_0600_even_when_the_original_is_world_readable(path):
    path.write_text("// a comment\n{}")
    os.chmod(path, 0o644)
    result = sync(path)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    assert result.outcome == "written" and backup.exists()
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # the file's own mode is the user's choice


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_an_existing_files_mode_is_kept_and_never_widened(path, mode):
    path.write_text("{}")
    os.chmod(path, mode | stat.S_ISUID)  # a set-id bit is never carried over
    assert sync(path).outcome == "written"
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_a_world_readable_file_with_aiosds_key_is_warned_about_once_with_the_chmod(path, caplog):
    path.write_text("{}")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="aiosd.openclaw"):
        first = sync(path)
        second = sync(path, [SONNET, OPUS], previous=first)
        third = sync(path, previous=second)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [first.outcome, second.outcome, third.outcome] == ["written", "written", "written"]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and f"chmod 600 {path}" in warnings[0] and "others" in warnings[0]
    assert API_KEY not in warnings[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_no_mode_warning_for_a_private_file_or_the_default_key(path, caplog):
    path.write_text("{}")
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING, logger="aiosd.openclaw"):
        sync(path)
        os.chmod(path, 0o644)
        sync(path, api_key="aiosd-local")  # no auth: the key opens nothing
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- the provider's timeoutSeconds ------------------------------------------------------------------


def timeout_in(path: Path):
    return json5.loads(path.read_text())["models"]["providers"]["aios"].get("timeoutSeconds")


def test_timeout_seconds_is_aiosds_worst_case_for_one_request_rounded_up_plus_a_margin(tmp_path):
    from aiosd.config.loader import load_config
    from aiosd.openclaw.sync import provider_timeout_seconds

    config = tmp_path / "aiosd.yaml"
    config.write_text("kernel: {timeout: 1.2s, queue_timeout: 0.5s}\n"
                      "retry: {max_retries: 1, budget: 0.11s}\n")
    # 0.5 s queue + 2 attempts x 1.2 s + 0.11 s of retry waits = 3.01 s -> 4 s, + 30 s
    assert provider_timeout_seconds(load_config(config, env={})) == 34
    config.write_text("logging: {level: info}\n")  # the defaults: 300 s queue + 4 x 600 s + 120 s of retry waits
    assert provider_timeout_seconds(load_config(config, env={})) == 2820 + 30


def test_timeout_seconds_is_written_and_follows_aiosds_config(path):
    first = sync(path, timeout_seconds=56)
    assert first.outcome == "created" and timeout_in(path) == 56  # and valid for OpenClaw (sync checks)
    second = sync(path, timeout_seconds=120, previous=first)
    assert second.outcome == "written" and timeout_in(path) == 120
    assert "timeoutSeconds 56 -> 120" in second.message
    assert sync(path, timeout_seconds=120, previous=second).outcome == "unchanged"


def test_a_timeout_the_user_wrote_into_openclaw_json_is_kept_and_a_short_one_warned_about_once(path, caplog):
    path.write_text(rich_file(model_policy=True))  # its aios provider sets timeoutSeconds: 900
    with caplog.at_level(logging.WARNING, logger="aiosd.openclaw"):
        first = sync(path, timeout_seconds=2850)
        second = sync(path, [SONNET, OPUS], timeout_seconds=2850, previous=first)
    assert first.outcome == second.outcome == "written" and timeout_in(path) == 900
    warnings = [r.getMessage() for r in caplog.records if "timeoutSeconds" in r.getMessage()]
    assert len(warnings) == 1 and "is 900, shorter than" in warnings[0] and "2850 s" in warnings[0]


def test_openclaw_timeout_seconds_in_aiosds_config_wins(path):
    path.write_text(rich_file(model_policy=False))
    assert sync(path, timeout_seconds=2850, settings={"timeout_seconds": 4000}).outcome == "written"
    assert timeout_in(path) == 4000


def test_timeout_seconds_in_aiosds_config_must_be_a_positive_integer(tmp_path):
    from aiosd.config.loader import ConfigError, load_config

    config = tmp_path / "aiosd.yaml"
    config.write_text("openclaw: {timeout_seconds: 0}\n")
    with pytest.raises(ConfigError, match="timeout_seconds"):
        load_config(config, env={})
    config.write_text("openclaw: {timeout_seconds: 900}\n")
    assert load_config(config, env={}).openclaw.timeout_seconds == 900
    config.write_text("logging: {level: info}\n")
    assert load_config(config, env={}).openclaw.timeout_seconds is None


# --- what the user's file holds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('// mine\n{messages: {responsePrefix: "smile \\uD83D\\uDE00"}}\n', "smile \U0001F600"),  # JSON5: a pair
        ('{"messages": {"responsePrefix": "lone \\ud83d here"}}\n', "lone \\ud83d here"),  # JSON: a lone one
        ('{"messages": {"responsePrefix": "backwards \\ude00\\ud83d"}}\n', "backwards \\ude00\\ud83d"),
    ],
    ids=["json5-pair", "lone", "reversed-pair"],
)
def test_escaped_surrogates_in_the_users_file_are_kept_and_the_file_stays_valid(path, caplog, text, kept):
    """Issue 18 item 6: a file holding escaped surrogates syncs (it failed every time with "internal
    error (UnicodeEncodeError)"); a valid pair stays the character, a lone one stays its escape."""
    path.write_text(text)
    result = sync(path, [SONNET])
    assert result.outcome == "written", result.message
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8
    written = raw.decode()
    assert f'"responsePrefix": "{kept}"' in written
    document = json.loads(written)
    assert "aios" in document["models"]["providers"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    again = sync(path, [SONNET])
    assert again.outcome == "unchanged" and path.read_text() == written
