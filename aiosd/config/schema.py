"""aiosd's JSON Schema: finding it, the defaults it declares (the one place they live), and its duration keys."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosd.config.durations import parse_duration
from aiosd.config.shipped import SCHEMA, shipped_file

if TYPE_CHECKING:  # jsonschema is imported only where a file is validated: settings read defaults from here
    import jsonschema

SchemaNode = dict[str, Any]
DURATION_REF = "#/$defs/duration"


def schema_path() -> Path:
    """The schema shipped inside the wheel, or schemas/ of a source checkout."""
    return shipped_file(SCHEMA)


@lru_cache(maxsize=1)
def load_schema() -> SchemaNode:
    schema: SchemaNode = json.loads(schema_path().read_text(encoding="utf-8"))
    return schema


@lru_cache(maxsize=1)
def validator() -> jsonschema.Draft202012Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema())


def apply_defaults(document: dict[str, Any], schema: SchemaNode | None = None) -> dict[str, Any]:
    """A copy of ``document`` with every missing key that has a schema default filled in.

    jsonschema validates but never fills defaults; the schema is the one place defaults live,
    so they are read from it rather than repeated in code. Entries of lists (``kernels:``,
    ``auth.keys``) get their keys' defaults too.
    """
    root = load_schema() if schema is None else schema
    filled: dict[str, Any] = _fill(copy.deepcopy(document), root, root)
    return filled


def in_seconds(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a validated ``document`` with every value the schema calls a duration ("30s") as seconds."""
    root = load_schema()
    converted: dict[str, Any] = _seconds(document, root, root)
    return converted


def schema_default(dotted: str) -> Any:
    """The schema's default for a key, typed as the settings hold it: a duration in seconds, a list as a tuple.

    ``dotted`` names the key as the file does, ``[]`` for any entry of a list: ``kernels[].weight``.
    """
    root = load_schema()
    node = root
    for part in dotted.split("."):
        node = _resolve(node, root)["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = _resolve(node, root)["items"]
    raw = _resolve(node, root)["default"]
    if _is_duration(node):
        return parse_duration(raw)
    if isinstance(raw, list):
        return tuple(raw)
    if isinstance(raw, dict):
        return tuple(sorted(raw.items()))
    return raw


def _is_duration(node: SchemaNode) -> bool:
    return node.get("$ref") == DURATION_REF


def _resolve(node: SchemaNode, root: SchemaNode) -> SchemaNode:
    while "$ref" in node:
        ref = node["$ref"]
        target = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _children(value: Any, node: SchemaNode, root: SchemaNode) -> list[tuple[Any, SchemaNode]]:
    """The keys (or indexes) of ``value`` that its schema ``node`` describes, each with its own schema node."""
    node = _resolve(node, root)
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [(index, node["items"]) for index in range(len(value))]
    if not isinstance(value, dict):
        return []
    properties = node.get("properties", {})
    extra = node.get("additionalProperties")
    described = [(key, properties[key]) for key in value if key in properties]
    if isinstance(extra, dict):
        described += [(key, extra) for key in value if key not in properties]
    return described


def _fill(value: Any, node: SchemaNode, root: SchemaNode) -> Any:
    if isinstance(value, dict):
        for key, sub in _resolve(node, root).get("properties", {}).items():
            sub = _resolve(sub, root)
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
    for key, sub in _children(value, node, root):
        value[key] = _fill(value[key], sub, root)
    return value


def _seconds(value: Any, node: SchemaNode, root: SchemaNode) -> Any:
    if _is_duration(node):
        return parse_duration(value)
    if isinstance(value, (dict, list)):
        value = dict(value) if isinstance(value, dict) else list(value)
        for key, sub in _children(value, node, root):
            value[key] = _seconds(value[key], sub, root)
    return value


@lru_cache(maxsize=1)
def _model_id_rule() -> tuple[re.Pattern[str], int]:
    rule = load_schema()["$defs"]["model_id"]
    return re.compile(rule["pattern"]), rule["maxLength"]


def model_id_problem(model_id: object) -> str | None:
    """Why ``model_id`` is not a valid model id (the schema's ``$defs/model_id``), or None when it is.

    The one rule for ids in ``models.map`` and ids the kernel lists. ``fullmatch``, not the schema
    validator's ``re.search``: a pattern's ``$`` also matches before a trailing newline.
    """
    pattern, max_length = _model_id_rule()
    if not isinstance(model_id, str):
        return "not text"
    if not model_id:
        return "empty"
    if len(model_id) > max_length:
        return f"{len(model_id)} characters long, more than the {max_length} allowed"
    if not pattern.fullmatch(model_id):
        return "ids may use letters, digits, '.', '_', ':', '-' and '/', starting with a letter or digit"
    return None
