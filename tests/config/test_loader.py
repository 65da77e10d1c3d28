"""The config loader: each kind of bad input gets its own clear, located message; defaults come from the schema."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from aiosd.config.loader import ConfigError, load_config
from aiosd.config.schema import load_schema, validator
from aiosd.config.settings import Config
from aiosd.config.shipped import example_config_path
from tests.support.config_files import only_problem, problems, where, write
from tests.support.model_specs import DEFAULTS

REPO = Path(__file__).resolve().parents[2]


def test_a_reload_may_refuse_an_empty_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "# all commented out\n"), env={}, empty_ok=False)
    assert caught.value.problems[0].message.startswith("the file is empty (or only comments); not applied")
    assert isinstance(load_config(write(tmp_path, "{}\n"), env={}, empty_ok=False), Config)  # what it suggests


# --- the file itself -----------------------------------------------------------------------


def test_a_missing_file_says_so_and_offers_the_example_shipped_in_the_package(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.missing
    (problem,) = caught.value.problems
    assert where(problem) == (None, None, "")
    example = example_config_path()
    assert example.is_file()
    assert str(problem) == (
        f"no config at {path}: create it from the commented example shipped with aiosd (cp {example} {path}, "
        "then set kernel.url and models.map), or run 'aiosd service install --system' (or --user), which installs "
        "it with a "
        "systemd unit; or name another file with --config PATH or $AIOSD_CONFIG")
    assert "not a valid" not in str(problem)


def test_an_invalid_file_is_not_reported_as_missing(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "logging: {level: loud}\n"), env={})
    assert not caught.value.missing


@pytest.mark.parametrize("text", ["", "\n\n", "# listen: 127.0.0.1:8700\n\n   # nothing else\n", "---\n",
                                  "--- # x\n..."])
def test_an_empty_file_or_one_of_only_comments_means_every_default(tmp_path, text):
    # Every key is optional, so a file with none is the defaults, like a file of "{}".
    config = load_config(write(tmp_path, text), env={})
    assert config == load_config(write(tmp_path, "{}\n", name="braces.yaml"), env={})
    assert (config.listen, config.kernel.url, config.models.map) == ("127.0.0.1:8700", "http://localhost:8000", ())


def test_a_directory_is_not_a_config_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    problem = only_problem(tmp_path / "conf.d")
    assert problem.message == "is a directory, not a config file"


def test_an_unreadable_file_names_the_user_that_cannot_read_it():
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to drop to")
    if os.getuid() != 0 and os.getuid() != nobody.pw_uid:
        pytest.skip("dropping to another user needs root")
    validator()  # the child reads nothing but the config file
    with tempfile.TemporaryDirectory() as directory:  # world-searchable, unlike pytest's tmp_path parents
        os.chmod(directory, 0o755)
        path = Path(directory) / "aiosd.yaml"
        path.write_text('listen: "127.0.0.1:8700"\n')
        path.chmod(0o000)
        # Root reads any file, so the load runs in a forked child that became 'nobody'.
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                try:
                    load_config(path, env={})
                    result = "loaded"
                except ConfigError as exc:
                    result = str(exc)
                os.write(write_end, result.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
    assert message == f"{path}: permission denied: the user running aiosd (uid {nobody.pw_uid}) cannot read this file"


def test_non_utf8_bytes_are_located_by_line_and_column(tmp_path):
    path = write(tmp_path, b'listen: "127.0.0.1:8700"\nkernel:\n  agent_name: "caf\xe9"\n')
    problem = only_problem(path)
    assert (problem.line, problem.column) == (3, 19)
    assert "not UTF-8" in problem.message and "0xe9" in problem.message


def test_invalid_yaml_is_located(tmp_path):
    problem = only_problem(write(tmp_path, "kernel:\n  url: a\n    timeout: 5s\n"))
    assert (problem.line, problem.column) == (3, 5)
    assert problem.message.startswith("invalid YAML: the keys under 'kernel' (line 1) are not lined up")


def test_a_duplicate_key_names_both_lines_and_its_path(tmp_path):
    text = 'kernel:\n  url: "http://a:1"\n  agent_name: x\n  url: "http://b:1"\n'
    problem = only_problem(write(tmp_path, text))
    assert where(problem) == (4, 3, "kernel.url")
    assert problem.message == "key 'url' is written twice, at line 2 and at line 4; keep one"


def test_a_duplicate_model_id_in_the_map_is_refused(tmp_path):
    text = "models:\n  map:\n    a: {kernel_model: x}\n    a: {kernel_model: y}\n"
    assert where(only_problem(write(tmp_path, text))) == (4, 5, "models.map.a")


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("hello\n", "string")])
def test_the_top_level_must_be_a_mapping(tmp_path, text, kind):
    problem = only_problem(write(tmp_path, text))
    assert problem.message == (f"the top level must be a mapping of keys, not a {kind}: this does not look like "
                               "aiosd's config; is --config (or $AIOSD_CONFIG) naming the right file?")


# --- what the keys say ---------------------------------------------------------------------


def test_unknown_keys_at_every_level_are_all_reported_at_once(tmp_path):
    text = """\
lisen: "127.0.0.1:8700"
kernel:
  urll: "http://x:1"
retry:
  backoff: {inital: 1s}
models:
  map:
    sonnet: {kernel_model: m, colour: red}
"""
    found = problems(write(tmp_path, text))
    assert [where(p) for p in found] == [
        (1, 1, "lisen"),
        (3, 3, "kernel.urll"),
        (5, 13, "retry.backoff.inital"),
        (8, 31, "models.map.sonnet.colour"),
    ]
    assert found[0].message.startswith("unknown key 'lisen' (did you mean 'listen'?); known keys here: "
                                       "allow_remote, auth, continuation, health, kernel, kernels, listen")
    assert "known keys here: initial, jitter, max, multiplier" in found[2].message


def test_wrong_types_say_what_was_expected_and_what_was_found(tmp_path):
    text = 'kernel:\n  max_concurrency: "four"\nmodels:\n  discover: maybe\nretry:\n  on_status: 429\n'
    found = problems(write(tmp_path, text))
    assert [(where(p), p.message) for p in found] == [
        ((2, 20, "kernel.max_concurrency"), "must be a whole number (like 4), got string 'four'"),
        ((4, 13, "models.discover"), "must be true or false, got string 'maybe'"),
        ((6, 14, "retry.on_status"), "must be a list (like [a, b], or one '- item' per line), got integer 429"),
    ]


def test_an_empty_section_is_called_null_not_a_crash(tmp_path):
    problem = only_problem(write(tmp_path, "kernel:\nlogging: {level: info}\n"))
    assert where(problem) == (1, 8, "kernel")
    assert problem.message.startswith("has no value (null)")


def test_bad_durations_show_the_accepted_forms(tmp_path):
    text = "kernel:\n  timeout: 10 minutes\nretry:\n  budget: -5\n  backoff: {initial: 1d}\n"
    found = problems(write(tmp_path, text))
    assert [where(p) for p in found] == [
        (2, 12, "kernel.timeout"), (4, 11, "retry.budget"), (5, 22, "retry.backoff.initial")]
    assert found[0].message == (
        "must be a duration like 30s, 5m or 1.5h (units ms, s, m, h; a plain number is seconds), "
                                "got '10 minutes'")
    assert found[1].message == "a duration cannot be negative, got -5; write it like 30s, 5m or 1.5h"
    assert "got '1d'" in found[2].message


def test_a_zero_kernel_timeout_is_refused(tmp_path):
    problem = only_problem(write(tmp_path, "kernel: {timeout: 0s}\n"))
    assert (problem.key, problem.message) == ("kernel.timeout", "must be more than 0")


def test_bad_enums_list_the_choices(tmp_path):
    found = problems(write(tmp_path, "logging: {level: verbose}\nmodels:\n  defaults: {tools: sometimes}\n"))
    assert [(where(p), p.message) for p in found] == [
        ((1, 18, "logging.level"), "must be one of 'debug', 'info', 'warning', 'error', got 'verbose'"),
        ((3, 21, "models.defaults.tools"), "must be one of 'prompt', 'native', 'none', got 'sometimes'"),
    ]


def test_a_model_without_kernel_model_is_refused(tmp_path):
    problem = only_problem(write(tmp_path, "models:\n  map:\n    sonnet: {backend: anthropic}\n"))
    assert where(problem) == (3, 13, "models.map.sonnet")
    assert problem.message == ("missing required key 'kernel_model' (the model's name in the kernel, like "
                               "kernel_model: gpt-4o-mini)")


def test_a_non_loopback_listen_without_auth_keys_is_refused(tmp_path):
    problem = only_problem(write(tmp_path, 'listen: "0.0.0.0:8700"\n'))
    assert where(problem) == (1, 9, "listen")
    assert "not a loopback address and auth.keys is empty" in problem.message
    assert "allow_remote: true" in problem.message


def test_a_non_loopback_listen_is_accepted_with_a_key_or_allow_remote(tmp_path):
    with_key = load_config(write(tmp_path, 'listen: "0.0.0.0:8700"\nauth: {keys: ["0123456789abcdef"]}\n'), env={})
    assert with_key.auth.keys == ("0123456789abcdef",)
    opted_in = load_config(write(tmp_path, 'listen: "0.0.0.0:8700"\nallow_remote: true\n'), env={})
    assert (opted_in.listen_host, opted_in.listen_port) == ("0.0.0.0", 8700)


def test_auth_keys_come_from_the_environment_and_from_files(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("file-key-0123456789\nignored second line\n")
    path = write(tmp_path, "auth:\n  keys: [{env: AIOSD_KEY}, {file: secret/key}]\n")
    config = load_config(path, env={"AIOSD_KEY": "  env-key-0123456789\n"})
    assert config.auth.keys == ("env-key-0123456789", "file-key-0123456789")


def test_a_missing_key_env_var_and_unreadable_key_files_are_each_reported(tmp_path):
    (tmp_path / "a-directory").mkdir()
    text = ("auth:\n  keys:\n    - {env: AIOSD_MISSING}\n    - {file: /nonexistent/aiosd-key}\n"
            "    - {file: a-directory}\n")
    found = problems(write(tmp_path, text))
    assert [where(p) for p in found] == [(3, 7, "auth.keys[0]"), (4, 7, "auth.keys[1]"), (5, 7, "auth.keys[2]")]
    assert found[0].message == "environment variable AIOSD_MISSING is not set or holds fewer than 8 characters"
    assert found[1].message == "cannot read key file /nonexistent/aiosd-key: No such file or directory"
    assert found[2].message == f"cannot read key file {tmp_path / 'a-directory'}: Is a directory"


def test_backoff_max_below_initial_is_refused(tmp_path):
    problem = only_problem(write(tmp_path, "retry:\n  backoff: {initial: 30s, max: 10s}\n"))
    assert where(problem) == (2, 32, "retry.backoff.max")
    assert problem.message == "must be at least retry.backoff.initial (30s)"


def test_a_problem_prints_as_file_line_column_key_message(tmp_path):
    path = write(tmp_path, "logging: {level: loud}\n")
    assert str(only_problem(path)) == (
        f"{path}:1:18: logging.level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'")


# --- what a good file gives ----------------------------------------------------------------


def test_defaults_come_from_the_schema(tmp_path):
    config = load_config(write(tmp_path, "logging: {level: info}\n"), env={})
    assert isinstance(config, Config)
    assert config.listen == "127.0.0.1:8700"
    assert (config.kernel.url, config.kernel.agent_name, config.kernel.timeout, config.kernel.max_concurrency) == (
        "http://localhost:8000", "openclaw", 600.0, 4)
    assert (config.retry.max_retries, config.retry.on_status, config.retry.budget) == (3, frozenset({429}), 120.0)
    backoff = config.retry.backoff
    assert (backoff.initial, backoff.multiplier, backoff.max) == (20.0, 1.0, 60.0)
    assert (config.models.discover, config.models.refresh_interval, config.models.map) == (True, 60.0, ())
    assert (config.models.defaults.context_window, config.models.defaults.max_tokens, config.models.defaults.tools) == (
        200000, 8192, "prompt")
    assert config.models.defaults == DEFAULTS  # the tests' model_spec() builds on the real defaults
    assert (config.openclaw.sync, config.openclaw.provider_id, config.openclaw.interval) == (True, "aios", 60.0)
    assert (config.server.drain_timeout, config.server.reload_debounce) == (30.0, 0.1)
    assert config.log_level == "info" and config.auth.keys == ()


def test_durations_accept_every_documented_form(tmp_path):
    text = "kernel: {timeout: 250ms, connect_timeout: 2, queue_timeout: 5m, ready_window: 1h, probe_interval: 1.5s}\n"
    kernel = load_config(write(tmp_path, text), env={}).kernel
    assert (kernel.timeout, kernel.connect_timeout, kernel.queue_timeout, kernel.ready_window,
            kernel.probe_interval) == (
        0.25, 2.0, 300.0, 3600.0, 1.5)


def test_the_config_object_is_immutable(tmp_path):
    config = load_config(write(tmp_path, "logging: {level: info}\n"), env={})
    with pytest.raises(AttributeError):
        config.kernel.timeout = 1  # type: ignore[misc]


def test_the_example_config_passes_and_says_what_the_issue_says(tmp_path):
    config = load_config(REPO / "config" / "aiosd.yaml", env={})
    assert config.listen == "127.0.0.1:8700"
    assert config.kernel.url == "http://localhost:8000"
    assert [(m.id, m.kernel_model, m.backend, m.tools) for m in config.models.map] == [
        ("sonnet", "claude-sonnet-4-5-20250929", "anthropic", "prompt")]
    assert config.openclaw.config_path is None  # found as OpenClaw finds it


# --- the schema itself ---------------------------------------------------------------------


def _walk(node, root, path, seen):
    """Yield (path, resolved schema node) for every subschema, following $ref once per target."""
    if isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        if node["$ref"] in seen:
            yield path, merged
            return
        seen = seen | {node["$ref"]}
        node = merged
    if not isinstance(node, dict):
        return
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, root, f"{path}.{key}" if path else key, seen)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], root, f"{path}.<id>", seen)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], root, f"{path}[]", seen)


def test_the_schema_describes_every_key_and_allows_no_stray_keys():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator().check_schema(schema)
    nodes = list(_walk(schema, schema, "", frozenset()))
    assert len(nodes) > 50
    # Every key (and a map's entries) is described; list items are described by their list.
    undescribed = [path for path, node in nodes if path and not path.endswith("[]") and not node.get("description")]
    assert undescribed == []
    loose = []
    for path, node in nodes:
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types) or "properties" in node
        if not is_object:
            continue
        extra = node.get("additionalProperties")
        # A map keyed by the user (models.map) constrains its keys and its values instead.
        if extra is False or (isinstance(extra, dict) and "propertyNames" in node):
            continue
        loose.append(path or "<top>")
    assert loose == []


def test_every_schema_default_is_itself_valid(tmp_path):
    # An empty mapping for every section gets all defaults; the result must load.
    text = "".join(f"{key}: {{}}\n" for key, node in load_schema()["properties"].items()
                   if node.get("type") == "object")
    assert isinstance(load_config(write(tmp_path, text), env={}), Config)


def test_the_installed_package_ships_its_schema_and_the_example_config(tmp_path):
    """A wheel holds both files where the code looks for them, so a non-editable install finds them."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("aiosd-*.whl"))).namelist()
    assert "aiosd/schemas/aiosd.schema.json" in names
    assert "aiosd/examples/aiosd.yaml" in names
