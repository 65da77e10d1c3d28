"""``aiosd service install|uninstall``, run for real into a temporary root with a systemctl that records its calls."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import aiosd.cli.service as service_module
from aiosd.cli.main import main
from aiosd.cli.units import unit_directives, unit_environment
from aiosd.config.shipped import example_config_path
from tests.support.daemon_process import REPO

ME = pwd.getpwuid(os.getuid())
MY_GROUP = grp.getgrgid(ME.pw_gid).gr_name
AIOSD = str(Path(os.path.abspath(sys.executable)).parent / "aiosd")
REAL_HIDDEN_BY_PRIVATE_TMP = service_module.hidden_by_private_tmp


class FakeSystemctl:
    """A systemctl script that records each call's arguments and fails for the verbs it is told to."""

    def __init__(self, directory: Path, fail: tuple[str, ...] = ()) -> None:
        self.log = directory / "systemctl.log"
        self.path = directory / "systemctl"
        failing = "".join(f'  *" {verb} "*) echo "Failed to {verb} unit: Access denied" >&2; exit 1;;\n'
                          for verb in fail)
        self.path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(self.log))}\n'
                             f'case " $* " in\n{failing}esac\nexit 0\n')
        self.path.chmod(0o755)

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A home, XDG directories and a root standing in for / , all under tmp_path; no sudo, no OpenClaw variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "xdg-state"))
    for name in ("SUDO_USER", "OPENCLAW_HOME", "OPENCLAW_STATE_DIR", "OPENCLAW_CONFIG_PATH", "AIOSD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "root"
    (root / ME.pw_dir.lstrip("/") / ".openclaw").mkdir(parents=True)  # OpenClaw set up for this user
    # This checkout's venv may itself lie under /tmp (CI copies the repository there); the PrivateTmp
    # check is then tested on its own (test_an_aiosd_under_tmp_is_an_error_as_privatetmp_hides_it).
    monkeypatch.setattr(service_module, "hidden_by_private_tmp", lambda path: None)
    return type("Env", (), {"home": home, "root": root, "xdg": home / "xdg-config", "tmp": tmp_path,
                            "systemctl": FakeSystemctl(tmp_path)})


def service(env, *args: str, systemctl: FakeSystemctl | None = None) -> int:
    hooks = ["--root", str(env.root), "--systemctl", str((systemctl or env.systemctl).path)]
    return main(["service", *args, *hooks])


def own_config(env, text: str = 'listen: "127.0.0.1:8700"\n') -> Path:
    """An existing /etc/aiosd.yaml (under the test root) that leaves openclaw.config_path to OpenClaw's lookup."""
    config = env.root / "etc/aiosd.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    return config


def system_unit(env) -> Path:
    return env.root / "etc/systemd/system/aiosd.service"


def user_unit(env) -> Path:
    return env.xdg / "systemd/user/aiosd.service"


def values(path: Path, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit_directives(path.read_text(), section) if k == key]


# --- install --system ----------------------------------------------------------------------------


def test_system_install_writes_the_unit_with_real_paths_installs_the_config_and_starts_it(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    out = capsys.readouterr().out
    unit = system_unit(env)
    assert values(unit, "ExecStart") == [f"{AIOSD} run"]  # this venv's aiosd, not whatever is on PATH
    assert values(unit, "ExecStartPre") == [f"{AIOSD} check"]
    assert values(unit, "ExecReload") == [f"{AIOSD} check", "/bin/kill -HUP $MAINPID"]
    assert values(unit, "User") == [ME.pw_name] and values(unit, "Group") == [MY_GROUP]
    assert values(unit, "ReadWritePaths") == [f"-{ME.pw_dir}/.openclaw"]
    assert values(unit, "StateDirectory") == ["aiosd"]
    assert unit_environment(unit.read_text()) == {"AIOSD_CONFIG": "/etc/aiosd.yaml", "PYTHONUNBUFFERED": "1",
                                                  "OPENCLAW_STATE_DIR": f"{ME.pw_dir}/.openclaw"}
    assert values(unit, "WantedBy", "Install") == ["multi-user.target"]
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644

    config = env.root / "etc/aiosd.yaml"
    assert config.read_bytes() == example_config_path().read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # may hold API keys

    assert env.systemctl.calls == ["daemon-reload", "enable --now aiosd.service"]
    assert f"wrote {unit}" in out
    assert f"installed the example config as {config}" in out
    assert "journalctl -u aiosd -f" in out
    assert "systemctl status aiosd" in out
    assert f"{AIOSD} status --config /etc/aiosd.yaml" in out


def test_system_install_finds_the_state_directory_in_the_users_openclaw_gateway_unit(env, capsys):
    gateway = env.root / ME.pw_dir.lstrip("/") / ".config/systemd/user/openclaw-gateway.service"
    gateway.parent.mkdir(parents=True)
    gateway.write_text('[Service]\nEnvironment="OPENCLAW_STATE_DIR=/srv/claw state" OPENCLAW_GATEWAY_PORT=18789\n'
                       "ExecStart=/usr/bin/openclaw gateway\n")
    own_config(env)
    (env.root / "srv/claw state").mkdir(parents=True)
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    unit = system_unit(env)
    assert values(unit, "ReadWritePaths") == ['"-/srv/claw state"']
    assert unit_environment(unit.read_text())["OPENCLAW_STATE_DIR"] == "/srv/claw state"
    assert "OPENCLAW_GATEWAY_PORT" not in unit.read_text()


def test_an_explicit_state_directory_wins(env):
    own_config(env)
    (env.root / "srv/oc").mkdir(parents=True)
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, "--openclaw-state-dir", "/srv/oc") == 0
    assert values(system_unit(env), "ReadWritePaths") == ["-/srv/oc"]


def test_a_relative_state_directory_is_refused(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, "--openclaw-state-dir", "oc") == 1
    assert "--openclaw-state-dir must be an absolute path, got 'oc'" in capsys.readouterr().err
    assert not system_unit(env).exists()


def test_openclaw_config_path_outside_the_state_directory_is_writable_too(env):
    own_config(env, 'openclaw: {config_path: "/srv/shared/openclaw.json"}\n')
    (env.root / "srv/oc").mkdir(parents=True)
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, "--openclaw-state-dir", "/srv/oc") == 0
    assert values(system_unit(env), "ReadWritePaths") == ["-/srv/oc -/srv/shared"]


def test_the_kernel_address_in_the_config_is_allowed_through_the_firewall(env, capsys):
    own_config(env, 'kernel: {url: "http://192.0.2.10:8000"}\n')
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    assert values(system_unit(env), "IPAddressDeny") == ["any"]
    assert values(system_unit(env), "IPAddressAllow") == ["localhost", "192.0.2.10"]
    assert "the unit lets aiosd reach the kernel at 192.0.2.10" in capsys.readouterr().out


def test_installing_twice_changes_nothing_and_never_overwrites_the_config(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    config = env.root / "etc/aiosd.yaml"
    config.write_text("# my edits\nlisten: 127.0.0.1:8701\n")
    unit_before = system_unit(env).read_text()
    capsys.readouterr()
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    out = capsys.readouterr().out
    assert config.read_text() == "# my edits\nlisten: 127.0.0.1:8701\n"
    assert system_unit(env).read_text() == unit_before
    assert f"unit {system_unit(env)} is up to date" in out
    assert f"kept the existing config {config}" in out
    # Nothing changed, so nothing is restarted.
    assert env.systemctl.calls == ["daemon-reload", "enable --now aiosd.service"] * 2


def test_reinstalling_after_kernel_url_changed_rewrites_the_unit_and_restarts_it(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    (env.root / "etc/aiosd.yaml").write_text('kernel: {url: "http://[2001:db8::7]:8000"}\n')
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    assert values(system_unit(env), "IPAddressAllow") == ["localhost", "2001:db8::7"]
    assert f"rewrote {system_unit(env)}" in capsys.readouterr().out
    assert env.systemctl.calls[-3:] == ["daemon-reload", "enable --now aiosd.service", "try-restart aiosd.service"]


def test_no_start_only_reloads_systemd(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, "--no-start") == 0
    assert env.systemctl.calls == ["daemon-reload"]
    assert "not started (--no-start): systemctl enable --now aiosd" in capsys.readouterr().out


def test_dry_run_prints_the_unit_and_the_commands_and_touches_nothing(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, "--dry-run") == 0
    out = capsys.readouterr().out
    assert not (env.root / "etc").exists()
    assert env.systemctl.calls == []
    assert f"would copy the example config {example_config_path()} to {env.root}/etc/aiosd.yaml" in out
    assert "would run: systemctl daemon-reload\nwould run: systemctl enable --now aiosd.service\n" in out
    # The printed unit is exactly what the real install then writes.
    printed = out.split(f"# {system_unit(env)}\n", 1)[1].split("\n\nwould copy", 1)[0] + "\n"
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    assert system_unit(env).read_text() == printed


def test_dry_run_through_the_real_command_line(env):
    child_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(env.home)}
    result = subprocess.run([sys.executable, "-m", "aiosd", "service", "install", "--user", "--dry-run"],
                            capture_output=True, text=True, env=child_env, timeout=60, cwd=env.tmp)
    assert result.returncode == 0, result.stderr
    unit = env.home / ".config/systemd/user/aiosd.service"
    assert f"# {unit}\n" in result.stdout
    assert f"Environment=AIOSD_CONFIG={env.home}/.config/aiosd/aiosd.yaml" in result.stdout
    assert "would run: systemctl --user daemon-reload" in result.stdout
    assert not unit.exists()


def test_a_failing_systemctl_is_reported_and_the_exit_code_says_so(env, capsys):
    (env.tmp / "failing").mkdir()
    failing = FakeSystemctl(env.tmp / "failing", fail=("enable",))
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, systemctl=failing) == 1
    out = capsys.readouterr().out
    assert "FAILED (exit 1): systemctl enable --now aiosd.service: Failed to enable unit: Access denied" in out
    assert system_unit(env).exists()  # what was written stays, and the summary still says how to look


def test_a_missing_systemctl_is_reported(env, capsys):
    code = main(["service", "install", "--user", "--root", str(env.root), "--systemctl", str(env.tmp / "nowhere")])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILED: systemctl --user daemon-reload:" in out
    assert "systemctl --user needs your own login session" in out


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed (apt-get install systemd)")


def fake_venv(env, monkeypatch, name: str, script: bool = True) -> Path:
    """This process seen as running from a venv at ``name`` under the test's directory."""
    venv = env.tmp / name
    (venv / "bin").mkdir(parents=True)
    if script:
        (venv / "bin" / "aiosd").write_text("#!/bin/sh\n")
        (venv / "bin" / "aiosd").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python"))
    return venv


@needs_systemd_analyze
def test_a_venv_path_with_a_dollar_installs_a_unit_that_verifies(env, monkeypatch, capsys):
    """Issue 18 item 13: `$` in the venv path is written so systemd runs that very file."""
    venv = fake_venv(env, monkeypatch, "v-a$b")
    assert service(env, "install", "--user") == 0
    out = capsys.readouterr().out
    assert "verified the unit: systemd-analyze verify --user aiosd.service" in out
    assert values(user_unit(env), "ExecStart") == [f'"{venv}/bin/aiosd" run']
    assert env.systemctl.calls == ["--user daemon-reload", "--user enable --now aiosd.service"]


@pytest.mark.parametrize("odd", ["v-a'b", 'v-a"b', "v-a\\b"])
def test_a_venv_path_systemd_refuses_is_refused_before_anything_is_written(env, monkeypatch, capsys, odd):
    """Issue 18 item 13: a quote or backslash in the venv path: a clear refusal, no unit, no systemctl."""
    fake_venv(env, monkeypatch, odd)
    assert service(env, "install", "--user") == 1
    err = capsys.readouterr().err
    assert "which systemd refuses in a unit's command" in err and "e.g. /opt/aiosd" in err
    assert not user_unit(env).exists()
    assert env.systemctl.calls == []


@needs_systemd_analyze
def test_a_unit_that_does_not_verify_is_never_written_nor_enabled(env, monkeypatch, capsys):
    """Issue 18 item 13: `systemd-analyze verify` runs before anything is written; its refusal stops the install."""
    fake_venv(env, monkeypatch, "gone", script=False)  # the unit would run a python that is not there
    assert service(env, "install", "--user") == 1
    err = capsys.readouterr().err
    assert "the unit does not pass `systemd-analyze verify --user aiosd.service`" in err
    assert "is not executable" in err and "nothing was written, reloaded or enabled" in err
    assert not user_unit(env).exists()
    assert env.systemctl.calls == []


def test_a_failing_verify_keeps_the_installed_unit_and_enables_nothing(env, capsys):
    """Issue 18 item 13: a reinstall whose unit does not verify leaves the working unit as it was."""
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    before = system_unit(env).read_text()
    calls = len(env.systemctl.calls)
    refusing = env.tmp / "systemd-analyze"
    refusing.write_text("#!/bin/sh\necho 'aiosd.service: Unit configuration has fatal error' >&2\nexit 1\n")
    refusing.chmod(0o755)
    own_config(env, "kernel: {url: 'http://192.0.2.7:8000'}\n")
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name, "--systemd-analyze", str(refusing)) == 1
    assert "Unit configuration has fatal error" in capsys.readouterr().err
    assert system_unit(env).read_text() == before
    assert len(env.systemctl.calls) == calls


def test_an_unknown_openclaw_user_is_refused_before_anything_is_written(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", "no-such-user-aiosd") == 1
    err = capsys.readouterr().err
    assert "there is no user 'no-such-user-aiosd' on this machine" in err
    assert "--openclaw-user NAME" in err
    assert not (env.root / "etc").exists()


def test_the_user_who_ran_sudo_is_the_default_openclaw_user(env, monkeypatch, capsys):
    desktop = next(entry for entry in pwd.getpwall() if entry.pw_uid != 0)
    desktop_user = desktop.pw_name
    (env.root / desktop.pw_dir.lstrip("/") / ".openclaw").mkdir(parents=True)
    monkeypatch.setenv("SUDO_USER", desktop_user)
    assert service(env, "install", "--system", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"running as {desktop_user} (the user who ran sudo; --openclaw-user NAME to choose another)" in out
    assert f"\nUser={desktop_user}\n" in out


def test_a_system_install_without_root_says_to_use_sudo(env, monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["service", "install", "--system", "--openclaw-user", "alice"]) == 1
    assert f"aiosd service install: a system unit needs root: sudo {AIOSD} service install --system " \
           "--openclaw-user alice" in capsys.readouterr().err


def test_user_install_refuses_system_only_options(env, capsys):
    assert service(env, "install", "--user", "--openclaw-user", ME.pw_name) == 1
    assert "--openclaw-user and --openclaw-state-dir are for --system" in capsys.readouterr().err


# --- install --user ------------------------------------------------------------------------------


def test_user_install_puts_unit_and_config_under_xdg_config_home(env, capsys):
    assert service(env, "install", "--user") == 0
    out = capsys.readouterr().out
    unit, config = user_unit(env), env.xdg / "aiosd/aiosd.yaml"
    assert values(unit, "ExecStart") == [f"{AIOSD} run"]
    assert unit_environment(unit.read_text()) == {"AIOSD_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    assert values(unit, "User") == [] and values(unit, "IPAddressDeny") == []
    assert values(unit, "WantedBy", "Install") == ["default.target"]
    assert config.read_bytes() == example_config_path().read_bytes()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert env.systemctl.calls == ["--user daemon-reload", "--user enable --now aiosd.service"]
    assert "journalctl --user -u aiosd -f" in out
    assert "systemctl --user status aiosd" in out
    assert f"loginctl enable-linger {ME.pw_name}" in out


def test_user_install_without_xdg_config_home_uses_dot_config(env, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert service(env, "install", "--user") == 0
    assert (env.home / ".config/systemd/user/aiosd.service").is_file()
    assert (env.home / ".config/aiosd/aiosd.yaml").is_file()


def test_user_unit_takes_openclaws_variables_from_its_gateway_unit(env, monkeypatch):
    monkeypatch.setenv("OPENCLAW_HOME", "/from/the/shell")
    gateway = env.xdg / "systemd/user/openclaw-gateway.service"
    gateway.parent.mkdir(parents=True)
    gateway.write_text("[Service]\nEnvironment=OPENCLAW_STATE_DIR=/srv/oc-100%\nExecStart=/usr/bin/openclaw gateway\n")
    assert service(env, "install", "--user") == 0
    text = user_unit(env).read_text()
    assert "OPENCLAW_STATE_DIR=/srv/oc-100%%" in text  # % is a specifier in unit files
    assert unit_environment(text)["OPENCLAW_STATE_DIR"] == "/srv/oc-100%"
    assert unit_environment(text)["OPENCLAW_HOME"] == "/from/the/shell"


def test_a_config_path_with_spaces_and_percent_is_escaped(env, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env.home / "my config 100%"))
    assert service(env, "install", "--user") == 0
    text = (env.home / "my config 100%/systemd/user/aiosd.service").read_text()
    assert unit_environment(text)["AIOSD_CONFIG"] == str(env.home / "my config 100%/aiosd/aiosd.yaml")


# --- uninstall -----------------------------------------------------------------------------------


def test_uninstall_removes_the_unit_keeps_the_config_and_says_how_to_clean_openclaws_file(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    (env.root / "var/lib/aiosd").mkdir(parents=True)
    capsys.readouterr()
    assert service(env, "uninstall") == 0  # finds the system unit by itself
    out = capsys.readouterr().out
    assert not system_unit(env).exists()
    assert (env.root / "etc/aiosd.yaml").exists() and (env.root / "var/lib/aiosd").exists()
    assert env.systemctl.calls[2:] == ["disable --now aiosd.service", "daemon-reload"]
    assert f"kept the config {env.root}/etc/aiosd.yaml (--purge removes it" in out
    assert (f"aiosd's provider 'aios' stays in OpenClaw's openclaw.json; to take it out: sudo -u {ME.pw_name} "
            f"env OPENCLAW_STATE_DIR={ME.pw_dir}/.openclaw {AIOSD} sync-openclaw --remove "
            "--config /etc/aiosd.yaml") in out


def test_uninstall_purge_removes_config_and_state(env, capsys):
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 0
    (env.root / "var/lib/aiosd").mkdir(parents=True)
    (env.root / "var/lib/aiosd/models.json").write_text("[]")
    assert service(env, "uninstall", "--system", "--purge") == 0
    out = capsys.readouterr().out
    assert not system_unit(env).exists()
    assert not (env.root / "etc/aiosd.yaml").exists()
    assert not (env.root / "var/lib/aiosd").exists()
    assert f"remove {env.root}/etc/aiosd.yaml" in out
    assert "stay in OpenClaw's openclaw.json: delete them there by hand" in out


def test_user_uninstall_purge_leaves_other_files_in_the_config_directory(env):
    assert service(env, "install", "--user") == 0
    (env.xdg / "aiosd/aiosd.key").write_text("sk-mine")
    assert service(env, "uninstall", "--user", "--purge") == 0
    assert not user_unit(env).exists() and not (env.xdg / "aiosd/aiosd.yaml").exists()
    assert (env.xdg / "aiosd/aiosd.key").read_text() == "sk-mine"
    assert env.systemctl.calls[2:] == ["--user disable --now aiosd.service", "--user daemon-reload"]


def test_uninstall_dry_run_removes_nothing(env, capsys):
    assert service(env, "install", "--user") == 0
    capsys.readouterr()
    assert service(env, "uninstall", "--purge", "--dry-run") == 0
    out = capsys.readouterr().out
    assert user_unit(env).exists() and (env.xdg / "aiosd/aiosd.yaml").exists()
    assert "would run: systemctl --user disable --now aiosd.service" in out
    assert f"would remove {env.xdg}/aiosd/aiosd.yaml" in out


def test_uninstall_when_nothing_is_installed_says_so(env, capsys):
    assert service(env, "uninstall") == 0
    assert "aiosd is not installed as a service" in capsys.readouterr().out
    assert env.systemctl.calls == []


def test_a_plan_that_could_not_work_is_an_error_saying_what_to_fix_and_writes_nothing(env, capsys):
    # The case: a user whose home does not exist, and an aiosd in a venv under /tmp.
    nobody = pwd.getpwnam("nobody")
    assert service(env, "install", "--system", "--dry-run", "--openclaw-user", "nobody") == 1
    err = capsys.readouterr().err
    assert "the unit as planned could not do its work, so nothing was written or run" in err
    assert (f"OpenClaw's state directory {nobody.pw_dir}/.openclaw (of user nobody) does not exist" in err
            and "--openclaw-state-dir DIR" in err)
    # The real install stops at the same point: no unit, no config, no systemctl enable.
    assert service(env, "install", "--system", "--openclaw-user", "nobody") == 1
    assert not system_unit(env).exists() and not (env.root / "etc").exists() and env.systemctl.calls == []


def test_an_aiosd_under_tmp_is_an_error_as_privatetmp_hides_it(env, monkeypatch, capsys):
    monkeypatch.setattr(service_module, "hidden_by_private_tmp", REAL_HIDDEN_BY_PRIVATE_TMP)
    monkeypatch.setattr(service_module, "aiosd_command", lambda: ["/tmp/venv/bin/aiosd"])
    assert service(env, "install", "--system", "--dry-run", "--openclaw-user", ME.pw_name) == 1
    err = capsys.readouterr().err
    assert "aiosd is installed under /tmp (/tmp/venv/bin/aiosd), which the unit's PrivateTmp=yes hides" in err
    assert "install it elsewhere, e.g. python3 -m venv /opt/aiosd" in err
    assert service(env, "install", "--system", "--openclaw-user", ME.pw_name) == 1
    assert not system_unit(env).exists() and env.systemctl.calls == []


def test_only_paths_under_the_temporary_directories_are_hidden_by_private_tmp():
    assert REAL_HIDDEN_BY_PRIVATE_TMP("/tmp/venv/bin/aiosd") == "/tmp"
    assert REAL_HIDDEN_BY_PRIVATE_TMP("/var/tmp/v/bin/aiosd") == "/var/tmp"
    assert REAL_HIDDEN_BY_PRIVATE_TMP("/opt/aiosd/bin/aiosd") is None
    assert REAL_HIDDEN_BY_PRIVATE_TMP("/tmpfoo/bin/aiosd") is None
