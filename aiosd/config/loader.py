"""Reading the YAML config file into a ``Config``, with every problem reported at once and in place."""

from __future__ import annotations

import errno
import math
import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from aiosd.config import rules, schema_errors
from aiosd.config.auth_keys import Finding, read_keys
from aiosd.config.convert import to_config
from aiosd.config.durations import parse_duration
from aiosd.config.schema import apply_defaults, load_schema, validator
from aiosd.config.schema_errors import NOT_SHOWN, article, glued_key, is_secret_path, kind, no_space
from aiosd.config.settings import Config
from aiosd.config.shipped import example_config_path
from aiosd.config.yaml_errors import describe_yaml_error
from aiosd.config.yaml_positions import (
    AliasExpansionError,
    DuplicateKeyError,
    KeyPath,
    Position,
    empty_mapping,
    load_yaml_with_positions,
    position_of,
)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, with where it is."""

    file: str
    line: int | None
    column: int | None
    key: str  # dotted key path, "" for the whole file
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class NoConfigFile(ConfigProblem):
    """There is no file at the config path: said as such, with how to make one (not as an invalid config)."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"no config at {self.file}: {self.message}"


class ConfigError(Exception):
    """The config file cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    @property
    def missing(self) -> bool:
        """True when there is no file at all (nothing to be invalid)."""
        return any(isinstance(p, NoConfigFile) for p in self.problems)


def how_to_create(path: Path) -> str:
    """What to do about a missing config file: the example shipped in the package, or a service install."""
    example = example_config_path()
    return (f"create it from the commented example shipped with aiosd (cp {shlex.quote(str(example))} "
            f"{shlex.quote(str(path))}, then set kernel.url and models.map), or run "
            "'aiosd service install --system' (or --user), which installs it with a systemd unit; or name another "
            "file with --config PATH or $AIOSD_CONFIG")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, empty_ok: bool = True) -> Config:
    """Read, parse, validate and type the config at ``path``; raises ConfigError.

    An empty file (or one of only comments) is every default. ``empty_ok=False`` refuses it
    instead: a running daemon's reload, where an empty file is far more likely an editor's
    unfinished write than a wish to drop every setting (and every mapped model from OpenClaw).
    """
    path = Path(path)
    text = _read_text(path)
    name = str(path)
    try:
        document = load_yaml_with_positions(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(name, exc, text)]) from None
    if document is None and not empty_ok:
        raise ConfigError([ConfigProblem(name, None, None, "", "the file is empty (or only comments); not applied "
                                         "to the running daemon, as it is more likely an unfinished write than a "
                                         "wish for every default (write {} for that)")])
    if document is None:  # every key is optional, so all defaults
        document = empty_mapping()
    if not isinstance(document, dict):
        pos = getattr(document, "position", Position(1, 1))
        glued = glued_key(document)
        if glued is not None and glued in load_schema()["properties"]:  # "listen:127.0.0.1:8700"
            message = f"the top level must be a mapping of keys, not text: {no_space(glued)}"
        else:  # nothing of the file is quoted: it may be another file's data (a symlink to /etc/shadow)
            message = (f"the top level must be a mapping of keys, not a {kind(document)}: this does not look like "
                       "aiosd's config; is --config (or $AIOSD_CONFIG) naming the right file?")
        raise ConfigError([ConfigProblem(name, pos.line, pos.column, "", message)])
    problems = [p for e in validator().iter_errors(document) for p in _schema_problems(name, document, e)]
    seen = {p.key for p in problems}
    problems += [p for p in _value_problems(name, document) if p.key not in seen]
    if problems:
        problems += _rule_problems_beside(name, document, problems, path, os.environ if env is None else env)
        problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.key))
        raise ConfigError(problems)
    return _build(name, document, path, os.environ if env is None else env)


# The largest config file aiosd reads: a real one is a few KB (one with a thousand mapped models is
# about 100 KB). Checked before reading, so a huge file (or one that never ends) costs nothing.
MAX_CONFIG_BYTES = 1024 * 1024


def read_config_bytes(path: Path) -> bytes:
    """The config file's bytes, read only if it is a regular file (symlinks followed) of at most
    ``MAX_CONFIG_BYTES``; raises ConfigError saying why not.

    Opened without blocking and checked on the open descriptor: a FIFO at the config path would
    otherwise hold the reading thread until some writer came (a reload that never ends), and a
    symlink to /dev/zero would be read until memory ran out (issue 18 item 7).
    """
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError([NoConfigFile(name, None, None, "", how_to_create(path))]) from None
    except PermissionError:
        raise ConfigError([ConfigProblem(name, None, None, "", f"permission denied: the user running aiosd "
                                         f"(uid {os.getuid()}) cannot read this file")]) from None
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise ConfigError([_not_regular(name, mode)]) from None
        raise ConfigError([_unreadable(name, exc)]) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError([ConfigProblem(name, None, None, "", "is a directory, not a config file")])
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError([_not_regular(name, st.st_mode)])
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError([_too_large(name, st.st_size, exact=True)])
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 16):  # to the end, in case it grew since the fstat
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise ConfigError([_too_large(name, MAX_CONFIG_BYTES, exact=False)])
    except OSError as exc:
        raise ConfigError([_unreadable(name, exc)]) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _unreadable(name: str, exc: OSError) -> ConfigProblem:
    if exc.errno == errno.EISDIR:
        return ConfigProblem(name, None, None, "", "is a directory, not a config file")
    return ConfigProblem(name, None, None, "", f"cannot be read: {exc.strerror}")


def _too_large(name: str, size: int, *, exact: bool) -> ConfigProblem:
    return ConfigProblem(name, None, None, "", f"is {'' if exact else 'more than '}{size} bytes long; a config may "
                         f"be at most {MAX_CONFIG_BYTES} bytes (1 MiB): is this the right file?")


def _not_regular(name: str, mode: int) -> ConfigProblem:
    return ConfigProblem(name, None, None, "", f"is {file_kind(mode)}, not a regular file; aiosd reads its config "
                         "only from a regular file")


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (for messages refusing it)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _read_text(path: Path) -> str:
    data = read_config_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"is not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded; save the file as UTF-8"
        raise ConfigError([ConfigProblem(str(path), line, column, "", message)]) from None


def _yaml_problem(name: str, exc: yaml.YAMLError, text: str = "") -> ConfigProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        # A control character: the reader knows only an offset, and its str() spans two lines.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return ConfigProblem(name, line, column, "", f"invalid YAML: character #x{exc.character:04x} is not "
                             "allowed in a YAML file (control characters must be escaped in a double-quoted string)")
    if isinstance(exc, DuplicateKeyError):
        return _duplicate_key_problem(name, exc)
    if isinstance(exc, AliasExpansionError):
        mark = exc.problem_mark
        return ConfigProblem(name, mark.line + 1 if mark else None, mark.column + 1 if mark else None, "",
                             exc.problem or "")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return ConfigProblem(name, None, None, "", f"invalid YAML: {str(exc).splitlines()[0]}")
    found = describe_yaml_error(exc, text)
    return ConfigProblem(name, found.line, found.column, "", f"invalid YAML: {found.message}")


def _duplicate_key_problem(name: str, exc: DuplicateKeyError) -> ConfigProblem:
    mark = exc.problem_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    if is_secret_path(exc.key_path[:-1]):  # a key there may be the secret itself
        first, again = exc.lines
        return ConfigProblem(name, line, column, _dotted(exc.key_path[:-1]),
                             f"a key is written twice, at line {first} and at line {again}; keep one")
    return ConfigProblem(name, line, column, _dotted(exc.key_path), exc.problem or "")


def _value_problems(name: str, document: dict[Any, Any]) -> list[ConfigProblem]:
    """What JSON Schema cannot see in YAML: keys that are not text, NaN and infinity, numbers no float can hold."""
    problems: list[ConfigProblem] = []

    def walk(node: object, path: KeyPath) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str):
                    walk(value, (*path, key))
                elif is_secret_path(path):  # the key may be the secret itself
                    problems.append(_at(name, position_of(document, (*path, key), key=True), _dotted(path),
                                        f"a key here is read as {article(kind(key))}, not text {NOT_SHOWN}"))
                else:  # e.g. a model id written as 1 or 2024-01-01; the schema's key checks skip non-strings
                    text = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
                    problems.append(_at(name, position_of(document, (*path, key), key=True), _dotted((*path, text)),
                                        f"the key {text} is read as {article(kind(key))}, not text; put it in quotes"))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            try:
                # A float past 2**53 is no exact whole number, which the typed config cannot take
                # where the schema's "integer" accepted it (1.0e+20).
                finite = math.isfinite(node) and not (isinstance(node, float) and abs(node) > _FLOAT_EXACT)
            except OverflowError:  # an int with hundreds of digits
                finite = False
            if not finite:
                digits = str(node)
                shown = digits[:20] + ("..." if len(digits) > 20 else "")
                text = f"a value {NOT_SHOWN}" if is_secret_path(path) else shown
                problems.append(_at(name, position_of(document, path), _dotted(path), f"must be a finite number of "
                                    f"reasonable size, got {text}"))
        elif isinstance(node, str) and _DURATION_TEXT.match(node) and not math.isfinite(parse_duration(node)):
            problems.append(_at(name, position_of(document, path), _dotted(path), "is too large a duration"))

    walk(document, ())
    return problems


_FLOAT_EXACT = 2.0**53
_DURATION_TEXT = re.compile(r"^\s*[0-9]{300,}")


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if not (isinstance(part, str) and part.isprintable()):
            part = part if isinstance(part, int) else repr(part)  # a key with a newline must not break the line
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_problems(name: str, document: dict[Any, Any], error: jsonschema.ValidationError) -> list[ConfigProblem]:
    return [_at(name, position_of(document, where, key=at_key), _dotted(key), message)
            for where, at_key, key, message in schema_errors.describe(error)]


def _at(name: str, pos: Position | None, key: str, message: str) -> ConfigProblem:
    return ConfigProblem(name, pos.line if pos else None, pos.column if pos else None, key, message)


def _build(name: str, document: dict[Any, Any], path: Path, env: Mapping[str, str], positions: object = None) -> Config:
    """The typed Config of a document the schema accepted, after the checks a schema cannot express
    (placed in ``positions``, the parsed file, when ``document`` is a part of it)."""
    filled = apply_defaults(document)
    keys = read_keys(filled["auth"]["keys"], env, path.parent)
    config = to_config(filled, keys.values, path)
    findings = [*_apply(rules.BEFORE_KEYS, config, filled), *keys.problems, *_apply(rules.AFTER_KEYS, config, filled)]
    if findings:
        where = document if positions is None else positions
        raise ConfigError([_at(name, position_of(where, key_path), _dotted(key_path), message)
                           for key_path, message in findings])
    return config


def _rule_problems_beside(name: str, document: dict[Any, Any], problems: list[ConfigProblem], path: Path,
                          env: Mapping[str, str]) -> list[ConfigProblem]:
    """What the rules past the schema (a listen port out of range, ...) find in the top-level sections that have
    no problem yet, so that one run reports every problem: the sections with one are left out (every default)."""
    refused = {_top_key(p.key) for p in problems}
    kept = {k: v for k, v in document.items() if str(k) not in refused}
    if "" in refused or len(kept) == len(document) or any(True for _ in validator().iter_errors(kept)):
        return []
    try:
        _build(name, kept, path, env, positions=document)
    except ConfigError as exc:
        return [p for p in exc.problems if _top_key(p.key) not in refused]
    return []


def _top_key(dotted: str) -> str:
    return re.split(r"[.\[]", dotted, maxsplit=1)[0]


def _apply(checks: tuple[rules.Rule, ...], config: Config, filled: dict[str, Any]) -> list[Finding]:
    return [finding for check in checks for finding in check(config, filled)]
