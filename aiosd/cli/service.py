"""``aiosd service install|uninstall``: aiosd as a systemd unit, system-wide or beside OpenClaw's user gateway."""

from __future__ import annotations

import argparse
import grp
import ipaddress
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiosd.cli.subcommands import Subcommands
from aiosd.cli.units import (
    OPENCLAW_VARIABLES,
    UnitSettings,
    UnitValueError,
    kernel_host,
    readme_path,
    render_unit,
    unit_directives,
    unit_environment,
)
from aiosd.config.loader import ConfigError, load_config
from aiosd.config.schema import load_schema
from aiosd.config.settings import Config, is_loopback_host
from aiosd.config.shipped import example_config_path
from aiosd.openclaw.file import resolve_openclaw_path

UNIT_NAME = "aiosd.service"
GATEWAY_UNIT = "openclaw-gateway.service"
SYSTEMCTL_TIMEOUT = 120  # seconds; `enable --now` waits for READY=1, which waits for `aiosd check`
VERIFY_TIMEOUT = 60  # seconds for `systemd-analyze verify` (it takes well under one)


class ServiceError(Exception):
    """The install or uninstall cannot go on; the message says why and what to do."""


def add_service_parser(commands: Subcommands) -> argparse.ArgumentParser:
    """The ``service`` subcommand's parser, with its ``install`` and ``uninstall`` actions."""
    service = commands.add_parser(
        "service",
        help="install or remove aiosd as a systemd service",
        description="Install aiosd as a systemd service, either as a user unit beside OpenClaw's gateway "
        "(--user) or as a sandboxed system unit running as the OpenClaw user (--system).",
    )
    actions = service.add_subparsers(dest="service_action", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install",
        help="write the unit, install the example config where none exists, enable and start it",
        description="Write aiosd's unit with this install's paths, install the example config where none "
        "exists (an existing config is never touched), run daemon-reload and enable --now. Running it "
        "again rewrites the unit (e.g. after kernel.url changed) and keeps the config.",
    )
    _add_mode(install, required=True)
    install.add_argument("--openclaw-user", metavar="NAME",
                         help="--system: the user OpenClaw runs as (default: the user who ran sudo, else 'openclaw')")
    install.add_argument("--openclaw-state-dir", metavar="DIR", type=Path,
                         help="--system: that user's OpenClaw state directory (default: as its gateway unit says, "
                         "else ~NAME/.openclaw)")
    install.add_argument("--no-start", action="store_true",
                         help="write the files and daemon-reload, but do not enable or start")
    install.add_argument("--dry-run", action="store_true",
                         help="print the files and commands instead of writing and running them")
    _add_test_hooks(install)
    uninstall = actions.add_parser(
        "uninstall",
        help="stop, disable and remove the unit (the config stays unless --purge)",
        description="Stop and disable aiosd's unit and remove it. The config file stays unless --purge. "
        "aiosd's entries in OpenClaw's openclaw.json stay too: `aiosd sync-openclaw --remove` takes them out.",
    )
    _add_mode(uninstall, required=False)
    uninstall.add_argument("--purge", action="store_true",
                           help="also remove the config file and aiosd's state directory")
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be removed and run")
    _add_test_hooks(uninstall)
    return service


def _add_mode(parser: argparse.ArgumentParser, required: bool) -> None:
    mode = parser.add_mutually_exclusive_group(required=required)
    mode.add_argument("--user", dest="mode", action="store_const", const="user",
                      help="a user unit (~/.config/systemd/user), config $XDG_CONFIG_HOME/aiosd/aiosd.yaml")
    mode.add_argument("--system", dest="mode", action="store_const", const="system",
                      help="a system unit (/etc/systemd/system), config /etc/aiosd.yaml; needs root")


def _add_test_hooks(parser: argparse.ArgumentParser) -> None:
    # For the tests: a directory standing in for / (system paths) and the systemctl to run.
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--systemctl", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--systemd-analyze", dest="systemd_analyze", default=None, help=argparse.SUPPRESS)


# --- where things go -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where one mode's files live. ``shown_*`` are the paths as the service sees them (``--root`` stripped)."""

    mode: str
    unit_path: Path
    config_path: Path
    state_dir: Path
    shown_config_path: Path
    root: Path | None

    @property
    def systemctl_flags(self) -> list[str]:
        return ["--user"] if self.mode == "user" else []

    @property
    def flag(self) -> str:
        return "--" + self.mode


def _xdg_dir(variable: str, fallback: str, env: Mapping[str, str]) -> Path:
    value = env.get(variable, "")
    if value and os.path.isabs(value):  # the XDG spec ignores relative values
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / fallback


def layout_for(mode: str, root: Path | None, env: Mapping[str, str] = os.environ) -> Layout:
    if mode == "user":
        config_home = _xdg_dir("XDG_CONFIG_HOME", ".config", env)
        config = config_home / "aiosd" / "aiosd.yaml"
        return Layout("user", config_home / "systemd" / "user" / UNIT_NAME, config,
                      _xdg_dir("XDG_STATE_HOME", ".local/state", env) / "aiosd", config, root)
    return Layout("system", _rooted(root, "/etc/systemd/system") / UNIT_NAME, _rooted(root, "/etc/aiosd.yaml"),
                  _rooted(root, "/var/lib/aiosd"), Path("/etc/aiosd.yaml"), root)


def _rooted(root: Path | None, path: str | Path) -> Path:
    return Path(path) if root is None else root / str(path).lstrip("/")


def aiosd_command() -> list[str]:
    """This install's aiosd: the ``aiosd`` script beside the running Python (its venv), else ``python -m aiosd``."""
    python = Path(os.path.abspath(sys.executable))  # not resolved: a venv's python is a symlink out of it
    script = python.parent / "aiosd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "aiosd"]


def _shown_command() -> str:
    return shlex.join(aiosd_command())


# --- OpenClaw's side -----------------------------------------------------------------------------


def gateway_environment(unit_dir: Path) -> dict[str, str]:
    """The OPENCLAW_* variables OpenClaw's own gateway unit sets, if it is installed there."""
    try:
        text = (unit_dir / GATEWAY_UNIT).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return {k: v for k, v in unit_environment(text).items() if k in OPENCLAW_VARIABLES and v}


@dataclass(frozen=True)
class OpenClawUser:
    name: str
    group: str
    home: Path
    state_dir: Path
    environment: dict[str, str]  # what the unit sets so aiosd finds the same openclaw.json as OpenClaw


def openclaw_user(name: str | None, state_dir: Path | None, root: Path | None,
                  env: Mapping[str, str] = os.environ) -> tuple[OpenClawUser, str]:
    """The user the system unit runs as, and why that one (for the summary)."""
    if name:
        why = "--openclaw-user"
    elif env.get("SUDO_USER") and env.get("SUDO_USER") != "root":
        name, why = env["SUDO_USER"], "the user who ran sudo; --openclaw-user NAME to choose another"
    else:
        name, why = "openclaw", "the default; --openclaw-user NAME to choose another"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"there is no user {name!r} on this machine ({why}): name the user OpenClaw runs as "
                           "with --openclaw-user NAME") from None
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        raise ServiceError(f"user {name!r} has primary group id {entry.pw_gid}, which has no name") from None
    home = Path(entry.pw_dir)
    gateway = gateway_environment(_rooted(root, home / ".config" / "systemd" / "user"))
    if state_dir is None:
        if gateway.get("OPENCLAW_STATE_DIR"):
            state_dir = Path(gateway["OPENCLAW_STATE_DIR"])
        else:
            state_dir = Path(gateway.get("OPENCLAW_HOME") or home) / ".openclaw"
    if not state_dir.is_absolute():
        raise ServiceError(f"--openclaw-state-dir must be an absolute path, got {str(state_dir)!r}")
    environment = {"OPENCLAW_STATE_DIR": str(state_dir)}
    if gateway.get("OPENCLAW_CONFIG_PATH"):
        environment["OPENCLAW_CONFIG_PATH"] = gateway["OPENCLAW_CONFIG_PATH"]
    return OpenClawUser(name, group, home, state_dir, environment), why


def user_openclaw_environment(layout: Layout, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """For a user unit: OpenClaw's variables as its gateway unit sets them, else as this shell has them."""
    found = {k: env[k] for k in OPENCLAW_VARIABLES if env.get(k)}
    found.update(gateway_environment(layout.unit_path.parent))
    return found


# --- the config the unit will read ---------------------------------------------------------------


def _config_for_unit(layout: Layout, warnings: list[str]) -> Config | None:
    """The config the service will use: the existing file, else the example about to be installed."""
    source = layout.config_path if layout.config_path.exists() else example_config_path()
    try:
        return load_config(source)
    except ConfigError as exc:
        warnings.append(f"{source} does not validate ({len(exc.problems)} problem(s); "
                        f"`aiosd check --config {source}` shows them): the unit is written for a kernel on this "
                        "machine and will not start until it does")
        return None


# --- install -------------------------------------------------------------------------------------


class Steps:
    """Runs (or, in a dry run, only shows) the file changes and systemctl calls, and says what happened."""

    def __init__(self, dry_run: bool, systemctl: str | None) -> None:
        self.dry_run = dry_run
        self.systemctl = systemctl
        self.failed = False

    def say(self, text: str) -> None:
        print(text)

    def run(self, args: list[str]) -> bool:
        shown = shlex.join(["systemctl", *args])
        if self.dry_run:
            self.say(f"would run: {shown}")
            return True
        if self.systemctl is None:
            self.say(f"NOT run (systemctl not found: is systemd running this machine?): {shown}")
            self.failed = True
            return False
        try:
            result = subprocess.run([self.systemctl, *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"FAILED: {shown}: {exc}")
            self.failed = True
            return False
        if result.returncode != 0:
            detail = " ".join((result.stderr or result.stdout).split())[:2000]
            self.say(f"FAILED (exit {result.returncode}): {shown}: {detail}")
            self.failed = True
            return False
        self.say(f"ran: {shown}")
        return True


def _find_systemctl(option: str | None) -> str | None:
    return option if option else shutil.which("systemctl")


def _find_systemd_analyze(option: str | None) -> str | None:
    return option if option else shutil.which("systemd-analyze")


def _verify_unit(steps: Steps, layout: Layout, unit: str, analyze: str | None) -> None:
    """``systemd-analyze verify`` on the unit about to be written, before it replaces anything.

    The unit is checked as a copy in a private directory (with a private runtime directory, which a
    user manager's paths need), so a unit systemd would refuse is never written, reloaded or enabled.
    Without systemd-analyze the install goes on, saying the unit was not verified.
    """
    shown = shlex.join(["systemd-analyze", "verify", *layout.systemctl_flags, UNIT_NAME])
    if steps.dry_run:
        return
    if analyze is None:
        steps.say(f"NOT verified (systemd-analyze not found): {shown}")
        return
    with tempfile.TemporaryDirectory(prefix="aiosd-unit-") as scratch:
        copy = Path(scratch) / UNIT_NAME  # systemd takes the unit's name from the file's
        copy.write_text(unit, encoding="utf-8")
        runtime = Path(scratch) / "runtime"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
        try:
            result = subprocess.run([analyze, "verify", *layout.systemctl_flags, str(copy)], capture_output=True,
                                    text=True, timeout=VERIFY_TIMEOUT, cwd=scratch, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"could not verify the unit ({shown}: {exc}); nothing was written or enabled") from None
    if result.returncode != 0:
        detail = " | ".join(line.replace(str(copy), UNIT_NAME) for line in (result.stderr + result.stdout).splitlines()
                            if line.strip())[:2000]
        raise ServiceError(f"the unit does not pass `{shown}` (exit {result.returncode}): {detail}; "
                           "nothing was written, reloaded or enabled")
    steps.say(f"verified the unit: {shown}")


def _check_privileges(args: argparse.Namespace, layout: Layout) -> None:
    if args.root is not None or args.dry_run:
        return
    if layout.mode == "system" and os.geteuid() != 0:
        raise ServiceError(f"a system unit needs root: sudo {_shown_command()} service {args.service_action} --system"
                           + (f" --openclaw-user {args.openclaw_user}" if getattr(args, "openclaw_user", None) else ""))
    if layout.mode == "user" and os.environ.get("SUDO_USER"):
        raise ServiceError("--user under sudo would act for root: run it without sudo, as the user OpenClaw runs as")


def _write_text_atomically(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.aiosd-tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)  # a reader sees the old unit or the new one, never half of one
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _install_example_config(layout: Layout, group_id: int | None) -> bool:
    """Copy the example config to ``layout.config_path`` unless a file is there; True if it was copied."""
    layout.config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if layout.mode == "user" else 0o755)
    try:
        # O_EXCL: never replace a config, even one that appeared since we looked; 0600 until its owner is set.
        descriptor = os.open(layout.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(example_config_path().read_bytes())
    # The config may hold API keys: readable by root and the service's group only.
    if layout.mode == "system":
        if os.geteuid() == 0 and group_id is not None:
            os.chown(layout.config_path, 0, group_id)
        os.chmod(layout.config_path, 0o640)
    else:
        os.chmod(layout.config_path, 0o600)
    return True


def install(args: argparse.Namespace) -> int:
    """Write the unit, install the example config where none is, reload, enable and start; 1 if a step failed."""
    if args.mode == "user" and (args.openclaw_user or args.openclaw_state_dir):
        raise ServiceError("--openclaw-user and --openclaw-state-dir are for --system; a user unit runs as you "
                           "and finds OpenClaw's files the way your OpenClaw gateway does")
    layout = layout_for(args.mode, args.root)
    _check_privileges(args, layout)
    steps = Steps(args.dry_run, _find_systemctl(args.systemctl))
    warnings: list[str] = []
    config = _config_for_unit(layout, warnings)
    kernel_url = config.kernel.url if config else "http://localhost:8000"
    if layout.mode == "system":
        who, why = openclaw_user(args.openclaw_user, args.openclaw_state_dir, args.root)
        settings = _system_unit_settings(layout, who, config, kernel_url, warnings)
    else:
        who, why = None, ""
        settings = UnitSettings("user", aiosd_command(), layout.config_path, readme_path(), kernel_url,
                                environment=user_openclaw_environment(layout),
                                install_command="aiosd service install --user")
    try:
        unit = render_unit(settings)
    except UnitValueError as exc:
        raise ServiceError(str(exc)) from None

    _verify_unit(steps, layout, unit, _find_systemd_analyze(args.systemd_analyze))
    previous = layout.unit_path.read_text(encoding="utf-8") if layout.unit_path.exists() else None
    title = f"aiosd as a {layout.mode} service" + (f", running as {who.name} ({why})" if who else "")
    steps.say(title + (" (dry run: nothing is written or run)" if args.dry_run else "") + ":")
    _put_unit(steps, layout, unit, previous)
    _put_example_config(steps, layout, who)
    if who:
        _say_what_the_sandbox_allows(steps, who, settings, kernel_url)
    _reload_and_start(steps, layout, args.no_start, restart=previous is not None and previous != unit)
    if layout.mode == "user" and not args.dry_run:
        if steps.failed:
            steps.say("note: systemctl --user needs your own login session (not su or sudo); on a server without "
                      "one, `loginctl enable-linger` starts your user manager")
        _linger_hint(steps, layout)
    for warning in warnings:
        steps.say(f"warning: {warning}")
    _say_how_to_follow(steps, layout)
    return 1 if steps.failed else 0


def _system_unit_settings(
    layout: Layout, who: OpenClawUser, config: Config | None, kernel_url: str, warnings: list[str]
) -> UnitSettings:
    """The system unit's settings: run as OpenClaw's user, allowed to write only where its file lives."""
    command = aiosd_command()
    writable = [who.state_dir]
    unit_env = {"HOME": str(who.home), **who.environment}
    if config is not None:  # openclaw.config_path may name a file outside the state directory
        openclaw_file = resolve_openclaw_path(config.openclaw, unit_env)
        if not openclaw_file.parent.is_relative_to(who.state_dir):
            writable.append(openclaw_file.parent)
    blockers = _plan_blockers(layout, who, command)
    if blockers:
        raise ServiceError("the unit as planned could not do its work, so nothing was written or run:\n"
                           + "\n".join(f"  - {b}" for b in blockers))
    install_command = f"aiosd service install --system --openclaw-user {who.name}"
    return UnitSettings("system", command, layout.shown_config_path, readme_path(), kernel_url,
                        who.name, who.group, writable, who.environment, install_command)


def hidden_by_private_tmp(path: str) -> str | None:
    """The temporary directory (``/tmp`` or ``/var/tmp``) that holds ``path``, which the system unit's
    PrivateTmp=yes replaces with an empty one, or None."""
    for where in ("/var/tmp", "/tmp"):
        if path.startswith(where + "/"):
            return where
    return None


def _plan_blockers(layout: Layout, who: OpenClawUser, command: list[str]) -> list[str]:
    """What would keep the system unit from starting or from reaching OpenClaw's file, each with its fix."""
    blockers = []
    where = hidden_by_private_tmp(command[0])
    if where:
        blockers.append(f"aiosd is installed under {where} ({command[0]}), which the unit's PrivateTmp=yes hides "
                        "from the service, so it could not start: install it elsewhere, e.g. python3 -m venv "
                        "/opt/aiosd && /opt/aiosd/bin/pip install ..., then run /opt/aiosd/bin/aiosd service install")
    if not _rooted(layout.root, who.state_dir).is_dir():
        blockers.append(f"OpenClaw's state directory {who.state_dir} (of user {who.name}) does not exist, so the "
                        f"service could not write openclaw.json there: is OpenClaw set up for {who.name}? Name the "
                        "user OpenClaw runs as with --openclaw-user NAME, or its state directory with "
                        f"--openclaw-state-dir DIR (or create it: install -d -m 700 -o {who.name} -g {who.group} "
                        f"{shlex.quote(str(who.state_dir))})")
    return blockers


def _put_unit(steps: Steps, layout: Layout, unit: str, previous: str | None) -> None:
    """Write the unit file unless it already says the same (a dry run prints it instead)."""
    if steps.dry_run:
        steps.say(f"would write {layout.unit_path}" + (" (unchanged)" if previous == unit else "") + ":")
        steps.say("")
        steps.say(f"# {layout.unit_path}")
        steps.say(unit)
    elif previous == unit:
        steps.say(f"unit {layout.unit_path} is up to date")
    else:
        _write_text_atomically(layout.unit_path, unit, 0o644)
        steps.say(f"{'rewrote' if previous is not None else 'wrote'} {layout.unit_path}")


def _put_example_config(steps: Steps, layout: Layout, who: OpenClawUser | None) -> None:
    """Install the example config where there is none; an existing config is never touched."""
    if layout.config_path.exists():
        steps.say(f"kept the existing config {layout.config_path}")
    elif steps.dry_run:
        steps.say(f"would copy the example config {example_config_path()} to {layout.config_path}")
    else:
        group_id = pwd.getpwnam(who.name).pw_gid if who else None
        copied = _install_example_config(layout, group_id)
        steps.say(f"installed the example config as {layout.config_path}: set kernel.url and models.map there "
                  "(edits apply live)" if copied else f"kept the existing config {layout.config_path}")


def _say_what_the_sandbox_allows(steps: Steps, who: OpenClawUser, settings: UnitSettings, kernel_url: str) -> None:
    """For a system unit: which paths the service may write and which hosts it may reach."""
    extra = "".join(f" and {p}" for p in settings.writable_paths[1:])
    steps.say(f"the service may write OpenClaw's state directory {who.state_dir}{extra} and its own "
              "/var/lib/aiosd, nothing else")
    host = kernel_host(kernel_url)
    if host and not is_loopback_host(host):
        steps.say(f"the unit lets aiosd reach the kernel at {host}" + (
            " (by hostname: no address restriction, see the unit's comment)" if not _is_ip(host) else ""))
    else:
        steps.say("the unit lets aiosd reach only this machine: for a kernel elsewhere, set kernel.url and run "
                  "this command again")


def _reload_and_start(steps: Steps, layout: Layout, no_start: bool, *, restart: bool) -> None:
    """daemon-reload, then enable --now (and try-restart when the unit changed), unless --no-start."""
    ok = steps.run([*layout.systemctl_flags, "daemon-reload"])
    if ok and not no_start:
        ok = steps.run([*layout.systemctl_flags, "enable", "--now", UNIT_NAME])
        if ok and restart:
            # enable --now leaves a running service on its old unit.
            steps.run([*layout.systemctl_flags, "try-restart", UNIT_NAME])
    elif ok:
        steps.say(f"not started (--no-start): systemctl{_user_flag(layout)} enable --now aiosd")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _user_flag(layout: Layout) -> str:
    return " --user" if layout.mode == "user" else ""


def _linger_hint(steps: Steps, layout: Layout) -> None:
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return
    if not _rooted(layout.root, f"/var/lib/systemd/linger/{name}").exists():
        steps.say(f"note: a user service runs while {name} is logged in; to keep it running after logout "
                  f"(like OpenClaw's gateway): loginctl enable-linger {name}")


def _say_how_to_follow(steps: Steps, layout: Layout) -> None:
    user = _user_flag(layout)
    aiosd = _shown_command()
    config = shlex.quote(str(layout.shown_config_path))
    steps.say("")
    steps.say(f"follow the logs:  journalctl{user} -u aiosd -f")
    steps.say(f"check it:         systemctl{user} status aiosd")
    steps.say(f"                  {aiosd} status --config {config}")
    steps.say(f"after an edit:    {aiosd} check --config {config}   (a valid edit applies live)")
    steps.say(f"remove it:        {aiosd} service uninstall {layout.flag}")


# --- uninstall -----------------------------------------------------------------------------------


def _detect_mode(args: argparse.Namespace) -> str | None:
    """The mode given, else the one mode whose unit is installed, else None (nothing installed)."""
    if args.mode:
        return str(args.mode)
    present = [mode for mode in ("user", "system") if layout_for(mode, args.root).unit_path.exists()]
    if len(present) > 1:
        raise ServiceError("aiosd is installed both as a user and as a system unit: say which to remove, "
                           "--user or --system")
    return present[0] if present else None


def uninstall(args: argparse.Namespace) -> int:
    mode = _detect_mode(args)
    if mode is None:
        looked = ", ".join(str(layout_for(m, args.root).unit_path) for m in ("user", "system"))
        print(f"aiosd is not installed as a service (no unit at {looked}); nothing to do")
        return 0
    layout = layout_for(mode, args.root)
    _check_privileges(args, layout)
    steps = Steps(args.dry_run, _find_systemctl(args.systemctl))
    would = "would " if args.dry_run else ""
    dry = " (dry run: nothing is removed or run)" if args.dry_run else ""
    steps.say(f"removing aiosd's {mode} service{dry}:")
    unit_text = layout.unit_path.read_text(encoding="utf-8", errors="replace") if layout.unit_path.exists() else None
    if unit_text is not None:
        steps.run([*layout.systemctl_flags, "disable", "--now", UNIT_NAME])
        if not args.dry_run:
            layout.unit_path.unlink(missing_ok=True)
        steps.say(f"{would}remove {layout.unit_path}")
        steps.run([*layout.systemctl_flags, "daemon-reload"])
    else:
        steps.say(f"no unit at {layout.unit_path}")

    removal = _openclaw_removal_command(layout, unit_text)
    provider = _provider_id(layout)
    if args.purge:
        for path in (layout.config_path, layout.state_dir):
            if not path.exists():
                continue
            if not args.dry_run:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            steps.say(f"{would}remove {path}")
        if layout.mode == "user" and not args.dry_run:
            try:
                layout.config_path.parent.rmdir()  # only if empty: other files there are the user's
            except OSError:
                pass
        steps.say(f"aiosd's provider '{provider}' and its '{provider}/...' allowlist entries stay in OpenClaw's "
                  "openclaw.json: delete them there by hand (next time, run the command below before --purge: "
                  f"it needs the config): {removal}")
    else:
        steps.say(f"kept the config {layout.config_path} (--purge removes it and {layout.state_dir})")
        steps.say(f"aiosd's provider '{provider}' stays in OpenClaw's openclaw.json; to take it out: {removal}")
    return 1 if steps.failed else 0


def _provider_id(layout: Layout) -> str:
    try:
        return load_config(layout.config_path).openclaw.provider_id
    except (ConfigError, OSError):
        return str(load_schema()["properties"]["openclaw"]["properties"]["provider_id"]["default"])


def _openclaw_removal_command(layout: Layout, unit_text: str | None) -> str:
    """The ``sync-openclaw --remove`` command, as the user and with the variables the service had."""
    base = [*aiosd_command(), "sync-openclaw", "--remove", "--config", str(layout.shown_config_path)]
    if layout.mode == "user" or unit_text is None:
        return shlex.join(base)
    user = dict(unit_directives(unit_text)).get("User")
    variables = [f"{k}={v}" for k, v in sorted(unit_environment(unit_text).items()) if k in OPENCLAW_VARIABLES]
    prefix = ["sudo", "-u", user] if user else []
    return shlex.join([*prefix, *(["env", *variables] if variables else []), *base])


def run_service_command(args: argparse.Namespace) -> int:
    try:
        return install(args) if args.service_action == "install" else uninstall(args)
    except ServiceError as exc:
        print(f"aiosd service {args.service_action}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aiosd service {args.service_action}: {exc}", file=sys.stderr)
        return 1
