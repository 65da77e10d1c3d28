"""aiosd's systemd units (system and user), rendered from the one template packaging/aiosd.service.in."""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiosd.config.settings import is_loopback_host
from aiosd.config.shipped import shipped_file

# In the wheel under the package (pyproject's force-include); in a checkout, at the top.
UNIT_TEMPLATE = ("packaging/aiosd.service.in", "packaging/aiosd.service.in")
README = ("README.md", "README.md")

MODES = ("system", "user")
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
# Characters a unit file takes as they are in a command argument or a path; anything else is quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
# The variables that tell aiosd (and OpenClaw) where OpenClaw's files are.
OPENCLAW_VARIABLES = ("OPENCLAW_HOME", "OPENCLAW_STATE_DIR", "OPENCLAW_CONFIG_PATH")


class UnitValueError(ValueError):
    """A path or name cannot be written into a unit file (a control character in it, or a quote or
    backslash in the program's path, which systemd refuses there)."""


# systemd refuses these in the executable of an Exec*= line ("Executable name contains special
# characters"), quoted or not: a venv under such a path cannot run as a service.
_EXECUTABLE_REFUSED = "'\"\\"


@dataclass(frozen=True)
class UnitSettings:
    """Everything that differs between installs: the mode and this machine's real paths."""

    mode: str  # "system" or "user"
    command: Sequence[str]  # this install's aiosd, e.g. ["/opt/aiosd/bin/aiosd"]
    config_path: Path
    documentation: Path  # the README shipped with this install
    kernel_url: str = "http://localhost:8000"
    user: str | None = None  # system mode: the user OpenClaw runs as
    group: str | None = None
    writable_paths: Sequence[Path] = ()  # system mode: OpenClaw's state directory (and the file's, if elsewhere)
    environment: Mapping[str, str] = field(default_factory=dict)  # OPENCLAW_* for the service
    install_command: str = ""


def unit_template() -> str:
    return shipped_file(UNIT_TEMPLATE).read_text(encoding="utf-8")


def readme_path() -> Path:
    return shipped_file(README)


def render_unit(settings: UnitSettings, template: str | None = None) -> str:
    """The unit file's text for ``settings.mode``: that mode's lines of the template, placeholders filled in."""
    if settings.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {settings.mode!r}")
    values = _values(settings)
    lines: list[str] = []
    for line in (template if template is not None else unit_template()).splitlines():
        if line.startswith("##"):
            continue
        prefix, colon, rest = line.partition(":")
        if colon and prefix in MODES:
            if prefix != settings.mode:
                continue
            line = rest
        whole = _PLACEHOLDER.fullmatch(line)
        if whole:
            lines.extend(values[whole.group(1)])
            continue
        lines.append(_PLACEHOLDER.sub(lambda m: values[m.group(1)], line))
    return "\n".join(lines) + "\n"


def _values(s: UnitSettings) -> dict:
    command = exec_command(s.command)
    environment = [environment_line(name, value) for name, value in sorted(s.environment.items())]
    values: dict = {
        "MODE": s.mode,
        "INSTALL_COMMAND": _comment_text(s.install_command or f"aiosd service install --{s.mode}"),
        "USER_FLAG": " --user" if s.mode == "user" else "",
        "DOCUMENTATION": specifiers_escaped(s.documentation.absolute().as_uri()),
        "AIOSD": command,
        "AIOSD_CONFIG_ENV": environment_value("AIOSD_CONFIG", str(s.config_path)),
        "OPENCLAW_ENVIRONMENT": environment,
        "WRITABLE_PATHS": ["ReadWritePaths=" + " ".join(path_word(p, optional=True) for p in s.writable_paths)]
        if s.writable_paths else [],
        "IP_ADDRESS_RULES": ip_address_rules(s.kernel_url),
        "USER": "",
        "GROUP": "",
    }
    if s.mode == "system":
        if not (s.user and s.group):
            raise ValueError("a system unit needs the user and group OpenClaw runs as")
        values["USER"] = _name(s.user)
        values["GROUP"] = _name(s.group)
    return values


# --- the network a system unit may reach ---------------------------------------------------------


def kernel_host(kernel_url: str) -> str:
    return (urlsplit(kernel_url).hostname or "").strip("[]")


def ip_address_rules(kernel_url: str) -> list[str]:
    """IPAddressDeny=/IPAddressAllow= lines that let aiosd reach the kernel of ``kernel_url`` and nothing else.

    A kernel given by hostname needs DNS, and neither the resolver's address nor the kernel's is known
    for good when the unit is written, so such a unit has no address restriction (the rest of the
    sandbox stays); the comment says how to pin it.
    """
    host = kernel_host(kernel_url)
    rules = ["IPAddressDeny=any", "IPAddressAllow=localhost"]
    if not host or is_loopback_host(host):
        return rules
    try:
        return [*rules, f"IPAddressAllow={ipaddress.ip_address(host)}"]
    except ValueError:
        pass
    return [
        f"# kernel.url names the host {_comment_text(host)}: to reach it aiosd needs DNS, and the addresses of",
        "# the resolver and of the kernel may change, so this unit sets no address restriction. To pin it:",
        "#   IPAddressDeny=any",
        "#   IPAddressAllow=localhost <the kernel's network> <the resolvers in /etc/resolv.conf>",
    ]


# --- escaping for unit files ---------------------------------------------------------------------


def _refuse_control_characters(text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UnitValueError(f"{text!r} cannot go into a unit file: it holds a control character")
    return text


def specifiers_escaped(text: str) -> str:
    """``%`` starts a specifier (%h, %u, ...) in nearly every unit setting; ``%%`` is a literal one."""
    return _refuse_control_characters(text).replace("%", "%%")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_word(word: str) -> str:
    """One argument of an Exec*= line: specifiers and ``$`` escaped, quoted unless plain."""
    word = specifiers_escaped(word).replace("$", "$$")
    return word if _PLAIN.fullmatch(word) else _quoted(word)


def exec_command(words: Sequence[str]) -> str:
    """An Exec*= command line: the executable, then its arguments.

    systemd expands ``$`` in the arguments (``$$`` is a literal one) but never in the executable,
    where it is taken as it is; it refuses a quote or backslash in the executable outright.
    """
    executable, *arguments = words
    refused = sorted({c for c in executable if c in _EXECUTABLE_REFUSED})
    if refused:
        shown = " ".join(repr(c) for c in refused)
        raise UnitValueError(
            f"this install's path {_refuse_control_characters(executable)!r} holds {shown}, which systemd refuses in "
            "a unit's command (\"Executable name contains special characters\"): install aiosd in a venv "
            "whose path has no quote or backslash, e.g. /opt/aiosd or ~/.local/share/aiosd")
    first = specifiers_escaped(executable)
    first = first if _PLAIN.fullmatch(first) else _quoted(first)
    return " ".join([first, *(exec_word(word) for word in arguments)])


def path_word(path: Path, optional: bool = False) -> str:
    """One path of a space-separated path list (ReadWritePaths=); ``-`` first: a missing path is fine."""
    text = ("-" if optional else "") + specifiers_escaped(str(path))
    return text if _PLAIN.fullmatch(text) else _quoted(text)


def environment_value(name: str, value: str) -> str:
    """The value of an ``Environment=`` setting assigning ``value`` to ``name``."""
    assignment = f"{name}={specifiers_escaped(value)}"
    return assignment if _PLAIN.fullmatch(assignment) else _quoted(assignment)


def environment_line(name: str, value: str) -> str:
    return "Environment=" + environment_value(name, value)


def _name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?", name):
        raise UnitValueError(f"{name!r} is not a user or group name systemd accepts")
    return name


def _comment_text(text: str) -> str:
    return _refuse_control_characters(text)


# --- reading a unit file back --------------------------------------------------------------------


def unit_directives(text: str, section: str = "Service") -> list[tuple[str, str]]:
    """(key, value) pairs of one section of a unit file, in order, repeated keys kept."""
    current, found = None, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def unit_environment(text: str) -> dict[str, str]:
    """The variables a unit's ``Environment=`` lines set (quotes undone, ``%%`` read as ``%``)."""
    variables: dict[str, str] = {}
    for key, value in unit_directives(text):
        if key != "Environment":
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        for word in words:
            name, eq, assigned = word.partition("=")
            if eq:
                variables[name] = assigned.replace("%%", "%")
    return variables
