"""The ``aiosd`` command line: a thin layer over the loader, the daemon and the OpenClaw sync."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiosd import __version__
from aiosd.config.loader import ConfigError, load_config
from aiosd.config.schema import load_schema
from aiosd.config.settings import default_config_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiosd", description="Run OpenClaw's LLM calls through an AIOS kernel (an OpenAI-compatible relay)."
    )
    parser.add_argument("--version", action="version", version=f"aiosd {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $AIOSD_CONFIG, else /etc/aiosd.yaml)",
    )
    # --config is accepted before or after the command ("aiosd check --config x").
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("run", parents=[config_option], help="run the daemon (systemd: Type=notify)")
    commands.add_parser("check", parents=[config_option], help="validate the config file; exit 1 with every problem on stderr")
    commands.add_parser("schema", parents=[config_option], help="print the config file's JSON Schema")
    status = commands.add_parser("status", parents=[config_option], help="show a running daemon's status")
    status.add_argument("--json", action="store_true", help="print the raw JSON of GET /status")
    status.add_argument("--url", help="the daemon's address (default: from the config's listen)")
    from aiosd.cli.openclaw import add_sync_openclaw_parser

    add_sync_openclaw_parser(commands, parents=[config_option])
    from aiosd.cli.service import add_service_parser

    add_service_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = args.config or default_config_path()
    if args.command == "schema":
        print(json.dumps(load_schema(), indent=2))
        return 0
    if args.command == "check":
        return _check(config_path)
    if args.command == "run":
        from aiosd.daemon import run_daemon

        return run_daemon(config_path)
    if args.command == "service":  # installs the example config itself where none exists
        from aiosd.cli.service import run_service_command

        return run_service_command(args)
    if args.command == "status":  # works with an invalid file too: it reports the daemon, not the file
        from aiosd.cli.status import run_status_command

        return run_status_command(args, config_path)
    config = _load_or_report(config_path)
    if config is None:
        return 1
    if args.command == "sync-openclaw":
        from aiosd.cli.openclaw import run_sync_openclaw
        from aiosd.service.logs import setup_logging

        setup_logging(config.log_level)
        return run_sync_openclaw(args, config)
    raise AssertionError(args.command)


def _load_or_report(config_path: Path):
    try:
        return load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _check(config_path: Path) -> int:
    config = _load_or_report(config_path)
    if config is None:
        print(f"{config_path}: invalid, see above", file=sys.stderr)
        return 1
    models = ", ".join(m.id for m in config.models.map) or "none mapped"
    discover = " (plus the kernel's own list)" if config.models.discover else ""
    print(f"{config_path}: valid; listens on {config.listen}, kernel {config.kernel.shown_url}, models: {models}{discover}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
