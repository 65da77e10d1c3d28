"""The systemd units `aiosd service install` writes: systemd accepts both without a word, the system unit's sandbox
rates <= 2.0 yet lets aiosd reach its kernel, and both come from the one template shipped in the wheel."""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from aiosd.cli.service import aiosd_command
from aiosd.cli.units import UnitSettings, readme_path, render_unit, unit_directives, unit_template
from aiosd.config.durations import parse_duration
from aiosd.config.schema import load_schema

REPO = Path(__file__).resolve().parent.parent
ME = pwd.getpwuid(os.getuid())
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed (apt-get install systemd)")


def settings(mode: str, kernel_url: str = "http://localhost:8000", tmp: Path = Path("/etc")) -> UnitSettings:
    """What `aiosd service install` passes for this machine: this venv's aiosd, a real user and group."""
    if mode == "system":
        return UnitSettings("system", aiosd_command(), Path("/etc/aiosd.yaml"), readme_path(), kernel_url,
                            ME.pw_name, grp.getgrgid(ME.pw_gid).gr_name, [Path(ME.pw_dir) / ".openclaw"],
                            {"OPENCLAW_STATE_DIR": f"{ME.pw_dir}/.openclaw"})
    return UnitSettings("user", aiosd_command(), tmp / "xdg/aiosd/aiosd.yaml", readme_path(), kernel_url)


def written(tmp_path: Path, mode: str, kernel_url: str = "http://localhost:8000") -> Path:
    path = tmp_path / mode / "aiosd.service"  # systemd takes the unit's name from the file's
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_unit(settings(mode, kernel_url, tmp_path)))
    return path


def values(text: str, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit_directives(text, section) if k == key]


def analyze(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # A user manager's paths need a runtime directory; a private one keeps the check off the machine's.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)


KERNELS = ["http://localhost:8000", "http://192.0.2.10:8000", "http://kernel.example.net:8000"]


@needs_systemd_analyze
@pytest.mark.parametrize("kernel_url", KERNELS)
def test_systemd_analyze_verify_is_silent_on_the_system_unit(tmp_path, kernel_url):
    result = analyze(tmp_path, "verify", str(written(tmp_path, "system", kernel_url)))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_analyze_verify_is_silent_on_the_user_unit(tmp_path):
    result = analyze(tmp_path, "verify", "--user", str(written(tmp_path, "user")))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
@pytest.mark.parametrize("kernel_url", KERNELS)
def test_the_system_units_sandbox_rates_at_most_2_0(tmp_path, kernel_url):
    result = analyze(tmp_path, "security", "--offline=yes", "--no-pager", str(written(tmp_path, "system", kernel_url)))
    match = re.search(r"Overall exposure level for aiosd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_every_placeholder_and_mode_mark_is_filled_in():
    for mode in ("system", "user"):
        text = render_unit(settings(mode))
        assert not re.search(r"@[A-Z_]+@", text), mode
        assert not re.search(r"^(system|user):", text, re.M), mode
        assert "##" not in text


def test_both_units_run_the_same_daemon_the_same_way():
    system, user = render_unit(settings("system")), render_unit(settings("user"))
    for key in ("Type", "NotifyAccess", "ExecStart", "ExecStartPre", "ExecReload", "Restart", "WatchdogSec",
                "TimeoutStopSec", "KillMode", "LimitNOFILE", "StateDirectory", "SystemCallFilter", "NoNewPrivileges"):
        assert values(system, key) == values(user, key), key
    assert values(system, "WantedBy", "Install") == ["multi-user.target"]
    assert values(user, "WantedBy", "Install") == ["default.target"]
    # A user manager has no network-online.target and cannot change user or firewall its services.
    for key in ("User", "Group", "ProtectSystem", "PrivateUsers", "IPAddressDeny"):
        assert values(user, key) == [], key
    assert values(user, "Wants", "Unit") == []


def test_it_is_a_notify_service_with_a_watchdog_that_restarts_on_failure():
    text = render_unit(settings("system"))
    assert values(text, "Type") == ["notify"]
    assert values(text, "Restart") == ["on-failure"]
    assert parse_duration(values(text, "WatchdogSec")[0]) > 0


def test_start_and_reload_validate_the_config_first_then_reload_is_sighup():
    aiosd = aiosd_command()[0]
    text = render_unit(settings("system"))
    assert values(text, "ExecStartPre") == [f"{aiosd} check"]
    assert values(text, "ExecStart") == [f"{aiosd} run"]
    # systemd runs ExecReload= lines in order and stops at the first failure: an invalid file is
    # refused by `aiosd check` and the daemon never gets the SIGHUP.
    assert values(text, "ExecReload") == [f"{aiosd} check", "/bin/kill -HUP $MAINPID"]


def test_the_open_files_limit_is_well_above_systemds_default_1024():
    for mode in ("system", "user"):
        assert int(values(render_unit(settings(mode)), "LimitNOFILE")[0]) >= 65536


def test_systemd_waits_longer_than_the_default_drain():
    drain = parse_duration(load_schema()["properties"]["server"]["properties"]["drain_timeout"]["default"])
    assert parse_duration(values(render_unit(settings("system")), "TimeoutStopSec")[0]) > drain


def test_openclaws_directory_is_the_one_writable_place_besides_aiosds_state():
    text = render_unit(settings("system"))
    assert values(text, "ProtectSystem") == ["strict"]
    assert values(text, "ProtectHome") == ["read-only"]
    # "-": a state directory OpenClaw has not made yet must not stop the unit from starting.
    assert values(text, "ReadWritePaths") == [f"-{ME.pw_dir}/.openclaw"]
    assert values(text, "StateDirectory") == ["aiosd"]
    assert values(text, "User") == [ME.pw_name]


@pytest.mark.parametrize("mode", ["system", "user"])
def test_documentation_points_at_a_file_that_exists(mode):
    (uri,) = values(render_unit(settings(mode)), "Documentation", "Unit")
    parts = urlsplit(uri.replace("%%", "%"))
    assert parts.scheme == "file"
    path = Path(unquote(parts.path))
    assert path.is_file()
    assert "## Run as a service" in path.read_text(encoding="utf-8")


# --- the network: which addresses the sandbox lets aiosd reach --------------------------------------

SPECIAL = {"any": ["0.0.0.0/0", "::/0"], "localhost": ["127.0.0.0/8", "::1/128"],
           "link-local": ["169.254.0.0/16", "fe80::/64"], "multicast": ["224.0.0.0/4", "ff00::/8"]}


def reachable(text: str, address: str) -> bool:
    """systemd's rule: an address on the allow list passes; else one on the deny list is dropped; else it passes."""
    def listed(key: str) -> bool:
        networks = [n for v in values(text, key) for word in v.split() for n in SPECIAL.get(word, [word])]
        return any(ipaddress.ip_address(address) in ipaddress.ip_network(n, strict=False) for n in networks)
    return listed("IPAddressAllow") or not listed("IPAddressDeny")


def resolvers(resolv_conf: str) -> list[str]:
    return [line.split()[1] for line in resolv_conf.splitlines() if line.startswith("nameserver ")]


def test_a_kernel_on_this_machine_is_reachable_and_nothing_else():
    text = render_unit(settings("system", "http://localhost:8000"))
    assert reachable(text, "127.0.0.1") and reachable(text, "::1")
    assert not reachable(text, "192.0.2.10") and not reachable(text, "8.8.8.8")


@pytest.mark.parametrize("kernel, address", [("192.0.2.10", "192.0.2.10"), ("[2001:db8::7]", "2001:db8::7")])
def test_a_kernel_given_by_address_is_reachable(kernel, address):
    text = render_unit(settings("system", f"http://{kernel}:8000"))
    assert reachable(text, address)
    assert not reachable(text, "198.51.100.1")


def test_a_kernel_given_by_hostname_is_reachable_with_its_resolver():
    text = render_unit(settings("system", "http://kernel.example.net:8000"))
    # A resolver on the LAN (no systemd-resolved) and the kernel's address, whatever it resolves to.
    for resolver in [*resolvers("nameserver 192.168.1.1\nnameserver 2001:db8::53\n"), "127.0.0.53"]:
        assert reachable(text, resolver), resolver
    assert reachable(text, "203.0.113.40")
    assert "kernel.url names the host kernel.example.net" in text


def test_the_unit_says_which_line_to_add_for_a_kernel_elsewhere():
    text = render_unit(settings("system"))
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "IPAddressAllow=<the kernel's" in comments
    assert "IPAddressDeny= (empty)" in comments
    assert "systemctl edit aiosd" in comments


# --- escaping and shipping ---------------------------------------------------------------------------


def test_paths_with_spaces_percent_and_dollar_are_escaped(tmp_path):
    # systemd expands $ in a command's arguments, never in the executable (where $$ would stay $$).
    odd = UnitSettings("user", ["/opt/my aiosd/bin/aiosd$1", "x$y"], Path("/home/a b/100%/aiosd.yaml"), readme_path())
    text = render_unit(odd)
    assert values(text, "ExecStart") == ['"/opt/my aiosd/bin/aiosd$1" "x$$y" run']
    assert 'Environment="AIOSD_CONFIG=/home/a b/100%%/aiosd.yaml"' in text


@needs_systemd_analyze
@pytest.mark.parametrize("odd", ["a$b", "a b", "100%", "a$$b"])
def test_an_install_path_with_dollar_space_or_percent_passes_systemd_analyze_verify(tmp_path, odd):
    """Issue 18 item 13: a venv path holding `$` gives a unit whose command systemd finds and runs."""
    script = tmp_path / f"v-{odd}" / "bin" / "aiosd"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    unit = tmp_path / "u" / "aiosd.service"
    unit.parent.mkdir()
    unit.write_text(render_unit(UnitSettings("user", [str(script)], tmp_path / "c.yaml", readme_path())))
    result = analyze(tmp_path, "verify", "--user", str(unit))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("odd", ["a'b", 'a"b', "a\\b"])
def test_an_install_path_with_a_quote_or_backslash_is_refused_with_a_way_out(odd):
    """Issue 18 item 13: systemd refuses these in a command's executable; aiosd says so before writing."""
    from aiosd.cli.units import UnitValueError

    with pytest.raises(UnitValueError, match=r"systemd refuses .* install aiosd in a venv whose path has no quote"):
        render_unit(UnitSettings("user", [f"/opt/{odd}/bin/aiosd"], Path("/etc/aiosd.yaml"), readme_path()))


def test_a_newline_in_a_path_is_refused():
    from aiosd.cli.units import UnitValueError

    with pytest.raises(UnitValueError, match="control character"):
        render_unit(UnitSettings("user", ["/opt/aiosd/bin/aiosd"], Path("/etc/x\nExecStart=/bin/sh"), readme_path()))


def test_the_template_is_the_one_in_packaging():
    assert unit_template() == (REPO / "packaging" / "aiosd.service.in").read_text()


def test_the_wheel_ships_the_unit_template_and_the_readme(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=120)
    wheel = zipfile.ZipFile(next(tmp_path.glob("aiosd-*.whl")))
    assert wheel.read("aiosd/packaging/aiosd.service.in").decode() == unit_template()
    assert wheel.read("aiosd/README.md").decode() == (REPO / "README.md").read_text()


# What `aiosd service install --system --openclaw-user openclaw` writes for an install in /opt/aiosd:
# kept in the repository as packaging/aiosd.service so a reader sees a real unit.
EXAMPLE_UNIT = REPO / "packaging" / "aiosd.service"
EXAMPLE_SETTINGS = UnitSettings(
    "system", ["/opt/aiosd/bin/aiosd"], Path("/etc/aiosd.yaml"),
    Path("/opt/aiosd/lib/python3.11/site-packages/aiosd/README.md"), "http://localhost:8000",
    "openclaw", "openclaw", [Path("/home/openclaw/.openclaw")], {"OPENCLAW_STATE_DIR": "/home/openclaw/.openclaw"})


def test_the_example_unit_in_packaging_is_the_template_rendered():
    assert EXAMPLE_UNIT.read_text() == render_unit(EXAMPLE_SETTINGS), (
        "packaging/aiosd.service is out of date: regenerate it with `python -m tests.test_packaging`")


if __name__ == "__main__":
    EXAMPLE_UNIT.write_text(render_unit(EXAMPLE_SETTINGS))
