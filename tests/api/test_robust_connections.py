"""Anyone who can reach the port: oversized and slow request heads, idle floods, stalled bodies, no file descriptors."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import time

import httpx
import pytest

from tests.support.aiosd_harness import config_for, free_port, serve_aiosd
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon
from tests.support.fake_kernel import FakeKernel, Hang, Text
from tests.support.raw_http import (
    assert_json_error,
    connection_guard,
    parse_response,
    read_until_closed,
    request_head,
)
from tests.support.robust import TCP_ESTABLISHED, connections_from_clients_to, eventually

CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
MB = 1024 * 1024


@pytest.fixture
def kernel():
    with FakeKernel() as fake:
        yield fake


# --- item 2: the request head is capped before anything reads it ------------------------------


async def test_a_header_block_over_the_cap_is_431_and_the_connection_closes(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, "server: {max_header_bytes: 16384}")
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        writer.write(request_head(extra=b"x-big: " + b"a" * 40_000))  # no blank line: the head never ends
        raw = await read_until_closed(reader)
        writer.close()
        error = assert_json_error(raw, 431, "request_header_fields_too_large")
        assert "16384" in error["message"] and "server.max_header_bytes" in error["message"]
        # A head just under the cap is served.
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            assert (await client.get("/v1/models", headers={"x-big": "a" * 15_000})).status_code == 200


async def test_too_many_header_fields_is_431(tmp_path, kernel):
    async with serve_aiosd(config_for(tmp_path, kernel.url)) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        fields = b"".join(b"x-h%d: 1\r\n" % i for i in range(150))
        writer.write(request_head(extra=fields + b"\r\n"))
        raw = await read_until_closed(reader)
        writer.close()
        assert "server.max_headers" in assert_json_error(raw, 431, "request_header_fields_too_large")["message"]
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            many = {f"x-h{i}": "1" for i in range(80)}
            assert (await client.get("/v1/models", headers=many)).status_code == 200


async def test_a_chunked_body_trailer_is_capped_too(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, "server: {max_header_bytes: 16384}")
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nx-trailer: ")
        sent = 0
        with pytest.raises(ConnectionError):  # refused long before the 8 MB trailer is through
            while sent < 8 * MB:
                writer.write(b"a" * 4096)
                await writer.drain()
                sent += 4096
        try:
            raw = await read_until_closed(reader)
        except (ConnectionResetError, BrokenPipeError):
            raw = b""  # the close found our unread flood in its buffer: the 431 may be lost to the reset
        writer.close()
        if raw:
            assert_json_error(raw, 431, "request_header_fields_too_large")
    assert kernel.queries == []


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / __import__("os").sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_100mb_unterminated_header_is_cut_off_after_the_cap_in_bounded_cpu_and_memory(tmp_path, kernel):
    port = free_port()
    daemon = start_daemon(tmp_path, daemon_config(kernel.url, port), port)
    try:
        pid = daemon.process.pid
        cpu, rss = _cpu_seconds(pid), _rss_mb(pid)
        sent = 0
        chunk = b"a" * 65536
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request_head(extra=b"x-flood: "))
            try:
                while sent < 100 * MB:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            response = b""
            try:
                while data := sock.recv(65536):
                    response += data
            except ConnectionResetError:
                pass  # the server closed with our unread flood still in its buffer
        cpu_used, rss_growth = _cpu_seconds(pid) - cpu, _rss_mb(pid) - rss
        # aiosd stopped reading at the cap; what got through is what the socket buffers held.
        assert sent < 16 * MB, f"aiosd read {sent / MB:.1f} MB of one header"
        assert cpu_used < 1.0, f"{cpu_used:.2f}s of CPU for one oversized header"
        assert rss_growth < 20, f"RSS grew {rss_growth:.1f} MB"
        if response:  # usually delivered; a reset may beat it
            assert parse_response(response)[0] == 431
        assert httpx.get(daemon.url + "/healthz", timeout=5).status_code == 200
    finally:
        close_daemon(daemon)


# --- item 3: slow heads, stalled bodies, idle connections and the connection cap ----------------


async def test_a_slowloris_head_is_closed_after_header_timeout_even_while_bytes_trickle(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, 'server: {header_timeout: "500ms"}')
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        writer.write(request_head())

        async def trickle():
            for i in range(100):  # one header byte every 50 ms: never idle, never done
                writer.write(b"x-slow-%d: 1\r\n" % i)
                await asyncio.sleep(0.05)

        trickling = asyncio.create_task(trickle())
        started = time.monotonic()
        raw = await read_until_closed(reader, timeout=4)
        elapsed = time.monotonic() - started
        # Closed while the bytes still trickled (the trickle lasts 5 s), and not before the timeout.
        still_trickling = not trickling.done()
        trickling.cancel()
        writer.close()
        assert_json_error(raw, 408, "request_timeout")
        assert still_trickling
        assert elapsed > 0.4, elapsed


async def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, 'server: {header_timeout: "300ms"}')
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        raw = await read_until_closed(reader, timeout=4)
        writer.close()
        assert parse_response(raw)[0] == 408


async def test_a_stalled_body_is_closed_after_body_timeout(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, 'server: {body_timeout: "300ms"}')
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"model\": ")
        raw = await read_until_closed(reader, timeout=4)
        writer.close()
        assert_json_error(raw, 408, "request_timeout")
    assert kernel.queries == []


async def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_timeout(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, 'server: {keep_alive_timeout: "300ms"}')
    async with serve_aiosd(config) as aiosd:
        reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
        writer.write(request_head(extra=b"\r\n"))
        raw = await read_until_closed(reader, timeout=4)  # the answer, then the close once idle
        writer.close()
        assert parse_response(raw)[0] == 200


async def test_more_idle_sockets_than_the_cap_cannot_lock_out_a_real_request(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, "server: {max_connections: 20}")
    async with serve_aiosd(config) as aiosd:
        port = aiosd.runtime.bound_port
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(60)]
        for _, writer in idle[::2]:
            writer.write(b"GET /v1/models HTTP/1.1\r\n")  # half a head
        # Held connections never exceed the cap: past it, new ones are answered 503 and closed.
        def held() -> int:
            return connections_from_clients_to(port, TCP_ESTABLISHED)

        await eventually(lambda: held() <= 20, what="at most 20 connections held")
        # Once the held ones have sent nothing for a while (the guard's grace; here, time passed at once),
        # a real request makes room: the one whose request stalled longest is answered 503 and closed.
        connection_guard(aiosd).stall_grace = 0.0
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200, response.text
        assert held() <= 20
        for _, writer in idle:
            writer.close()


async def test_with_a_request_in_flight_on_every_connection_a_new_one_gets_503_then_is_served(tmp_path, kernel):
    config = config_for(tmp_path, kernel.url, "server: {max_connections: 2}")
    hang = Hang(then=Text("late"))
    kernel.script(hang, hang)
    async with serve_aiosd(config) as aiosd:
        async with httpx.AsyncClient(base_url=aiosd.url, timeout=20) as first, \
                httpx.AsyncClient(base_url=aiosd.url, timeout=20) as second:
            busy = [asyncio.create_task(c.post("/v1/chat/completions", json=CHAT)) for c in (first, second)]
            await kernel.wait_for_in_flight_async(2)
            reader, writer = await asyncio.open_connection("127.0.0.1", aiosd.runtime.bound_port)
            raw = await read_until_closed(reader)
            writer.close()
            error = assert_json_error(raw, 503, "too_many_connections")
            assert "server.max_connections" in error["message"]
            assert parse_response(raw)[1]["retry-after"] == "1"
            hang.release()
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200]
        async with httpx.AsyncClient(base_url=aiosd.url) as client:
            assert (await client.get("/v1/models")).status_code == 200


def test_out_of_file_descriptors_logs_a_bounded_number_of_lines(tmp_path, kernel):
    port = free_port()
    daemon = start_daemon(tmp_path, daemon_config(kernel.url, port), port)
    sockets = []
    try:
        pid = daemon.process.pid
        # A reload first: its worker thread and imports exist before the files run out.
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_reload()
        in_use = len(__import__("os").listdir(f"/proc/{pid}/fd"))
        # What an operator's prlimit (or a leak elsewhere) does: no file descriptors left to accept with.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 10, in_use + 10))
        for _ in range(40):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        deadline = time.monotonic() + 3
        lines: list[str] = []
        while time.monotonic() < deadline:  # let asyncio retry accept() a few times (once a second)
            daemon.notify.receive(0.2)
            lines = [line for line in daemon.process.stderr_lines() if "accept" in line.replace("accepting", "")]
        for sock in sockets:
            sock.close()
        sockets.clear()
        text = daemon.process.stderr_text()
        assert lines, text[-2000:]
        assert "cannot accept new connections" in lines[0] and "Too many open files" in lines[0]
        assert len(lines) <= 2, lines  # one line, and at most one count line per interval
        assert "Traceback" not in text, text[-3000:]
        assert len(text.splitlines()) < 50, text[-3000:]
        # Once files are free again, aiosd accepts again (asyncio retries accept() every second).
        # The open-file limit left room for one connection (server.max_connections fitted to it): one of
        # the sockets closed above, accepted late, may hold it for a moment and get this one a 503.
        deadline = time.monotonic() + 10
        while (status := httpx.get(daemon.url + "/healthz", timeout=10).status_code) == 503:
            assert time.monotonic() < deadline, "still 503 after 10 s"
            time.sleep(0.1)
        assert status == 200
    finally:
        for sock in sockets:
            sock.close()
        close_daemon(daemon)
