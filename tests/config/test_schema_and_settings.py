"""The JSON Schema and the typed settings agree.

Every key is a field, every field a key (or a declared derived value), every default the same.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

import msgspec
import pytest

from aiosd.config.durations import parse_duration
from aiosd.config.loader import load_config
from aiosd.config.schema import DURATION_REF, load_schema
from aiosd.config.settings import AuthSettings, ClientKey, Config, ModelSpec

# Fields that are not a file key of the same name: the key they are derived from (None: not from the file).
DERIVED = {
    (Config, "listen_host"): "listen",
    (Config, "listen_port"): "listen",
    (Config, "log_level"): "logging.level",
    (Config, "source_path"): None,
    (AuthSettings, "clients"): "auth.keys[]",  # one ClientKey per entry, checked against the entry's keys below
    (ModelSpec, "id"): "models.map",  # the entry's key
    (ModelSpec, "source"): None,
}
# Where a derived field's class is checked against the keys it is read from.
DERIVED_SECTIONS = {(AuthSettings, "clients"): (ClientKey, "auth.keys[]")}
# File keys that become other fields (see DERIVED) or are read and never kept (the secret's source).
FILE_ONLY = {"listen", "logging", "auth.keys[].key", "auth.keys[].env", "auth.keys[].file"}


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _section_class(hint: Any) -> type | None:
    """The settings class a field holds: itself, or the item of a tuple, or the non-None side of ``X | None``."""
    if dataclasses.is_dataclass(hint):
        return typing.cast(type, hint)
    for arg in typing.get_args(hint):
        if arg is not Ellipsis and arg is not type(None) and (found := _section_class(arg)):
            return found
    return None


def _typed_default(raw: Any, node: dict, hint: Any) -> Any:
    """The schema default ``raw`` as the typed settings hold it."""
    if node.get("$ref") == DURATION_REF:
        return parse_duration(raw)
    if isinstance(raw, dict):
        raw = sorted(raw.items())
    return msgspec.convert(raw, hint, strict=False)


class Checker:
    """Walks the schema and the settings classes side by side, from ``Config`` at the top."""

    def __init__(self, schema: dict) -> None:
        self.root = schema
        self.problems: list[str] = []
        self.keys_of: dict[type, set[str]] = {}

    def run(self, defaults: Config) -> list[str]:
        self.visit(Config, self.root, "", defaults)
        for cls, keys in self.keys_of.items():
            for field in dataclasses.fields(cls):
                if field.name not in keys and (cls, field.name) not in DERIVED:
                    self.problems.append(f"{cls.__name__}.{field.name} is no key of the schema (nor declared derived)")
        return self.problems

    def visit(self, cls: type, node: dict, where: str, instance: Any) -> None:
        node = _resolve(node, self.root)
        properties = node.get("properties", {})
        self.keys_of.setdefault(cls, set()).update(properties)
        hints = typing.get_type_hints(cls)
        names = {field.name: field for field in dataclasses.fields(cls)}
        for key, sub in properties.items():
            dotted = f"{where}.{key}" if where else key
            if key not in names:
                if dotted not in FILE_ONLY:
                    self.problems.append(f"{dotted} has no field in {cls.__name__}")
                continue
            self.field(cls, names[key], hints[key], sub, dotted, instance)
        for (owner, _name), (section, dotted) in DERIVED_SECTIONS.items():
            if owner is cls:
                self.visit(section, self.node_at(dotted), dotted, None)

    def field(self, cls: type, field: dataclasses.Field, hint: Any, sub: dict, dotted: str, instance: Any) -> None:
        value = getattr(instance, field.name) if instance is not None else None
        resolved = _resolve(sub, self.root)
        section = _section_class(hint)
        if section is not None:
            inner = resolved.get("items") or resolved.get("additionalProperties") or resolved
            many = inner is not resolved
            self.visit(section, inner, dotted + ("[]" if "items" in resolved else ""), None if many else value)
        if "default" not in resolved or (section is not None and "items" not in resolved):
            return
        expected = _typed_default(resolved["default"], sub, hint)
        if field.default is not dataclasses.MISSING and field.default != expected:
            self.problems.append(f"{cls.__name__}.{field.name} defaults to {field.default!r}, the schema's "
                                 f"{dotted} to {expected!r}")
        if instance is not None and value != expected:
            self.problems.append(f"an empty file loads {dotted} as {value!r}, not the schema's default {expected!r}")

    def node_at(self, dotted: str) -> dict:
        node = self.root
        for part in dotted.split("."):
            node = _resolve(node, self.root)["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):
                node = _resolve(node, self.root)["items"]
        return node


@pytest.fixture(scope="module")
def defaults(tmp_path_factory) -> Config:
    path = tmp_path_factory.mktemp("defaults") / "aiosd.yaml"
    path.write_text("{}\n", encoding="utf-8")
    return load_config(path, env={})


def test_every_schema_key_is_a_settings_field_with_the_same_default(defaults):
    assert Checker(load_schema()).run(defaults) == []


def test_a_key_written_only_in_the_schema_is_caught(defaults):
    schema = copy.deepcopy(load_schema())
    schema["properties"]["health"]["properties"]["grace"] = {"$ref": DURATION_REF, "default": "1s"}
    assert Checker(schema).run(defaults) == ["health.grace has no field in HealthSettings"]


def test_a_default_that_differs_is_caught(defaults):
    schema = copy.deepcopy(load_schema())
    schema["properties"]["scheduler"]["properties"]["aging"]["default"] = "45s"
    found = Checker(schema).run(defaults)
    assert "SchedulerSettings.aging defaults to 30.0, the schema's scheduler.aging to 45.0" in found
    assert "an empty file loads scheduler.aging as 30.0, not the schema's default 45.0" in found


def test_a_field_with_no_key_is_caught(defaults):
    schema = copy.deepcopy(load_schema())
    del schema["properties"]["server"]["properties"]["max_headers"]
    found = Checker(schema).run(defaults)
    assert found == ["ServerSettings.max_headers is no key of the schema (nor declared derived)"]

