"""JSON Schema's validation errors in a YAML user's words: what is wrong and what a valid value looks like.

Secrets are never shown: under ``auth``, and for keys such as ``api_key``, a wrong value is
described by its kind only; a URL is shown without its password. These messages reach the
journal, ``/status`` and the systemd STATUS line, which every local user can read.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema

from aiosd.config.durations import DURATION_FORMS

KeyPath = tuple[Any, ...]  # keys and list indexes from the top of the document
# Where a problem is (the value's path; True: at its key), the key path to name, and what is wrong.
Described = tuple[KeyPath, bool, KeyPath, str]
# Keys whose value (or whose entries) may be a secret, wherever they stand.
SECRET_KEYS = frozenset({"auth", "api_key", "apiKey", "keys", "key", "token", "password", "secret"})
NOT_SHOWN = "(not shown: it may be a secret)"
_SHOWN_LIMIT = 60

# JSON Schema's types in the words of a YAML file, each with what a valid one looks like.
TYPE_WORDS = {
    "object": "a mapping (indented key: value lines)",
    "array": "a list (like [a, b], or one '- item' per line)",
    "integer": "a whole number (like 4)",
    "number": "a number (like 1.5)",
    "boolean": "true or false",
    "string": "text",
    "null": "null",
}
DURATION = DURATION_FORMS
AUTH_KEY_ENTRY = "a key (text of at least 8 characters), {key: KEY}, {env: NAME} or {file: PATH}"
AUTH_KEY_ONE_FORM = "exactly one of key, env or file"
_URL_EXAMPLES = {"base_url": "http://127.0.0.1:8700/v1"}
_DEFAULT_URL_EXAMPLE = "http://localhost:8000"


# --- showing a value ---------------------------------------------------------------------------


def is_secret_path(path: KeyPath) -> bool:
    """True when the value at ``path`` (or something inside it) may be a secret."""
    return any(isinstance(part, str) and part in SECRET_KEYS for part in path)


def redact_userinfo(text: str) -> str:
    """``user:password@host`` (with or without a scheme) as ``***@host``."""
    return re.sub(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#]*@", lambda m: (m.group(1) or "") + "***@", text)


def shown(path: KeyPath, value: object, *, with_kind: bool = True) -> str:
    """``value`` as an error message may show it: a scalar's text (bounded, after its kind), never a secret."""
    what = kind(value)
    if isinstance(value, (dict, list)) or value is None:
        return article(what) if what != "null" else what
    if is_secret_path(path):
        return f"{what if with_kind else 'a value'} {NOT_SHOWN}"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if _is_url_key(path) and isinstance(value, str):
        text = redact_userinfo(text)
    if len(text) > _SHOWN_LIMIT:
        text = text[: _SHOWN_LIMIT - 3] + "..."
    text = repr(text) if isinstance(value, str) else text
    return f"{what} {text}" if with_kind else text


def kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value)) or (
        "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else type(value).__name__
    )


def article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _is_url_key(path: KeyPath) -> bool:
    last = next((p for p in reversed(path) if isinstance(p, str)), "")
    return last == "url" or last.endswith("_url")


# "key:value" with no space after the colon: YAML reads it as text (or as one longer key).
_GLUED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*):(?=\S)")


def glued_key(text: object) -> str | None:
    match = _GLUED.match(text) if isinstance(text, str) else None
    return match.group(1) if match else None


def no_space(key: str) -> str:
    return (f"no space after the colon of '{key}', so YAML read it as text, not as a key: write '{key}: ' and then "
            "the value")


# --- one schema error, described ---------------------------------------------------------------


def describe(error: jsonschema.ValidationError) -> Iterator[Described]:
    """``(where, at_key, key, message)`` for each problem in ``error``: the path of the value it is at (of
    its key with ``at_key``), the key path to name, and what is wrong."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        yield from _unknown_keys(path, error)
        return
    if "propertyNames" in error.schema_path and error.validator == "maxLength":
        yield (*path, error.instance), True, path, f"model id {_long(_instance(error))}: {_too_long(error)}"
        return
    if "propertyNames" in error.schema_path:  # a key of models.map: point at it
        yield (*path, error.instance), True, path, (
            f"model id {error.instance!r}: ids may use letters, digits, '.', '_', ':', '-' and '/', starting with a "
            "letter or digit (like sonnet or gpt-4o)")
        return
    yield path, False, path, _message(path, error)


def _unknown_keys(path: KeyPath, error: jsonschema.ValidationError) -> Iterator[Described]:
    known = sorted(_schema_of(error).get("properties", {}))
    unknown = [extra for extra in _instance(error) if extra not in known]
    if not path and not_a_config(len(unknown), len(_instance(error))):
        # Another file's data (the config a symlink to /etc/shadow, say): one plain sentence, and no
        # line of the file in the journal, /status or the page.
        first = unknown[0]
        yield (first,), True, (), (
            f"this does not look like aiosd's config: {len(unknown)} of its {len(_instance(error))} top-level keys "
            f"are unknown (the first: {short_key(first)}); is --config (or $AIOSD_CONFIG) naming the right file? "
            f"Known keys: {', '.join(known)}")
        return
    for extra in unknown:
        glued = glued_key(extra)
        if glued is not None and glued in known:  # "logging:{level: info}" reads as the key "logging:{level"
            yield (*path, extra), True, (*path, glued), f"unknown key '{glued}:...': {no_space(glued)}"
            continue
        if is_secret_path(path):
            name = f"unknown key {NOT_SHOWN}"
        else:
            name = f"unknown key {short_key(extra)}"
            close = difflib.get_close_matches(str(extra), known, n=1, cutoff=0.7)
            if close:
                name += f" (did you mean '{close[0]}'?)"
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        if "env" in known and "file" in known:
            hint = f"; an entry is {AUTH_KEY_ENTRY}"
        named = (*path, _key_name(extra)) if not is_secret_path(path) else path
        yield (*path, extra), True, named, name + hint


# What a config key looks like; an unknown key of another shape is shown by its start only.
_KEY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")
_KEY_START = re.compile(r"[A-Za-z0-9_.-]{1,20}")


def short_key(key: object) -> str:
    """An unknown key as a message may quote it: whole if it looks like a key (a typo such as 'lisen'),
    else its first few key characters, escaped ('root…' of a line of /etc/shadow), never the rest."""
    text = key if isinstance(key, str) else str(key)
    if _KEY_LIKE.fullmatch(text):
        return repr(text)
    start = _KEY_START.match(text)
    return repr(start.group() + "…") if start else "(not shown: it does not look like a key)"


def _key_name(key: object) -> object:
    """The key as the problem's key path names it: bounded like ``short_key``."""
    if not isinstance(key, str) or _KEY_LIKE.fullmatch(key):
        return key
    start = _KEY_START.match(key)
    return start.group() + "…" if start else "?"


def not_a_config(unknown: int, total: int) -> bool:
    """True when a mapping's top-level keys say it is some other file: mostly unknown keys, 3 or more."""
    return unknown >= 3 and unknown * 2 > total


def _message(path: KeyPath, error: jsonschema.ValidationError) -> str:
    describe = _BY_RULE.get(str(error.validator))
    found = describe(path, error, _schema_of(error)) if describe else None
    if found is not None:
        return found
    # Anything new in the schema: jsonschema's words, without the value they may quote.
    return error.message if not is_secret_path(path) else f"is not valid here ({error.validator})"


def _schema_of(error: jsonschema.ValidationError) -> dict[str, Any]:
    return dict(error.schema) if isinstance(error.schema, Mapping) else {}


def _instance(error: jsonschema.ValidationError) -> Any:
    return error.instance


def _required(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    missing = re.match(r"'([^']*)'", error.message)
    name = missing.group(1) if missing else error.message
    if name == "kernel_model":
        return "missing required key 'kernel_model' (the model's name in the kernel, like kernel_model: gpt-4o-mini)"
    return f"missing required key '{name}'"


def _wrong_type(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    instance = _instance(error)
    value: Any = error.validator_value
    types: list[str] = value if isinstance(value, list) else [value]
    expected = _expected(types, schema, _is_duration(schema))
    glued = glued_key(instance)
    if instance is None:
        return f"has no value (null); write {expected} after the colon, or remove the key"
    if "object" in types and glued:
        # "kernel:\n  url:http://x" makes kernel the text "url:http://x" (not shown: it may be a secret)
        return f"must be {expected}, got text: {no_space(glued)}"
    return f"must be {expected}, got {shown(path, instance)}"


def _not_listed(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    got = shown(path, _instance(error), with_kind=False)
    listed: Any = error.validator_value  # an enum rule's value is the list of what it allows
    return f"must be one of {', '.join(repr(v) for v in listed)}, got {got}"


def _not_matched(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    instance = _instance(error)
    return _pattern_message(path, schema, instance, shown(path, instance, with_kind=False), _is_duration(schema))


_BOUNDS = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
           "exclusiveMaximum": "less than"}


def _out_of_bounds(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    got = shown(path, _instance(error), with_kind=False)
    if _is_duration(schema) and error.validator == "minimum" and error.validator_value == 0:
        return f"a duration cannot be negative, got {got}; write it like 30s, 5m or 1.5h"
    return f"must be {_BOUNDS[str(error.validator)]} {error.validator_value}, got {got}"


def _too_long_text(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    return _too_long(error) if is_secret_path(path) else f"{_long(str(_instance(error)))}: {_too_long(error)}"


def _too_short_text(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    if error.validator_value == 1:
        return "must not be empty"
    return f"must be at least {error.validator_value} characters long"


def _repeated(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    twice = _first_repeated(_instance(error))
    if twice is None or is_secret_path(path):
        return "has the same entry twice"
    return f"has {shown(path, twice)} twice"


def _too_few(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    n = error.validator_value
    example = " (like [text] or [text, image])" if path and path[-1] == "input" else ""
    return f"must list at least {n} entr{'y' if n == 1 else 'ies'}{example}"


def _key_entry(path: KeyPath, error: jsonschema.ValidationError, schema: dict[str, Any]) -> str | None:
    return f"must be {AUTH_KEY_ENTRY}: {AUTH_KEY_ONE_FORM}" if _is_auth_key(schema) else None


_BY_RULE: dict[str, Callable[[KeyPath, jsonschema.ValidationError, dict[str, Any]], str | None]] = {
    "required": _required,
    "type": _wrong_type,
    "enum": _not_listed,
    "pattern": _not_matched,
    **dict.fromkeys(_BOUNDS, _out_of_bounds),
    "maxLength": _too_long_text,
    "minLength": _too_short_text,
    "uniqueItems": _repeated,
    "minItems": _too_few,
    "minProperties": _key_entry,
    "maxProperties": _key_entry,
}


def _long(text: str) -> str:
    """A long value shown by its start only: a 100 KB id must not become a 100 KB log line."""
    return repr(text[:40] + "…") if len(text) > 40 else repr(text)


def _too_long(error: jsonschema.ValidationError) -> str:
    return f"{len(_instance(error))} characters long; at most {error.validator_value} allowed"


def _expected(types: list[str], schema: dict[str, Any], duration: bool) -> str:
    if duration:
        return DURATION
    if _is_auth_key(schema):
        return AUTH_KEY_ENTRY
    words = [TYPE_WORDS.get(t, t) for t in types]
    return " or ".join(words)


def _pattern_message(path: KeyPath, schema: dict[str, Any], instance: object, got: str, duration: bool) -> str:
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    if duration:
        return f"must be {DURATION}, got {got}"
    if name == "listen":
        return f"needs host:port, like 127.0.0.1:8700 or [::1]:8700, got {got}"
    if name == "priority_header":
        return f"may use letters, digits and '-' (a header name, like x-aiosd-priority), got {got}"
    if name == "name" and len(path) >= 3 and path[0] in ("kernels", "auth"):
        return (f"may use letters, digits, '.', '_', ':' and '-', starting with a letter or digit (like gpu-1), "
                f"got {got}")
    if name == "provider_id":
        return f"may use lowercase letters, digits, '_' and '-', starting with a letter or digit (like aios), got {got}"
    if schema.get("pattern", "").startswith("^https?://"):
        example = _URL_EXAMPLES.get(name) or schema.get("default") or _DEFAULT_URL_EXAMPLE
        if not re.match(r"(?i)https?://", str(instance)):
            return f"needs http:// or https:// (e.g. {example}), got {got}"
        return f"must be a URL like {example}: a host after the scheme, and no spaces; got {got}"
    description = schema.get("description")
    return f"is not in the form this key takes{f' ({description})' if description else ''}; got {got}"


def _is_duration(schema: dict[str, Any]) -> bool:
    return "ms|s|m|h" in schema.get("pattern", "")


def _is_auth_key(schema: dict[str, Any]) -> bool:
    return {"env", "file"} <= set(schema.get("properties", {}))


def _first_repeated(items: object) -> object | None:
    seen: list[object] = []
    entries: list[object] = items if isinstance(items, list) else []
    for item in entries:
        if item in seen:
            return item
        seen.append(item)
    return None
