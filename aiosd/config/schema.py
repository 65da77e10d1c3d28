"""Finding and loading aiosd's JSON Schema, and filling in the defaults it declares."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema

from aiosd.config.shipped import SCHEMA, shipped_file


def schema_path() -> Path:
    """The schema shipped inside the wheel, or schemas/ of a source checkout."""
    return shipped_file(SCHEMA)


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(schema_path().read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema())


def apply_defaults(document: dict, schema: dict | None = None) -> dict:
    """A copy of ``document`` with every missing key that has a schema default filled in.

    jsonschema validates but never fills defaults; the schema is the one place defaults live,
    so they are read from it rather than repeated in code.
    """
    root = load_schema() if schema is None else schema
    return _fill(copy.deepcopy(document), root, root)


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        target = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill(value, node: dict, root: dict):
    node = _resolve(node, root)
    if not isinstance(value, dict):
        return value
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            value[key] = _fill(value[key], sub, root)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in node.get("properties", {}):
                value[key] = _fill(value[key], extra, root)
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
