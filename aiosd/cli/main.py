"""The ``aiosd`` command line: the parser (every subcommand, its options, its exit codes) and the dispatch to each."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from aiosd import __version__
from aiosd.cli.subcommands import Subcommands
from aiosd.config.loader import ConfigError, load_config
from aiosd.config.schema import load_schema
from aiosd.config.settings import Config, default_config_path

LOG_LEVELS = ("debug", "info", "warning", "error")
CONFIG_HELP = "the config file (default: $AIOSD_CONFIG when it is set, else /etc/aiosd.yaml)"
LOG_LEVEL_HELP = "the least severe log lines shown on stderr (default: the config's logging.level)"
# sysexits' EX_USAGE: a mistyped option must not look like `check`'s 2 ("a check failed").
USAGE_ERROR = 64


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description on its own; indented lines (exit codes) stay as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith(" ") for line in lines[1:]):
                blocks.append("\n".join(indent + line for line in lines))
            else:
                blocks.append(super()._fill_text(block, width, indent))
        return "\n\n".join(blocks)


class _Parser(argparse.ArgumentParser):
    """argparse with paragraphs kept apart in --help and usage errors exiting 64."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def exit_codes(*lines: str) -> str:
    """The "exit status" block of a subcommand's --help."""
    return "exit status:\n" + "\n".join(f"  {line}" for line in lines)


def common_options() -> argparse.ArgumentParser:
    """--config and --log-level, accepted before or after the subcommand ("aiosd check --config x")."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", type=Path, metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
    parent.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS, help=LOG_LEVEL_HELP)
    return parent


# --- the subcommands ---------------------------------------------------------------------------
# Each adds its parser and sets ``handler``: a function of the parsed arguments (``args.config``
# already resolved to a Path) returning the exit status.


def add_run(commands: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        parents=parents,
        help="run the daemon (systemd: Type=notify)",
        description=(
            "Run the daemon in the foreground: serve the OpenAI-compatible endpoint on `listen`, forward "
            "every chat call to the AIOS kernel, keep OpenClaw's openclaw.json in step, and apply every "
            "valid edit of the config file live (an invalid edit is refused; the last good config keeps "
            "serving). Under systemd it reports READY=1, STATUS= and the watchdog. SIGHUP reloads the "
            "config; SIGTERM or SIGINT stop it once the requests in flight have finished. "
            "--log-level overrides the config's logging.level for as long as the daemon runs."
        ),
        epilog=exit_codes("0  stopped cleanly",
                          "1  could not start (no config, an invalid config, the address in use)"),
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from aiosd.daemon import run_daemon
    from aiosd.service.logs import override_level

    if args.log_level:
        override_level(args.log_level)
    return run_daemon(args.config)


def add_check(commands: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        parents=parents,
        help="validate the config file; with --kernel, the whole chain up to the kernel and OpenClaw",
        description=(
            "Validate the config file without starting anything: every problem is printed on stderr as "
            "file:line:column: key: what is wrong, all at once.\n\n"
            "With --kernel it goes on past the file, one line per check (ok, warn or FAIL): each kernel reachable "
            "(and if not, why, in plain words), the models it lists, every models.map entry present there, "
            "OpenClaw's openclaw.json found (openclaw.config_path or OpenClaw's own lookup), parseable, with "
            "aiosd's provider in it and allowed by its allowlist. --test then sends one short chat through the "
            "kernel, built and read the way the daemon does, and prints the answer and the time it took. It "
            "changes nothing anywhere (the test chat costs one LLM call). Log lines on stderr show only warnings and "
            "errors unless --log-level says otherwise."
        ),
        epilog=exit_codes(
            "0  the config is valid (and with --kernel, no check failed; warnings allowed)",
            "1  the config is invalid (or missing)",
            "2  the config is valid but a --kernel or --test check failed: the chain cannot work as it is",
            "   (what the daemon does by itself, like writing its provider into OpenClaw's file at its",
            "   first sync, is a warning, not a failure)",
        ),
    )
    parser.add_argument("--kernel", action="store_true",
                        help="also check the kernel, the model mappings and OpenClaw's file")
    parser.add_argument("--test", action="store_true",
                        help="also send one short chat through the kernel (implies --kernel; costs one LLM call)")
    parser.add_argument("--model", metavar="ID",
                        help="the model --test asks, as OpenClaw names it (default: the first mapped model the "
                             "kernel lists)")
    parser.add_argument("--timeout", metavar="DURATION", type=_duration, default=None,
                        help="how long --test waits for the answer, like 30s or 2m (default: 60s, at most "
                             "kernel.timeout)")
    parser.set_defaults(handler=_check)


def _duration(text: str) -> float:
    from aiosd.config.durations import DURATION_FORMS, parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {DURATION_FORMS}, got {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return seconds


def _check(args: argparse.Namespace) -> int:
    beyond = args.kernel or args.test
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if not exc.missing:  # "no config at ..." is the whole story
            print(f"{args.config}: invalid, see above", file=sys.stderr)
        return 1
    models = ", ".join(m.id for m in config.models.map) or "none mapped"
    discover = " (plus the kernel's own list)" if config.models.discover else ""
    summary = (f"{args.config}: valid; listens on {config.listen}, {config.shown_pool}, "
               f"models: {models}{discover}")
    if not beyond:
        print(summary)
        return 0
    import asyncio

    from aiosd.cli.check import EXIT_CHECK_FAILED, EXIT_OK, TEST_TIMEOUT, Report, run_kernel_checks
    from aiosd.service.logs import setup_logging

    setup_logging(args.log_level or "warning")  # the check's own lines say it all; log lines only for trouble
    report = Report(sys.stdout)
    report.add("ok", f"config {summary}")
    asyncio.run(run_kernel_checks(config, report, test=args.test, test_model=args.model,
                                  test_timeout=args.timeout or TEST_TIMEOUT))
    return EXIT_CHECK_FAILED if report.failed else EXIT_OK


def add_schema(commands: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "schema",
        parents=parents,
        help="print the config file's JSON Schema",
        description=(
            "Print the config file's JSON Schema (draft 2020-12) on stdout: every key, what it means and "
            "its default. The config file itself is not read."
        ),
    )
    parser.set_defaults(handler=_schema)


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(load_schema(), indent=2))
    return 0


def add_status(commands: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        parents=parents,
        help="show a running daemon's status",
        description=(
            "Ask a running daemon for its state (GET /status) and show it readably: config generation "
            "and last reload, models, kernel, queue, last OpenClaw sync. The daemon's address and key "
            "come from the config file (any form of auth.keys entry: the key itself, {key: ...}, {env: ...}, "
            "{file: ...}); --key or $AIOSD_KEY give the key instead. An invalid file is warned about and the "
            "daemon asked anyway (it keeps serving its last good config), with the address and key read from "
            "the file's listen and auth sections alone."
        ),
        epilog=exit_codes("0  the daemon answered", "1  it did not answer (or answered with an error)"),
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON of GET /status")
    parser.add_argument("--url",
                        help="the daemon's address, e.g. http://127.0.0.1:8700 (default: from the config's listen)")
    parser.add_argument("--key", metavar="KEY",
                        help="the API key to send (default: $AIOSD_KEY, else the first of the config's auth.keys); "
                             "$AIOSD_KEY keeps it out of the process list")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    # Works with an invalid file too: it reports the daemon, not the file.
    from aiosd.cli.status import run_status_command

    return run_status_command(args, args.config)


def add_sync_openclaw(commands: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    from aiosd.cli.openclaw import add_sync_openclaw_parser

    add_sync_openclaw_parser(commands, parents=parents).set_defaults(handler=_sync_openclaw)


def _sync_openclaw(args: argparse.Namespace) -> int:
    from aiosd.cli.openclaw import run_sync_openclaw
    from aiosd.service.logs import setup_logging

    config = _load_or_report(args.config)
    if config is None:
        return 1
    # A one-shot command prints its own result; the daemon's loggers speak only of trouble.
    setup_logging(args.log_level or "warning")
    return run_sync_openclaw(args, config)


def add_service(commands: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    # Its own --config-free options: each mode has its config path (/etc/aiosd.yaml, or under
    # $XDG_CONFIG_HOME), and it installs the example config there where none exists.
    from aiosd.cli.service import add_service_parser

    add_service_parser(commands).set_defaults(handler=_service)


def _service(args: argparse.Namespace) -> int:
    from aiosd.cli.service import run_service_command

    return run_service_command(args)


# The subcommands, in the order --help lists them.
SUBCOMMANDS = [
    add_run,
    add_check,
    add_schema,
    add_status,
    add_sync_openclaw,
    add_service,
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aiosd",
        description="Run OpenClaw's LLM calls through an AIOS kernel (an OpenAI-compatible relay).",
        epilog=(
            "`aiosd COMMAND --help` describes each command, its options and its exit status. "
            f"A command line aiosd cannot parse exits {USAGE_ERROR}."
        ),
    )
    parser.add_argument("--version", action="version", version=f"aiosd {__version__}")
    parser.add_argument("--config", type=Path, metavar="PATH", default=None, help=CONFIG_HELP)
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None, help=LOG_LEVEL_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = [common_options()]
    for add in SUBCOMMANDS:
        add(commands, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.config = args.config or default_config_path()
    status: int = args.handler(args)
    return status


def _load_or_report(config_path: Path) -> Config | None:
    """The config, or None after printing its problems on stderr."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
