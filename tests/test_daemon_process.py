"""A real ``aiosd run`` process under a test-owned NOTIFY_SOCKET: readiness, live reload, signals, watchdog, drain."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.support.aiosd_harness import free_port
from tests.support.daemon_process import (
    close_daemon,
    daemon_config,
    start_daemon,
    swap_symlink,
    write_by_rename,
)
from tests.support.fake_kernel import FakeKernel, Hang, LLMFailure, Text


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def daemon(tmp_path, kernel, port):
    running = start_daemon(tmp_path, daemon_config(kernel.url, port), port)
    yield running
    close_daemon(running)


def chat(url: str, text: str = "hi", model: str = "sonnet", timeout: float = 20) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=timeout,
                      json={"model": model, "messages": [{"role": "user", "content": text}]})


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def error_lines(daemon) -> list[str]:
    return [line for line in daemon.process.stderr_lines() if line.startswith("<3>")]


# --- start and stop ------------------------------------------------------------------------


def test_ready_is_sent_once_the_endpoint_listens_and_sigterm_exits_0(daemon):
    ready = daemon.notify.received[-1]
    # READY=1 came only after the socket was bound: the endpoint answers at once.
    assert httpx.get(daemon.url + "/healthz", timeout=5).status_code == 200
    assert daemon.model_ids() == ["sonnet"]
    assert ready.fields["STATUS"].startswith("gen 1; 1 models")

    daemon.process.send_signal(signal.SIGTERM)
    stopping = daemon.wait_for("STOPPING", "1")
    assert "draining" in stopping["STATUS"]
    assert daemon.process.wait() == 0
    assert [n for n in daemon.notify.received if "READY" in n] == [ready]
    assert "stopped" in daemon.process.stderr_lines()[-1]


def test_sigint_stops_like_sigterm(daemon):
    daemon.process.send_signal(signal.SIGINT)
    daemon.wait_for("STOPPING", "1")
    assert daemon.process.wait() == 0


def test_on_asyncio_s_own_loop_it_serves_reloads_and_drains_and_a_loop_change_waits_for_a_restart(tmp_path, kernel,
                                                                                                   port):
    """``server.event_loop: asyncio``, the way back from uvloop: the same daemon, on Python's own loop."""
    text = daemon_config(kernel.url, port).replace("server: {", "server: {event_loop: asyncio, ")
    daemon = start_daemon(tmp_path, text, port)
    try:
        started = next(line for line in daemon.process.stderr_lines() if "listening on http://" in line)
        assert started.endswith("; event loop asyncio")
        assert chat(daemon.url).status_code == 200
        write_by_rename(daemon.config_path, text.replace("event_loop: asyncio", "event_loop: uvloop"))
        _, ready = daemon.wait_for_reload()
        assert "REFUSED" not in ready["STATUS"]
        warnings = [line for line in daemon.process.stderr_lines() if line.startswith("<4>")]
        assert any("server.event_loop changed to uvloop but needs a restart (still on asyncio)" in line
                   for line in warnings), daemon.process.stderr_text()
        assert _finished_during_the_drain(daemon, kernel).status_code == 200
    finally:
        close_daemon(daemon)


def test_an_invalid_config_at_start_exits_1_without_ready(tmp_path, kernel, port):
    from tests.support.daemon_process import AiosdProcess, NotifySocket

    config = tmp_path / "aiosd.yaml"
    config.write_text(daemon_config(kernel.url, port).replace("retry: {max_retries: 0}",
                                                              "retry: {backoff: {initial: soon}}"))
    notify = NotifySocket(tmp_path)
    process = AiosdProcess(config, notify, tmp_path)
    try:
        assert process.wait() == 1
        assert notify.collect(0.05) == []
        errors = [line for line in process.stderr_lines() if line.startswith("<3>")]
        assert any("retry.backoff.initial" in line and "soon" in line for line in errors), process.stderr_text()
    finally:
        process.close()
        notify.close()


def test_a_busy_listen_address_exits_1_with_one_clear_line_and_no_ready(tmp_path, kernel):
    from tests.support.daemon_process import AiosdProcess, NotifySocket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = tmp_path / "aiosd.yaml"
        config.write_text(daemon_config(kernel.url, port))
        notify = NotifySocket(tmp_path)
        process = AiosdProcess(config, notify, tmp_path)
        try:
            assert process.wait() == 1
            assert not [n for n in notify.collect(0.05) if "READY" in n]
            lines = process.stderr_lines()
            assert any(line.startswith("<3>") and "address already in use" in line for line in lines), lines
            assert lines[-1] == f"<2>aiosd.daemon: could not listen on 127.0.0.1:{port} (see the error above); exiting"
            assert "Traceback" not in process.stderr_text()
        finally:
            process.close()
            notify.close()


# --- live reload ---------------------------------------------------------------------------


def test_an_edit_saved_by_rename_is_applied_without_a_signal(daemon, kernel, port):
    # No wall-clock bound (the machine may be loaded): the reload is an event that follows the write.
    before = monotonic_usec()
    write_by_rename(daemon.config_path,
                    daemon_config(kernel.url, port, models={"sonnet": "gpt-4o-mini", "qwen": "qwen2.5:7b"}))
    reloading, ready = daemon.wait_for_reload()
    # RELOADING=1 and MONOTONIC_USEC travel in one datagram, with a CLOCK_MONOTONIC timestamp.
    assert set(reloading.fields) == {"RELOADING", "MONOTONIC_USEC"}
    assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
    assert ready.fields["STATUS"].startswith("gen 2; 2 models")
    assert "last reload ok" in ready["STATUS"]
    assert daemon.model_ids() == ["sonnet", "qwen"]
    answer = chat(daemon.url, "after the edit", model="qwen").json()
    assert answer["choices"][0]["message"]["content"] == "echo: after the edit"


def test_an_invalid_edit_is_refused_and_the_old_config_keeps_serving(daemon, kernel, port):
    bad = daemon_config(kernel.url, port, models={"sonnet": "gpt-4o-mini", "qwen": "qwen2.5:7b"},
                        extra='kernel_typo: 1\nlogging: {level: loud}\n')
    write_by_rename(daemon.config_path, bad)
    _, ready = daemon.wait_for_reload()
    status = ready["STATUS"]
    assert "REFUSED" in status and "2 problem(s)" in status and "serving last good config" in status
    assert "kernel_typo" in status
    assert daemon.model_ids() == ["sonnet"]
    assert chat(daemon.url).status_code == 200
    # Every problem at error priority, with file, line and key.
    errors = error_lines(daemon)
    bad_lines = bad.splitlines()
    typo_line = bad_lines.index("kernel_typo: 1") + 1
    assert any(f"{daemon.config_path}:{typo_line}:1: kernel_typo: unknown key" in line for line in errors), errors
    assert any("logging.level" in line and "'loud'" in line for line in errors), errors
    assert any("refused with 2 problem(s); still serving generation 1" in line for line in errors), errors
    assert daemon.status()["config"]["last_reload"]["ok"] is False

    # Fixing the file applies it.
    write_by_rename(daemon.config_path,
                    daemon_config(kernel.url, port, models={"sonnet": "gpt-4o-mini", "qwen": "qwen2.5:7b"}))
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" not in ready["STATUS"] and ready["STATUS"].startswith("gen 2")
    assert daemon.model_ids() == ["sonnet", "qwen"]


def test_sighup_reloads_even_when_the_file_did_not_change(daemon):
    daemon.process.send_signal(signal.SIGHUP)
    reloading, ready = daemon.wait_for_reload()
    assert "MONOTONIC_USEC" in reloading
    assert ready["STATUS"].startswith("gen 2")
    last = daemon.status()["config"]["last_reload"]
    assert (last["ok"], last["reason"]) == (True, "SIGHUP")


def test_sighup_with_an_invalid_file_refuses_it(daemon, kernel, port):
    # The watcher sees the edit first and refuses it; SIGHUP runs the same path and refuses it again.
    daemon.config_path.write_text("listen: [not, a, string]\n")
    daemon.wait_for_reload()
    daemon.process.send_signal(signal.SIGHUP)
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" in ready["STATUS"] and "listen" in ready["STATUS"]
    assert daemon.model_ids() == ["sonnet"]
    assert daemon.status()["config"]["last_reload"]["reason"] == "SIGHUP"


def test_a_burst_of_writes_is_loaded_once_after_it_settles(tmp_path, kernel, port):
    text = daemon_config(kernel.url, port, reload_debounce="400ms")
    running = start_daemon(tmp_path, text, port)
    try:
        new = text.replace("    sonnet:", '    qwen: {kernel_model: "qwen2.5:7b"}\n    sonnet:')
        cut = new.index("qwen2.5:7b")
        with open(running.config_path, "w", encoding="utf-8") as f:
            f.write(new[:cut])  # half a file: invalid YAML if it were loaded now
            f.flush()
            os.fsync(f.fileno())
            time.sleep(0.1)  # a slow writer (no event to await: the pause itself is the test)
            f.write(new[cut:])
        _, ready = running.wait_for_reload()
        assert "REFUSED" not in ready["STATUS"], ready["STATUS"]
        assert running.model_ids() == ["qwen", "sonnet"]
        later = running.notify.collect(0.6)
        assert not [n for n in later if "RELOADING" in n], later
    finally:
        close_daemon(running)


def test_rewriting_the_same_content_does_not_reload(daemon, kernel, port):
    write_by_rename(daemon.config_path, daemon.config_path.read_text())
    later = daemon.notify.collect(0.5)
    assert not [n for n in later if "RELOADING" in n]


def test_a_symlink_swap_is_picked_up(tmp_path, kernel, port):
    releases = tmp_path / "releases"
    (releases / "v1").mkdir(parents=True)
    (releases / "v2").mkdir()
    (releases / "v1" / "aiosd.yaml").write_text(daemon_config(kernel.url, port))
    (releases / "v2" / "aiosd.yaml").write_text(daemon_config(kernel.url, port, models={"qwen": "qwen2.5:7b"}))
    link = tmp_path / "aiosd.yaml"
    os.symlink(releases / "v1" / "aiosd.yaml", link)
    running = start_daemon(tmp_path, "", port)
    try:
        swap_symlink(link, releases / "v2" / "aiosd.yaml")
        running.wait_for_reload(timeout=2)
        assert running.model_ids() == ["qwen"]
        # The new target's directory is watched now: an edit there applies too.
        write_by_rename(releases / "v2" / "aiosd.yaml",
                        daemon_config(kernel.url, port, models={"qwen": "qwen2.5:7b", "mini": "gpt-4o-mini"}))
        running.wait_for_reload(timeout=2)
        assert running.model_ids() == ["qwen", "mini"]
    finally:
        close_daemon(running)


def test_deleting_the_config_is_a_refused_reload_and_recreating_it_applies(daemon, kernel, port):
    daemon.config_path.unlink()
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" in ready["STATUS"] and "no config at" in ready["STATUS"]
    assert any("is gone" in line for line in error_lines(daemon))
    assert daemon.process.poll() is None
    assert daemon.model_ids() == ["sonnet"]
    assert chat(daemon.url).status_code == 200

    write_by_rename(daemon.config_path, daemon_config(kernel.url, port, models={"qwen": "qwen2.5:7b"}))
    daemon.wait_for_applied_reload()
    assert daemon.model_ids() == ["qwen"]


def test_a_listen_change_is_logged_as_needing_a_restart(daemon, kernel, port):
    other = free_port()
    write_by_rename(daemon.config_path, daemon_config(kernel.url, other, models={"qwen": "qwen2.5:7b"}))
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" not in ready["STATUS"]
    warnings = [line for line in daemon.process.stderr_lines() if line.startswith("<4>")]
    assert any(f"listen changed to 127.0.0.1:{other} but needs a restart (still on 127.0.0.1:{port})" in line
               for line in warnings), daemon.process.stderr_text()
    # Everything else applied, on the old address.
    assert daemon.model_ids() == ["qwen"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{other}/healthz", timeout=2)


def test_a_request_in_flight_during_a_reload_finishes_on_its_old_config(daemon, kernel, port):
    # The old config retries a 429 twice; the new one never retries and names another agent.
    old = daemon_config(kernel.url, port).replace("retry: {max_retries: 0}",
                                                   'retry: {max_retries: 2, backoff: {initial: "10ms", max: "10ms"}}')
    write_by_rename(daemon.config_path, old)
    daemon.wait_for_reload()
    hang = Hang(then=LLMFailure(429))
    kernel.script(hang, Text("answered on the retry"))
    result = {}
    request = threading.Thread(target=lambda: result.setdefault("response", chat(daemon.url, "long one")))
    request.start()
    try:
        kernel.wait_for_in_flight(1)
        new = daemon_config(kernel.url, port).replace("kernel:\n", 'kernel:\n  agent_name: "renamed"\n')
        write_by_rename(daemon.config_path, new)
        _, ready = daemon.wait_for_reload()
        assert ready["STATUS"].startswith("gen 3")
    finally:
        hang.release()
        request.join(20)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "answered on the retry"
    assert [q["agent_name"] for q in kernel.queries] == ["openclaw", "openclaw"]
    # A new request runs on the new config: a new agent name, and a 429 is not retried.
    kernel.script(LLMFailure(429))
    assert chat(daemon.url, "new one").status_code == 429
    assert [q["agent_name"] for q in kernel.queries[2:]] == ["renamed"]


# --- systemd watchdog ----------------------------------------------------------------------


def test_watchdog_pings_every_half_watchdog_usec(tmp_path, kernel, port):
    running = start_daemon(tmp_path, daemon_config(kernel.url, port), port, env={"WATCHDOG_USEC": "300000"})
    try:
        # Three pings arrive (the interval itself, half of WATCHDOG_USEC, is checked on a hand-moved
        # clock in tests/service/test_watchdog_loop.py; a wall-clock bound here would flake on a busy machine).
        for _ in range(3):
            running.wait_for("WATCHDOG", "1", timeout=2)
    finally:
        close_daemon(running)


def test_no_watchdog_pings_without_watchdog_usec_or_for_another_pid(tmp_path, kernel, port):
    running = start_daemon(tmp_path, daemon_config(kernel.url, port), port,
                           env={"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    try:
        assert not [n for n in running.notify.collect(0.5) if "WATCHDOG" in n]
    finally:
        close_daemon(running)


# --- drain on stop -------------------------------------------------------------------------


def _finished_during_the_drain(daemon, kernel):
    """A request hangs at the kernel, aiosd gets SIGTERM and drains, the kernel then answers: the
    response, once aiosd has exited 0."""
    hang = Hang()
    kernel.script(hang)
    result = {}
    request = threading.Thread(target=lambda: result.setdefault("response", chat(daemon.url, "finish me")))
    request.start()
    try:
        kernel.wait_for_in_flight(1)
        daemon.process.send_signal(signal.SIGTERM)
        daemon.wait_for("STOPPING", "1")
        assert daemon.process.poll() is None  # draining, not gone
    finally:
        hang.release(Text("finished during the drain"))
        request.join(20)
    assert daemon.process.wait() == 0
    return result["response"]


def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(daemon, kernel):
    response = _finished_during_the_drain(daemon, kernel)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "finished during the drain"


def test_a_request_still_running_after_drain_timeout_is_cut_and_aiosd_exits_0(tmp_path, kernel, port):
    running = start_daemon(tmp_path, daemon_config(kernel.url, port, drain_timeout="300ms"), port)
    hang = Hang()
    kernel.script(hang)
    errors = []

    def request():
        try:
            errors.append(chat(running.url, "never answered").status_code)
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)

    thread = threading.Thread(target=request)
    thread.start()
    try:
        kernel.wait_for_in_flight(1)
        running.process.send_signal(signal.SIGTERM)
        running.wait_for("STOPPING", "1")
        assert running.process.wait(10) == 0  # the hung kernel call does not hold up the exit
        thread.join(10)
        assert errors and errors[0] != 200
        kernel.wait_for_disconnects(1)  # the kernel call was cancelled, not left behind
    finally:
        hang.release()
        thread.join(10)
        close_daemon(running)


# --- a config path that is not an ordinary config (issue 18 item 7) ----------------------------------


def test_a_fifo_swapped_in_for_the_config_is_refused_and_later_edits_and_stop_still_work(daemon, kernel, port):
    """Issue 18 item 7: a FIFO renamed over the config used to block the reload for ever: later edits
    and SIGHUP were ignored, and SIGTERM logged "stopped" without the process ever exiting."""
    fifo = daemon.config_path.with_name("fifo.tmp")
    os.mkfifo(fifo)
    os.replace(fifo, daemon.config_path)
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" in ready["STATUS"] and "FIFO" in ready["STATUS"]
    daemon.process.send_signal(signal.SIGHUP)
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" in ready["STATUS"]
    write_by_rename(daemon.config_path,
                    daemon_config(kernel.url, port, models={"sonnet": "gpt-4o-mini", "qwen": "qwen2.5:7b"}))
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" not in ready["STATUS"] and daemon.model_ids() == ["sonnet", "qwen"]
    assert daemon.stop() == 0


def test_an_alias_bomb_edit_is_refused_at_once_and_stop_still_works(daemon, kernel, port):
    """Issue 18 item 7: a 10^9 alias bomb used to pin a core for good, blocking reloads and stop."""
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    write_by_rename(daemon.config_path, "\n".join([*levels, "listen: *a8"]) + "\n")
    _, ready = daemon.wait_for_reload()
    assert "REFUSED" in ready["STATUS"] and "aliases" in ready["STATUS"]
    assert chat(daemon.url).status_code == 200
    assert daemon.stop() == 0
