"""``aiosd check --kernel [--test]`` against the fake kernel (running, down, missing a model) and OpenClaw files."""

from __future__ import annotations

import json
import socket

import pytest

from aiosd.cli.check import TEST_PROMPT
from aiosd.cli.main import main
from aiosd.config.loader import load_config
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call
from tests.support.fake_kernel import FakeKernel, Hang, LLMFailure, Text


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    for name in ("AIOSD_CONFIG", "OPENCLAW_CONFIG_PATH", "OPENCLAW_STATE_DIR", "OPENCLAW_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def kernel():
    with FakeKernel() as fake:
        yield fake


@pytest.fixture
def fresh(kernel):
    kernel.clear_script()
    kernel.reset_counters()
    return kernel


def write_config(tmp_path, kernel_url: str, *, models: dict[str, str] | None = None, openclaw: str = "") -> str:
    models = {"sonnet": "gpt-4o-mini"} if models is None else models
    rows = "".join(f"    {i}: {{kernel_model: \"{k}\"}}\n" for i, k in models.items())
    openclaw = openclaw or f'openclaw: {{config_path: "{tmp_path / "openclaw.json"}", create: false}}\n'
    path = tmp_path / "aiosd.yaml"
    path.write_text(f'listen: "127.0.0.1:8700"\nkernel: {{url: "{kernel_url}", connect_timeout: 2s}}\n'
                    f"models:\n  discover: false\n  map:\n{rows}{openclaw}")
    return str(path)


def synced_openclaw(tmp_path, config: str, content: dict | None = None) -> None:
    """OpenClaw's file as aiosd's own sync leaves it."""
    (tmp_path / "openclaw.json").write_text(json.dumps(content or {"agents": {"defaults": {}}}))
    assert main(["sync-openclaw", "--config", config, "--log-level", "error"]) == 0


def check(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(["check", *argv])
    out = capsys.readouterr().out
    return code, out.splitlines()


def lines_with(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


def test_everything_in_order_is_all_ok_and_exits_0(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config, {"agents": {"defaults": {"modelPolicy": {"allow": ["openai/gpt-4o"]}}}})
    capsys.readouterr()
    code, lines = check(capsys, "--kernel", "--config", config)
    openclaw = tmp_path / "openclaw.json"
    assert lines == [
        f"ok    config {config}: valid; listens on 127.0.0.1:8700, kernel {fresh.url}, models: sonnet",
        lines[1],  # the time it took varies
        f"ok    kernel {fresh.url}: lists 3 models: gpt-4o-mini, qwen2.5:7b, meta-llama/Llama-3.1-8B-Instruct",
        "ok    models.map.sonnet: kernel model 'gpt-4o-mini' is there",
        f"ok    openclaw {openclaw}: found (openclaw.config_path) and parses",
        f"ok    openclaw {openclaw}: provider 'aios' points at http://127.0.0.1:8700/v1 with 1 model",
        f"ok    openclaw {openclaw}: agents.defaults.modelPolicy.allow lets aios/ models through",
    ]
    assert lines[1].startswith(f"ok    kernel {fresh.url}: reachable, answered /core/llms/list in ")
    assert code == 0


def test_a_kernel_that_is_down_is_said_as_connection_refused_and_exits_2(tmp_path, capsys):
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    config = write_config(tmp_path, f"http://127.0.0.1:{port}")
    code, lines = check(capsys, "--kernel", "--test", "--config", config)
    assert code == 2
    assert lines[1] == (f"FAIL  kernel http://127.0.0.1:{port}: not reachable: connection refused: nothing listens on "
                        f"port {port} of 127.0.0.1 (is the kernel running? is the port right?)")
    assert "warn  models.map: not checked against the kernel (its model list could not be had)" in lines
    assert "warn  test chat: not sent, as the kernel did not answer" in lines


def test_an_unknown_kernel_host_is_said_as_such(tmp_path, capsys, monkeypatch):
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # the answer any resolver gives for .invalid, without asking one
        if str(host).endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    config = write_config(tmp_path, "http://no-such-kernel.invalid:8000")
    code, lines = check(capsys, "--kernel", "--config", config)
    assert code == 2
    assert lines[1] == ("FAIL  kernel http://no-such-kernel.invalid:8000: not reachable: the host "
                        "'no-such-kernel.invalid' is not known (DNS lookup failed; check the name in the URL)")


def test_a_mapping_the_kernel_does_not_have_fails_by_name(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url, models={"sonnet": "gpt-4o-mini", "opus": "claude-opus-4"})
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    code, lines = check(capsys, "--kernel", "--config", config)
    assert code == 2
    assert "ok    models.map.sonnet: kernel model 'gpt-4o-mini' is there" in lines
    assert ("FAIL  models.map.opus: the kernel does not list 'claude-opus-4'; calls to opus would fail (it lists: "
            "gpt-4o-mini, meta-llama/Llama-3.1-8B-Instruct, qwen2.5:7b)") in lines


def test_a_missing_openclaw_file_is_a_warning_as_aiosd_serves_without_it(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    code, lines = check(capsys, "--kernel", "--test", "--config", config)
    assert code == 0  # the chain up to aiosd works; OpenClaw's side is warned about
    assert lines_with(lines, "openclaw ") == [
        f"warn  openclaw {tmp_path / 'openclaw.json'}: not found (openclaw.config_path); is OpenClaw set up for this "
        "user? openclaw.config_path names another file (aiosd serves without it, and syncs once it exists)"]
    assert lines[-1].startswith("ok    test chat with sonnet")
    creating = write_config(tmp_path, fresh.url,
                            openclaw=f'openclaw: {{config_path: "{tmp_path / "new.json"}", create: true}}\n')
    code, lines = check(capsys, "--kernel", "--config", creating)
    assert code == 0
    assert lines[-1] == (f"warn  openclaw {tmp_path / 'new.json'}: not there yet (openclaw.config_path); aiosd creates "
                         "it at its first sync (openclaw.create)")
    assert not (tmp_path / "new.json").exists()  # a check changes nothing


def test_a_broken_openclaw_file_says_where_it_is_broken(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    (tmp_path / "openclaw.json").write_text('{"models": {"providers": {}},\n  "agents": [}\n')
    code, lines = check(capsys, "--kernel", "--config", config)
    assert code == 2
    assert lines[-1].startswith(f"FAIL  openclaw {tmp_path / 'openclaw.json'}: found (openclaw.config_path) but is "
                                "not valid JSON5 at line 2, column ")


def test_the_file_is_found_the_way_openclaw_finds_it(tmp_path, fresh, capsys, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(state))
    config = write_config(tmp_path, fresh.url, openclaw="openclaw: {create: false}\n")
    (state / "openclaw.json").write_text("{}")
    code, lines = check(capsys, "--kernel", "--config", config)
    found = "found (OpenClaw's own lookup: $OPENCLAW_STATE_DIR) and parses"
    assert f"ok    openclaw {state / 'openclaw.json'}: {found}" in lines
    assert lines_with(lines, "has no provider 'aios'") == [
        f"warn  openclaw {state / 'openclaw.json'}: has no provider 'aios'; the daemon writes it at its first sync "
        "(or its next, if it runs), 'aiosd sync-openclaw' writes it now"]
    assert code == 0


def test_before_the_daemons_first_run_what_it_writes_itself_is_a_warning(tmp_path, fresh, capsys):
    # OpenClaw's file as OpenClaw leaves it, with an allowlist aiosd maintains: no provider, no aios/ entry yet.
    config = write_config(tmp_path, fresh.url)
    (tmp_path / "openclaw.json").write_text(json.dumps(
        {"agents": {"defaults": {"modelPolicy": {"allow": ["openai/gpt-4o"]}}}}))
    code, lines = check(capsys, "--kernel", "--test", "--config", config)
    assert code == 0, lines
    assert not lines_with(lines, "FAIL")
    assert lines_with(lines, "has no provider 'aios'")[0].startswith("warn  ")
    assert lines_with(lines, "does not allow aios/sonnet")[0].startswith("warn  ")
    assert lines[-1].startswith("ok    test chat with sonnet")
    # After the sync the daemon would do, everything is ok.
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    code, lines = check(capsys, "--kernel", "--config", config)
    assert code == 0 and not lines_with(lines, "warn") and not lines_with(lines, "FAIL")


def test_an_allowlist_that_refuses_aiosd_models_fails(tmp_path, fresh, capsys):
    # aiosd leaves this allowlist alone, so nothing will fix it but the user.
    config = write_config(tmp_path, fresh.url, openclaw=(
        f'openclaw: {{config_path: "{tmp_path / "openclaw.json"}", allowlist: none}}\n'))
    synced_openclaw(tmp_path, config, {"agents": {"defaults": {"modelPolicy": {"allow": ["openai/gpt-4o"]}}}})
    capsys.readouterr()
    code, lines = check(capsys, "--kernel", "--config", config)
    assert code == 2
    assert lines[-1] == (f"FAIL  openclaw {tmp_path / 'openclaw.json'}: agents.defaults.modelPolicy.allow does not "
                         "allow aios/sonnet: OpenClaw refuses them; add aios/* to it (aiosd leaves this allowlist "
                         "alone: openclaw.sync or openclaw.allowlist)")


def test_a_provider_pointing_elsewhere_is_a_warning_the_next_sync_fixes(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config)
    document = json.loads((tmp_path / "openclaw.json").read_text())
    document["models"]["providers"]["aios"]["baseUrl"] = "http://127.0.0.1:9999/v1"
    (tmp_path / "openclaw.json").write_text(json.dumps(document))
    capsys.readouterr()
    code, lines = check(capsys, "--kernel", "--config", config)
    assert code == 0
    assert (f"warn  openclaw {tmp_path / 'openclaw.json'}: provider 'aios' points at http://127.0.0.1:9999/v1, but "
            "aiosd serves http://127.0.0.1:8700/v1; the daemon rewrites it at its next sync") in lines


def test_test_sends_one_chat_through_aiosds_translation_and_prints_the_answer_and_time(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    fresh.script(Text("pong"))
    code, lines = check(capsys, "--test", "--config", config)
    assert code == 0, lines
    (answer,) = lines_with(lines, "test chat")
    assert answer.startswith("ok    test chat with sonnet (kernel model 'gpt-4o-mini'): answered in ")
    assert answer.endswith(": 'pong'")
    # The body the kernel got is the one the daemon would build for this chat.
    spec = load_config(config, env={}).models.map[0]
    request = parse_chat_request(json.dumps({"model": "sonnet", "messages": [
        {"role": "user", "content": TEST_PROMPT}]}).encode())
    assert fresh.queries == [build_kernel_call(request, spec, "openclaw").body]


def test_test_reports_the_kernels_error_and_exits_2(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    fresh.script(LLMFailure(401, "invalid api key"))
    code, lines = check(capsys, "--test", "--config", config)
    assert code == 2
    (answer,) = lines_with(lines, "test chat")
    assert answer.startswith(
        "FAIL  test chat with sonnet (kernel model 'gpt-4o-mini'): The AIOS kernel's LLM refused it")
    assert answer.endswith(")") and "(after " in answer


def test_test_gives_up_on_a_hanging_kernel_after_its_timeout(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    hang = Hang()
    fresh.script(hang)
    try:
        code, lines = check(capsys, "--test", "--timeout", "300ms", "--config", config)
    finally:
        hang.release(Text("late"))
    assert code == 2
    (answer,) = lines_with(lines, "test chat")
    assert "The AIOS kernel did not answer within 0.3s" in answer


def test_test_escapes_control_characters_in_the_answer(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    fresh.script(Text("pong\x1b[31m\nred"))
    code, lines = check(capsys, "--test", "--config", config)
    (answer,) = lines_with(lines, "test chat")
    assert answer.endswith(": 'pong\\x1b[31m\\nred'")
    assert code == 0


def test_test_of_a_model_aiosd_does_not_expose_fails(tmp_path, fresh, capsys):
    config = write_config(tmp_path, fresh.url)
    synced_openclaw(tmp_path, config)
    capsys.readouterr()
    code, lines = check(capsys, "--test", "--model", "gpt-5", "--config", config)
    assert code == 2
    assert "FAIL  test chat: aiosd does not expose a model 'gpt-5' (it exposes: sonnet)" in lines
    assert fresh.queries == []


def test_an_invalid_config_exits_1_before_any_check(tmp_path, fresh, capsys):
    path = tmp_path / "aiosd.yaml"
    path.write_text(f'kernel: {{url: "{fresh.url}", timeout: soon}}\n')
    assert main(["check", "--kernel", "--test", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "kernel.timeout: must be a duration" in err
    assert fresh.queries == []


def test_check_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert ("exit status: 0 the config is valid (and with --kernel, no check failed; warnings allowed) 1 the config "
            "is invalid (or missing) 2 the config is valid but a --kernel or --test check failed") in flat


def test_a_server_that_is_not_an_aios_kernel_is_reachable_but_said_not_to_be_one(tmp_path, capsys):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            code, lines = check(capsys, "--kernel", "--config", write_config(tmp_path, url))
        finally:
            server.shutdown()
            thread.join()
    assert code == 2
    assert lines[1] == (f"FAIL  kernel {url}: reachable, but listing its models failed: The server at kernel.url "
                        "answered HTTP 404 for /core/llms/list: it does not look like an AIOS kernel "
                        "(check kernel.url).")
