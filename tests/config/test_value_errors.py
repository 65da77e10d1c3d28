"""A wrong value says what a valid one looks like, for every kind of key the schema has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aiosd.config.loader import ConfigError, load_config
from aiosd.config.schema import load_schema

DURATION = "a duration like 30s, 5m or 1.5h (units ms, s, m, h; a plain number is seconds)"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """Each problem as printed, without the file name."""
    path = tmp_path / "aiosd.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [str(p).removeprefix(f"{path}:") for p in caught.value.problems]


CASES = [
    # The example.
    ('kernel:\n  url: "localhost:8000"\n',
     "2:8: kernel.url: needs http:// or https:// (e.g. http://localhost:8000), got 'localhost:8000'"),
    ('kernel: {url: "http://"}\n',
     "1:15: kernel.url: must be a URL like http://localhost:8000: a host after the scheme, and no spaces; got 'http://'"),
    ('openclaw: {base_url: "127.0.0.1:8700/v1"}\n',
     "1:22: openclaw.base_url: needs http:// or https:// (e.g. http://127.0.0.1:8700/v1), got '127.0.0.1:8700/v1'"),
    ('listen: "localhost"\n', "1:9: listen: needs host:port, like 127.0.0.1:8700 or [::1]:8700, got 'localhost'"),
    ('listen: "127.0.0.1:70000"\n', "1:9: listen: port must be between 1 and 65535, got 70000"),
    ("openclaw: {provider_id: AIOS}\n",
     "1:25: openclaw.provider_id: may use lowercase letters, digits, '_' and '-', starting with a letter or digit "
     "(like aios), got 'AIOS'"),
    # Durations, every way they go wrong.
    ("kernel: {timeout: 1d}\n", f"1:19: kernel.timeout: must be {DURATION}, got '1d'"),
    ("kernel: {timeout: 5 minutes}\n", f"1:19: kernel.timeout: must be {DURATION}, got '5 minutes'"),
    ("kernel: {timeout: true}\n", f"1:19: kernel.timeout: must be {DURATION}, got boolean true"),
    ("retry: {budget: -1}\n",
     "1:17: retry.budget: a duration cannot be negative, got -1; write it like 30s, 5m or 1.5h"),
    ("kernel: {timeout: }\n",
     f"1:18: kernel.timeout: has no value (null); write {DURATION} after the colon, or remove the key"),
    # Enums list their choices.
    ("models: {defaults: {on_text_dropped: retry}}\n",
     "1:38: models.defaults.on_text_dropped: must be one of 'retry_without_tools', 'error', got 'retry'"),
    ("openclaw: {allowlist: all}\n",
     "1:23: openclaw.allowlist: must be one of 'auto', 'model_policy', 'none', got 'all'"),
    ("models: {defaults: {input: [text, audio]}}\n",
     "1:35: models.defaults.input[1]: must be one of 'text', 'image', got 'audio'"),
    # Numbers, booleans, lists.
    ("kernel: {max_concurrency: 0}\n", "1:27: kernel.max_concurrency: must be at least 1, got 0"),
    ("kernel: {max_concurrency: 1.5}\n",
     "1:27: kernel.max_concurrency: must be a whole number (like 4), got number 1.5"),
    ("retry: {backoff: {multiplier: fast}}\n",
     "1:31: retry.backoff.multiplier: must be a number (like 1.5), got string 'fast'"),
    ("retry: {backoff: {jitter: 5}}\n", "1:27: retry.backoff.jitter: must be at most 1, got 5"),
    ("openclaw: {sync: yes please}\n", "1:18: openclaw.sync: must be true or false, got string 'yes please'"),
    ("retry: {on_status: [429, 503, 429]}\n", "1:20: retry.on_status: has integer 429 twice"),
    ("retry: {on_status: [600]}\n", "1:21: retry.on_status[0]: must be at most 599, got 600"),
    ("models: {defaults: {input: []}}\n",
     "1:28: models.defaults.input: must list at least 1 entry (like [text] or [text, image])"),
    ("kernel: {probe_model: [a]}\n", "1:23: kernel.probe_model: must be text or null, got a list"),
    ("retry: [1]\n", "1:8: retry: must be a mapping (indented key: value lines), got a list"),
    # Models.
    ('models:\n  map:\n    "my model": {kernel_model: x}\n',
     "3:5: models.map: model id 'my model': ids may use letters, digits, '.', '_', ':', '-' and '/', starting with a "
     "letter or digit (like sonnet or gpt-4o)"),
    ("models:\n  map:\n    sonnet: {}\n",
     "3:13: models.map.sonnet: missing required key 'kernel_model' (the model's name in the kernel, like "
     "kernel_model: gpt-4o-mini)"),
    ("models:\n  map:\n    sonnet: {kernel_model: ''}\n", "3:28: models.map.sonnet.kernel_model: must not be empty"),
    # auth.keys entries.
    ("auth: {keys: [{}]}\n",
     "1:15: auth.keys[0]: must be a key (text of at least 8 characters), {key: KEY}, {env: NAME} or {file: PATH}: "
     "exactly one of key, env or file"),
    ("auth: {keys: [{env: A, file: b}]}\n",
     "1:15: auth.keys[0]: must be a key (text of at least 8 characters), {key: KEY}, {env: NAME} or {file: PATH}: "
     "exactly one of key, env or file"),
    ("auth: {keys: [{path: /k}]}\n",
     "1:16: auth.keys[0]: unknown key (not shown: it may be a secret); an entry is a key (text of at least 8 "
     "characters), {key: KEY}, {env: NAME} or {file: PATH}"),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[c[1].split(": ")[1] + " " + str(i) for i, c in enumerate(CASES)])
def test_a_wrong_value_says_what_a_valid_one_looks_like(tmp_path, text, expected):
    assert problems_of(tmp_path, text) == [expected]


def test_an_unknown_key_suggests_the_close_one_and_lists_the_keys_there(tmp_path):
    known = ", ".join(sorted(load_schema()["properties"]["kernel"]["properties"]))
    assert problems_of(tmp_path, "kernel: {urll: http://x}\n") == [
        f"1:10: kernel.urll: unknown key 'urll' (did you mean 'url'?); known keys here: {known}"]


# --- every key of the schema --------------------------------------------------------------------


def _leaves(node: dict, root: dict, path: tuple = ()):
    """(path, resolved schema) of every key that holds a value rather than more keys."""
    while "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "properties" in node and node.get("type") == "object":
        for key, sub in node["properties"].items():
            yield from _leaves(sub, root, (*path, key))
    else:
        yield path, node


def _document(path: tuple, value) -> str:
    for key in reversed(path):
        value = {key: value}
    return json.dumps(value) + "\n"  # JSON is YAML


# jsonschema's own sentences, which say neither where nor what would be right.
RAW = re.compile(r"is not of type|does not match|is not valid under|is not one of|should be non-empty|is too short")


def test_every_key_of_the_schema_explains_a_wrong_type_and_a_wrong_form(tmp_path):
    schema = load_schema()
    checked = []
    for path, node in _leaves(schema, schema):
        if path == ("models", "map") or path == ("auth", "keys"):
            continue  # user-keyed or a list of entries: covered above
        wrong_type = {"a": [1]}  # no key takes a mapping where a value belongs
        for text in (_document(path, wrong_type),
                     _document(path, "not a valid value @ all") if ("pattern" in node or "enum" in node) else None):
            if text is None:
                continue
            messages = problems_of(tmp_path, text)
            assert len(messages) == 1, (path, messages)
            message = messages[0]
            assert not RAW.search(message), message
            assert re.search(r"must be|needs|may use", message), message
            # It says what a valid value looks like: an example, the choices, or the form.
            assert re.search(r"\blike\b|e\.g\.|one of|true or false|\btext\b|\(like", message), message
            checked.append(path)
    assert len(set(checked)) > 30
