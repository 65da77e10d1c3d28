"""A config path that is not an ordinary config: special files, huge files, alias bombs, other files' data."""

from __future__ import annotations

import os
import socket
import time

import pytest

from aiosd.config.loader import MAX_CONFIG_BYTES, load_config, read_config_bytes
from aiosd.config.yaml_positions import MAX_YAML_NODES
from tests.support.config_files import only_problem, write


def billion_laughs(levels: int) -> str:
    """A few hundred bytes of nested aliases standing for 10**levels strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"listen: *a{levels - 1}"]) + "\n"


# --- not a regular file (issue 18 item 7) ---------------------------------------------------------


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    """Issue 18 item 7: a FIFO at the config path is refused without waiting for a writer (the reload
    used to block for ever on it)."""
    fifo = tmp_path / "aiosd.yaml"
    os.mkfifo(fifo)
    problem = only_problem(fifo)
    assert problem.message == ("is a FIFO (named pipe), not a regular file; aiosd reads its config only from a "
                               "regular file")


def test_a_symlink_to_dev_zero_is_refused_unread(tmp_path):
    """Issue 18 item 7: a symlink to /dev/zero is followed and refused as a device (it used to be read
    until memory ran out, 2 GB/s)."""
    link = tmp_path / "aiosd.yaml"
    link.symlink_to("/dev/zero")
    assert only_problem(link).message.startswith("is a device, not a regular file")


def test_a_socket_is_refused(tmp_path):
    """Issue 18 item 7: any special file is refused by its kind."""
    path = tmp_path / "aiosd.yaml"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert only_problem(path).message.startswith("is a socket, not a regular file")


def test_a_symlink_to_a_regular_config_is_still_read(tmp_path):
    target = write(tmp_path, 'listen: "127.0.0.1:8711"\n', name="real.yaml")
    link = tmp_path / "aiosd.yaml"
    link.symlink_to(target)
    assert load_config(link, env={}).listen == "127.0.0.1:8711"


def test_a_file_over_one_mib_is_refused_before_it_is_read(tmp_path):
    """Issue 18 item 7: the size is checked before reading (a sparse 8 GiB file costs nothing)."""
    path = tmp_path / "aiosd.yaml"
    with open(path, "wb") as handle:
        handle.truncate(8 << 30)
    problem = only_problem(path)
    assert problem.message == (f"is {8 << 30} bytes long; a config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB): "
                               "is this the right file?")


def test_a_config_of_exactly_the_limit_is_read(tmp_path):
    text = "# " + "x" * (MAX_CONFIG_BYTES - 6) + "\n{}\n"
    assert len(text) == MAX_CONFIG_BYTES
    assert read_config_bytes(write(tmp_path, text)) == text.encode()
    load_config(tmp_path / "aiosd.yaml", env={})


# --- aliases (issue 18 item 7) ---------------------------------------------------------------------


@pytest.mark.parametrize("levels", [7, 9])
def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path, levels):
    """Issue 18 item 7: a few hundred bytes standing for 10^7 (31 s in `aiosd check`) or 10^9 values
    (a core pinned for good) are refused at once, at the value that grows too large."""
    path = write(tmp_path, billion_laughs(levels))
    assert path.stat().st_size < 626
    started = time.process_time()
    problem = only_problem(path)
    assert problem.message.startswith(f"this value stands for more than {MAX_YAML_NODES} values once its aliases")
    assert problem.line == 5  # a4: 10^5 strings and its lists
    assert time.process_time() - started < 5  # CPU time, not wall time: 31 s before


def test_a_recursive_alias_is_refused(tmp_path):
    problem = only_problem(write(tmp_path, "models: &m {map: *m}\n"))
    assert "refers to a value that contains it" in problem.message


def test_ordinary_aliases_still_work(tmp_path):
    text = """\
models:
  map:
    sonnet: &claude {kernel_model: claude-sonnet-4-5, backend: anthropic}
    opus: *claude
"""
    config = load_config(write(tmp_path, text), env={})
    assert {m.id: (m.kernel_model, m.backend) for m in config.models.map} == {
        "sonnet": ("claude-sonnet-4-5", "anthropic"), "opus": ("claude-sonnet-4-5", "anthropic")}


def test_a_whole_number_written_as_a_huge_float_is_a_problem_not_a_crash(tmp_path):
    """Found by the loader fuzz while fixing issue 18: 1.0e+20 passed the schema's "integer" and then
    crashed the typed config with msgspec's ValidationError."""
    problem = only_problem(write(tmp_path, "openclaw: {timeout_seconds: 1.0e+20}\n"))
    assert (problem.key, problem.message) == ("openclaw.timeout_seconds",
                                              "must be a finite number of reasonable size, got 1e+20")


# --- another file's data (issue 18 item 8) ----------------------------------------------------------

SHADOW = ("root:*:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\nbin:*:20228:0:99999:7:::\n"
          "alice:$y$j9T$abcdefghijklmnop$QRSTUVWXYZabcdefghijkl:20228:0:99999:7:::\n")


def test_a_config_symlinked_to_a_password_file_is_named_as_such_and_none_of_it_is_quoted(tmp_path):
    """Issue 18 item 8: with the config a symlink to /etc/shadow, its lines appeared as "unknown key
    'root:*:20228:...'" in the journal, /status and the page. Now: one plain sentence, no line of it."""
    target = write(tmp_path, SHADOW, name="shadow")
    link = tmp_path / "aiosd.yaml"
    link.symlink_to(target)
    problem = only_problem(link)
    assert problem.message.startswith("this does not look like aiosd's config: 4 of its 4 top-level keys are "
                                      "unknown (the first: 'root…'); is --config (or $AIOSD_CONFIG) naming the "
                                      "right file?")
    for secret in ("20228", "$y$", "abcdefgh", "daemon", "alice", "*"):
        assert secret not in str(problem)


@pytest.mark.parametrize("line", ["nobody:$y$j9T$abcdefgh:20228:0:99999:7:::", "\x1b[31m:x:", "x" * 500 + ":"])
def test_an_unknown_key_that_is_not_key_shaped_is_quoted_by_a_short_start_only(tmp_path, line):
    """Issue 18 item 8: at most a short, escaped start of an unknown key is shown, in the message and in
    the key it is reported under."""
    import json

    text = f'listen: "127.0.0.1:8700"\nlogging: {{level: info}}\n{json.dumps(line)}:\n'
    problem = only_problem(write(tmp_path, text))
    assert len(str(problem)) < len(str(tmp_path)) + 400
    for leaked in ("20228", "$y$", "\x1b", "x" * 30):
        assert leaked not in str(problem)
    assert "unknown key" in problem.message


def test_a_typo_of_a_key_is_still_quoted_whole(tmp_path):
    problem = only_problem(write(tmp_path, 'kernel:\n  connect_timeuot: 1s\n'))
    assert (problem.key, problem.message.split(";")[0]) == (
        "kernel.connect_timeuot", "unknown key 'connect_timeuot' (did you mean 'connect_timeout'?)")


def test_a_top_level_of_text_quotes_nothing_of_it(tmp_path):
    """Issue 18 item 8: a file YAML reads as one string (shadow lines without a trailing colon)."""
    problem = only_problem(write(tmp_path, "root:*:20228:0:99999:7\nbin:*:20228\n"))
    assert "this does not look like aiosd's config" in problem.message and "20228" not in str(problem)
