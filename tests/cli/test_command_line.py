"""The command line itself: every subcommand's --help, the global --log-level, usage errors."""

from __future__ import annotations

import argparse

import pytest

from aiosd.cli.main import build_parser, main
from tests.support.aiosd_harness import free_port
from tests.support.command_line import run_aiosd
from tests.support.daemon_process import (
    AiosdProcess,
    NotifySocket,
    RunningDaemon,
    close_daemon,
    daemon_config,
    write_by_rename,
)
from tests.support.fake_kernel import FakeKernel


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_help_lists_all_its_options_and_describes_it(name, capsys):
    text = help_of(capsys, name)
    options = [s for a in subcommands()[name]._actions for s in a.option_strings]
    missing = [option for option in options if option not in text]
    assert missing == []
    flat = " ".join(text.split())
    if name != "service":  # `service` picks the config path of its mode itself
        assert {"--config", "--log-level", "--help"} <= set(options)
        # Where the config comes from, in the help of the command that reads it.
        assert "--config PATH the config file (default: $AIOSD_CONFIG when it is set, else /etc/aiosd.yaml)" in flat
        assert "--log-level {debug,info,warning,error}" in flat
    # A paragraph between the usage and the options, not just the one-line summary.
    description = text.split("\n\n")[1]
    assert len(" ".join(description.split())) > 100, description


def test_run_help_from_the_installed_entry_point_says_what_the_daemon_does(tmp_path):
    result = run_aiosd("run", "--help", cwd=tmp_path)
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    assert "--log-level overrides the config's logging.level for as long as the daemon runs" in flat
    assert "exit status: 0 stopped cleanly 1 could not start" in flat


def test_the_global_options_may_come_before_the_command(tmp_path, capsys):
    path = tmp_path / "aiosd.yaml"
    path.write_text("logging: {level: info}\n")
    assert main(["--log-level", "debug", "--config", str(path), "check"]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: valid")


def test_a_usage_error_exits_64_so_it_cannot_pass_for_a_failed_check(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["check", "--no-such-option"])
    assert exited.value.code == 64
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["run", "--log-level", "loud"])
    assert exited.value.code == 64


def test_run_log_level_overrides_logging_level_at_start_and_after_every_reload(tmp_path):
    port = free_port()
    with FakeKernel() as kernel:
        text = daemon_config(kernel.url, port)
        config = tmp_path / "aiosd.yaml"
        config.write_text(text + "logging: {level: info}\n")
        notify = NotifySocket(tmp_path)
        process = AiosdProcess(config, notify, tmp_path,
                               args=["run", "--config", str(config), "--log-level", "warning"])
        daemon = RunningDaemon(process, notify, port, config)
        try:
            daemon.wait_for("READY", "1", timeout=20)
            write_by_rename(config, text + "logging: {level: debug}\n")
            daemon.wait_for_reload()
        finally:
            close_daemon(daemon)
    lines = daemon.process.stderr_lines()
    # The config asked for info, then debug: neither a start-up info line nor the reload's is there.
    assert [line for line in lines if line.startswith(("<6>", "<7>"))] == []
    assert not any("config reloaded" in line for line in lines)
