"""Reading the secrets ``auth.keys`` names: a key written inline, an environment variable, a key file's first line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosd.config.schema_errors import AUTH_KEY_ENTRY, AUTH_KEY_ONE_FORM

KeyPath = tuple[str | int, ...]
Finding = tuple[KeyPath, str]  # where in the file (its keys) and what is wrong there
MIN_KEY_LENGTH = 8


@dataclass
class KeysRead:
    """The secret of every ``auth.keys`` entry in file order ("" where it could not be read), and why not."""

    values: list[str] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)


def read_keys(entries: list[Any], env: Mapping[str, str], config_dir: Path) -> KeysRead:
    """Each entry's secret; a relative key file is relative to the config file's directory."""
    read = KeysRead()
    for index, entry in enumerate(entries):
        value, why = read_key(entry, env, config_dir)
        read.values.append(value)
        if why:
            read.problems.append((("auth", "keys", index), why))
    return read


def read_key(entry: str | dict[str, Any], env: Mapping[str, str], config_dir: Path) -> tuple[str, str | None]:
    """One entry's secret, and what is wrong with the entry (None when nothing is)."""
    if isinstance(entry, str):
        return entry, None
    if sum(form in entry for form in ("key", "env", "file")) != 1:
        return "", f"must be {AUTH_KEY_ENTRY}: {AUTH_KEY_ONE_FORM}"
    if "key" in entry:
        return entry["key"], None
    if "env" in entry:
        return _from_env(entry["env"], env)
    return _from_file(entry["file"], config_dir)


def _from_env(name: str, env: Mapping[str, str]) -> tuple[str, str | None]:
    value = env.get(name, "").strip()
    if len(value) < MIN_KEY_LENGTH:
        return value, f"environment variable {name} is not set or holds fewer than {MIN_KEY_LENGTH} characters"
    return value, None


def _from_file(written: str, config_dir: Path) -> tuple[str, str | None]:
    key_file = Path(os.path.expanduser(written))
    if not key_file.is_absolute():
        key_file = config_dir / key_file
    try:
        value = key_file.read_text(encoding="utf-8").splitlines()[0].strip() if key_file.stat().st_size else ""
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as exc:  # ValueError: a NUL in the path
        return "", f"cannot read key file {key_file}: {getattr(exc, 'strerror', None) or exc}"
    if len(value) < MIN_KEY_LENGTH:
        return value, f"key file {key_file} holds no key of at least {MIN_KEY_LENGTH} characters on its first line"
    return value, None
