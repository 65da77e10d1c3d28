"""The ``aiosd`` command line: check, schema, --version, and where the config file is looked for."""

from __future__ import annotations

import json

import jsonschema
import pytest

from aiosd import __version__
from aiosd.cli.main import main
from aiosd.config.schema import load_schema
from aiosd.config.shipped import example_config_path
from tests.support.command_line import run_aiosd

GOOD = 'listen: "127.0.0.1:8700"\nmodels:\n  map:\n    sonnet: {kernel_model: "claude-sonnet-4-5-20250929"}\n'
BAD = 'kernel:\n  timeout: soon\nlogging: {level: loud}\n'


@pytest.fixture(autouse=True)
def no_inherited_config(monkeypatch):
    monkeypatch.delenv("AIOSD_CONFIG", raising=False)


def test_check_of_a_valid_file_exits_0_and_summarises_it(tmp_path):
    path = tmp_path / "aiosd.yaml"
    path.write_text(GOOD)
    result = run_aiosd("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid; listens on 127.0.0.1:8700")
    assert "models: sonnet" in result.stdout
    assert result.stderr == ""


def test_check_of_an_invalid_file_exits_1_with_every_problem_on_stderr(tmp_path):
    path = tmp_path / "aiosd.yaml"
    path.write_text(BAD)
    result = run_aiosd("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:2:12: kernel.timeout: must be a duration like 30s, 5m or 1.5h (units ms, s, m, h; a plain number is "
        "seconds), got 'soon'",
        f"{path}:3:18: logging.level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
        f"{path}: invalid, see above",
    ]


def test_check_of_an_empty_file_accepts_it_as_all_defaults(tmp_path):
    path = tmp_path / "aiosd.yaml"
    path.write_text("# nothing set yet\n")
    result = run_aiosd("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{path}: valid; listens on 127.0.0.1:8700, kernel http://localhost:8000, "
                             "models: none mapped (plus the kernel's own list)\n")


def test_config_may_come_before_the_command(tmp_path, capsys):
    path = tmp_path / "aiosd.yaml"
    path.write_text(GOOD)
    assert main(["--config", str(path), "check"]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: valid")


def test_aiosd_config_is_used_without_config_and_config_wins_over_it(tmp_path, monkeypatch, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    monkeypatch.setenv("AIOSD_CONFIG", str(bad))
    assert main(["check"]) == 1
    assert f"{bad}: invalid, see above" in capsys.readouterr().err
    assert main(["check", "--config", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"{good}: valid")


def test_without_config_or_aiosd_config_the_file_is_etc_aiosd_yaml(capsys):
    code = main(["check"])
    out, err = capsys.readouterr()
    # Whatever this machine has there, the message names the file that was read.
    assert (out if code == 0 else err).startswith(("/etc/aiosd.yaml: ", "no config at /etc/aiosd.yaml: "))


def test_check_of_a_missing_file_says_there_is_none_and_how_to_create_it(tmp_path, capsys):
    path = tmp_path / "absent.yaml"
    assert main(["check", "--config", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"no config at {path}: create it from the commented example")
    assert f"cp {example_config_path()} {path}" in lines[0] and "aiosd service install" in lines[0]


def test_run_without_a_config_file_says_there_is_none_not_that_it_is_invalid(tmp_path):
    path = tmp_path / "etc" / "aiosd.yaml"
    result = run_aiosd("run", env={"AIOSD_CONFIG": str(path)}, cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.endswith(f"CRITICAL aiosd.daemon: cannot start: no config at {path}: create it from the commented "
                         f"example shipped with aiosd (cp {example_config_path()} {path}, then set kernel.url and "
                         "models.map), or run 'aiosd service install --system' (or --user), which installs it "
                         "with a systemd unit; or "
                         "name another file with --config PATH or $AIOSD_CONFIG")


def test_schema_prints_the_json_schema(tmp_path):
    result = run_aiosd("schema", cwd=tmp_path)
    assert result.returncode == 0
    printed = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed == load_schema()
    assert printed["properties"]["kernel"]["properties"]["url"]["default"] == "http://localhost:8000"


def test_version(tmp_path):
    result = run_aiosd("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"aiosd {__version__}"


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 64
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err


def test_check_of_a_pool_names_its_kernels_not_the_unused_kernel_url(tmp_path):
    path = tmp_path / "aiosd.yaml"
    path.write_text(GOOD + 'kernels:\n  - {url: "http://127.0.0.1:8001", name: east}\n'
                    '  - {url: "http://user:pw@127.0.0.1:8002"}\n')
    result = run_aiosd("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kernels east http://127.0.0.1:8001, http://***@127.0.0.1:8002, models:" in result.stdout
    assert "8000" not in result.stdout and "pw" not in result.stdout
