"""Fuzzing the config loader.

Any text, or any document built from the schema's keys, loads as a Config or fails as a ConfigError that says where.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosd.config.loader import ConfigError, load_config
from aiosd.config.schema import load_schema
from aiosd.config.settings import Config
from aiosd.config.yaml_positions import load_yaml_with_positions

SCHEMA = load_schema()
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """One file the examples overwrite; HOME points into tmp, so '~' in a key file never reads the real home."""
    directory = tmp_path_factory.mktemp("config-fuzz")
    (directory / "key.txt").write_text("a-key-of-enough-length\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(directory))
        yield directory / "aiosd.yaml"


def load(path: Path, data: bytes) -> Config | ConfigError:
    path.write_bytes(data)
    try:
        config = load_config(path, env={"AIOSD_KEY": "a-key-from-the-environment"})
    except ConfigError as exc:
        return exc
    return config


def assert_config_or_clear_error(path: Path, data: bytes) -> None:
    outcome = load(path, data)
    if isinstance(outcome, Config):
        assert_sane(outcome)
        return
    assert outcome.problems, "a ConfigError with no problem in it"
    parsed = _parses(data)
    for problem in outcome.problems:
        assert problem.file == str(path)
        assert isinstance(problem.message, str) and problem.message.strip()
        if problem.line is not None:
            assert problem.line >= 1 and problem.column >= 1
        else:
            # The YAML parsed, so every problem can point at a line.
            assert not parsed, problem
        assert "\n" not in str(problem)  # one problem, one log line


def assert_sane(config: Config) -> None:
    """What the rest of aiosd relies on in a Config that loaded."""
    for seconds in (config.kernel.timeout, config.kernel.connect_timeout, config.kernel.queue_timeout,
                    config.kernel.ready_window, config.kernel.probe_interval, config.retry.budget,
                    config.retry.backoff.initial, config.retry.backoff.max, config.models.refresh_interval,
                    config.openclaw.interval, config.server.drain_timeout, config.server.reload_debounce):
        assert math.isfinite(seconds) and seconds >= 0, seconds
    assert math.isfinite(config.retry.backoff.multiplier) and math.isfinite(config.retry.backoff.jitter)
    assert 0 < config.listen_port < 65536
    assert all(isinstance(spec.id, str) and spec.id for spec in config.models.map)
    assert all(isinstance(key, str) and key for key in config.auth.keys)


def _parses(data: bytes) -> bool:
    try:
        return load_yaml_with_positions(data.decode("utf-8")) is not None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return False


# --- arbitrary YAML-ish text -------------------------------------------------------------------

SCHEMA_KEYS = sorted({key for key in yaml.safe_dump(SCHEMA).split() if key.endswith(":")})
YAML_TOKENS = st.sampled_from([
    "\n", "\n  ", "\n    ", ": ", ":", "- ", "-", "{", "}", "[", "]", ", ", "'", '"', "#", "&a ", "*a", "!!str ",
    "!!int ",
    "!!python/object:os.system ", "!!binary ", "? ", "|", ">", "---\n", "...\n", "%YAML 1.1\n", "\t", "\\", "~", "null",
    "true", "no", "0x1F", "1e309", ".nan", ".inf", "-.inf", "1_000", "0o17", "2024-01-01", "99999", "0", "-1",
    "250ms", "5m", "http://localhost:8000", "127.0.0.1:8700", "[::1]:8700", "\x00", "\ufeff", "é", "\U0001f600",
    "<<: ", "<<: *a", "prompt", "native", "sonnet", "{env: AIOSD_KEY}", "{file: key.txt}", "{file: '\\0'}",
    "kernel_model", "map", "defaults", "keys",
]) | st.sampled_from(SCHEMA_KEYS) | st.text(max_size=6)


@FUZZ
@given(pieces=st.lists(YAML_TOKENS, max_size=40))
def test_yaml_ish_text(config_file, pieces):
    assert_config_or_clear_error(config_file, "".join(pieces).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(config_file, data):
    assert_config_or_clear_error(config_file, data)


# --- structured documents built from the schema ------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**400), max_value=10**400) | st.floats()
           | st.text(max_size=12) | st.sampled_from(["", "0", "1s", "250ms", "-5s", "1e3", " 5 m", "\x00", "~", "~/x"]))
any_value = st.recursive(scalars,
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                         max_leaves=6)


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _texts(node: dict) -> list[st.SearchStrategy]:
    """Text values for a string key: the forms its pattern looks for (good and bad), then any text."""
    pattern = node.get("pattern", "")
    if "ms|s|m|h" in pattern:
        forms = [st.sampled_from(["0", "1s", "250ms", "5m", "1h", "1.5s", "10", " 2 s ", "1d", "-1s", "1e3"])]
    elif pattern.startswith("^https?"):
        forms = [st.sampled_from(["http://localhost:8000", "https://k:1/x/", "ftp://x", "http://", "http://a b"])]
    elif "listen" in node.get("description", "") or pattern.startswith("^(\\["):
        forms = [st.sampled_from(["127.0.0.1:8700", "[::1]:0", "0.0.0.0:80", "localhost:99999", "h:1", ":80"])]
    else:
        forms = []
    return [*forms, st.text(max_size=10)]


def from_schema(node: dict, depth: int = 0) -> st.SearchStrategy:
    """Values that mostly fit ``node``'s shape, mixed with arbitrary ones (wrong types, odd numbers)."""
    node = _resolve(node)
    fitting = []
    if "enum" in node:
        fitting.append(st.sampled_from(node["enum"]))
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "object" in types and "properties" in node:
        optional = {key: from_schema(sub, depth + 1) for key, sub in node["properties"].items()}
        fitting.append(st.fixed_dictionaries({}, optional=optional)
                       | st.fixed_dictionaries({}, optional={**optional, "unknown_key": any_value}))
    if "object" in types and isinstance(node.get("additionalProperties"), dict):
        ids = st.sampled_from(["sonnet", "gpt-4o", "a.b:c-d", "-bad", "", "has space", "ü"]) | st.integers(0, 9)
        fitting.append(st.dictionaries(ids, from_schema(node["additionalProperties"], depth + 1), max_size=3))
    if "array" in types:
        fitting.append(st.lists(from_schema(node.get("items", {}), depth + 1), max_size=3))
    if "string" in types:
        fitting += _texts(node)
    if {"env", "file"} <= set(node.get("properties", {})):
        fitting.append(st.sampled_from([{"env": "AIOSD_KEY"}, {"env": "UNSET"}, {"file": "key.txt"},
                                        {"file": "missing.txt"}, {"file": "\x00"}, {"file": "~/key.txt"},
                                        {"file": "."}, {"env": "AIOSD_KEY", "file": "key.txt"}]))
    if "integer" in types or "number" in types:
        fitting.append(st.integers(min_value=-2, max_value=2_000_000)
                       | st.integers(min_value=-(10**400), max_value=10**400))
    if "number" in types:
        fitting.append(st.floats())
    if "boolean" in types:
        fitting.append(st.booleans())
    if not fitting or depth > 4:
        return any_value
    return st.one_of(*fitting, any_value) if depth else st.one_of(*fitting)


documents = from_schema(SCHEMA)


@FUZZ
@given(document=documents, as_json=st.booleans())
def test_documents_built_from_the_schema(config_file, document, as_json):
    if as_json:  # JSON is YAML too, and writes floats like 1e+400 and NaN that YAML writers would not
        text = json.dumps(document, default=str)
    else:
        text = yaml.safe_dump(document, allow_unicode=True, default_flow_style=None)
    assert_config_or_clear_error(config_file, text.encode("utf-8", "surrogatepass"))


def schema_paths(node: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every key path the schema describes (a model map entry as ``sonnet``), with its schema node."""
    node = _resolve(node)
    found = [(path, node)] if path else []
    for key, sub in node.get("properties", {}).items():
        found += schema_paths(sub, (*path, key))
    if isinstance(node.get("additionalProperties"), dict):
        found += schema_paths(node["additionalProperties"], (*path, "sonnet"))
    return found


SCHEMA_PATHS = schema_paths(SCHEMA)
VALID = {
    "listen": "127.0.0.1:8700",
    "kernel": {"url": "http://localhost:8000", "timeout": "30s", "max_concurrency": 4},
    "retry": {"max_retries": 2, "on_status": [429, 503],
              "backoff": {"initial": "1s", "multiplier": 2, "max": "10s", "jitter": 0.1}},
    "models": {"discover": False,
               "map": {"sonnet": {"kernel_model": "gpt-4o-mini", "backend": "openai", "tools": "prompt"}}},
    "openclaw": {"sync": False},
    "auth": {"keys": ["a-literal-key-1", {"env": "AIOSD_KEY"}, {"file": "key.txt"}]},
    "server": {"max_body_bytes": 1048576},
}
# Values YAML can hold that JSON Schema does not see through: NaN, infinities, huge numbers, dates,
# NUL bytes, durations too long for a float, and mappings whose keys are not text.
nasty = st.sampled_from([
    float("nan"), float("inf"), float("-inf"), 10**400, -(10**400), 1e308, "9" * 400 + "s", "\x00", "a\nb",
    __import__("datetime").date(2024, 1, 1), {1: {"kernel_model": "x"}}, {None: "x"}, {True: "x"}, [[]], {},
    "~/key.txt", {"file": "\x00"}, {"file": "~"}, {"env": ""},
])


@FUZZ
@given(mutation=st.sampled_from(SCHEMA_PATHS).flatmap(
    lambda item: st.tuples(st.just(item[0]), nasty | from_schema(item[1], 1) | any_value)))
def test_one_bad_value_in_an_otherwise_valid_config(config_file, mutation):
    path, value = mutation
    document = json.loads(json.dumps(VALID))
    target = document
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    data = yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    assert_config_or_clear_error(config_file, data)


def test_the_valid_base_config_loads(config_file):
    assert isinstance(load(config_file, yaml.safe_dump(VALID).encode()), Config)


def test_the_structured_strategy_reaches_valid_configs(config_file):
    """Guard against a generator that only ever builds broken files (then the fuzz proves little)."""
    outcomes = []

    @settings(max_examples=100, deadline=None, database=None)
    @given(document=documents)
    def collect(document):
        outcomes.append(load(config_file, yaml.safe_dump(document).encode()))

    collect()
    assert any(isinstance(o, Config) for o in outcomes)
    assert any(isinstance(o, ConfigError) for o in outcomes)
    assert os.environ["HOME"] == str(config_file.parent)
