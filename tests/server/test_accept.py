"""aiosd's own accept loop on both event loops: out of files it rests and says so once, clients wait and are served."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from aiosd.server.accept import accept_connections, listening_sockets
from tests.support.robust import TCP_ESTABLISHED, own_tcp_sockets

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_on(loop: str, test: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(test())


class Hello(asyncio.Protocol):
    """Says hello and closes: a connection that was served."""

    def connection_made(self, transport):
        transport.write(b"hello\n")
        transport.close()


class FailingListener(socket.socket):
    """A real listening socket whose accept() fails as out of files (or as ``error``) ``failures`` times."""

    __slots__ = ()  # a socket's layout, so that a listening socket can take this class
    failures = 0
    error = errno.EMFILE
    calls = 0
    failed: asyncio.Event

    def accept(self):
        type(self).calls += 1
        if type(self).failures > 0:
            type(self).failures -= 1
            self.failed.set()
            raise OSError(self.error, "Too many open files" if self.error == errno.EMFILE else "Software caused "
                          "connection abort")
        return super().accept()


def failing_listener(failures: int, error: int = errno.EMFILE) -> socket.socket:
    listener = listening_sockets("127.0.0.1", 0)[0]
    attributes = {"__slots__": (), "failures": failures, "error": error, "calls": 0, "failed": asyncio.Event()}
    listener.__class__ = type("Failing", (FailingListener,), attributes)
    return listener


def accept_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "accept" in r.getMessage()]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_out_of_files_the_socket_rests_instead_of_spinning_says_so_once_and_keeps_the_clients(loop, caplog):
    caplog.set_level(logging.INFO)

    async def test() -> None:
        listener = failing_listener(failures=10**6)
        port = listener.getsockname()[1]
        (acceptor,) = accept_connections([listener], Hello, backlog=16)
        acceptor.retry = 3600.0  # it must not come round during the test
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await asyncio.wait_for(type(listener).failed.wait(), 10)
        for _ in range(200):  # loop turns: a socket still watched would be tried on each
            await asyncio.sleep(0)
        assert type(listener).calls == 1
        # The clients wait in the backlog, connected (libuv on its own would have accepted and dropped them).
        assert [s.state for s in own_tcp_sockets() if s.remote_port == port] == [TCP_ESTABLISHED] * 5
        assert not any(reader.at_eof() for reader, _ in clients)
        acceptor.close()
        for _, writer in clients:
            writer.close()

    run_on(loop, test)
    lines = accept_lines(caplog)
    assert len(lines) == 1, lines
    assert "cannot accept new connections: Too many open files" in lines[0]
    assert "accept is retried every second" in lines[0]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_once_files_are_free_the_waiting_clients_are_served(loop, caplog):
    caplog.set_level(logging.INFO)

    async def test() -> None:
        listener = failing_listener(failures=2)
        (acceptor,) = accept_connections([listener], Hello, backlog=16)
        acceptor.retry = 0.01
        port = listener.getsockname()[1]
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        answers = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in clients)), 10)
        assert answers == [b"hello\n"] * 5
        assert type(listener).failures == 0
        acceptor.close()
        for _, writer in clients:
            writer.close()

    run_on(loop, test)
    lines = accept_lines(caplog)
    assert len(lines) == 1 and "Too many open files" in lines[0], lines  # the second failure is counted


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_connection_lost_on_its_way_in_is_skipped_without_resting(loop, caplog):
    caplog.set_level(logging.INFO)

    async def test() -> None:
        listener = failing_listener(failures=1, error=errno.ECONNABORTED)
        (acceptor,) = accept_connections([listener], Hello, backlog=16)
        acceptor.retry = 3600.0
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        assert await asyncio.wait_for(reader.read(), 10) == b"hello\n"
        acceptor.close()
        writer.close()

    run_on(loop, test)
    assert accept_lines(caplog) == []


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_closed_it_refuses_new_clients_even_while_resting(loop):
    async def test() -> None:
        for failures in (0, 10**6):
            listener = failing_listener(failures=failures)
            (acceptor,) = accept_connections([listener], Hello, backlog=16)
            acceptor.retry = 3600.0
            port = listener.getsockname()[1]
            if failures:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                await asyncio.wait_for(type(listener).failed.wait(), 10)
                writer.close()
            acceptor.close()
            assert not acceptor.is_serving() and acceptor.sockets == ()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            await acceptor.wait_closed()

    run_on(loop, test)
