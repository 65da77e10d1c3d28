"""A response's head and the first piece of its body leave in one send (``connections._OneSendPerAnswer``).

Through a real server, pipelined answers in order: tests/server/test_connection_bounds.py."""

from __future__ import annotations

import asyncio

from aiosd.server.connections import _OneSendPerAnswer


class RecordingTransport:
    """What the socket would be sent, one entry per send."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        self.sends.append(b"".join(pieces))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def _one_turn() -> None:
    await asyncio.sleep(0)


async def test_a_head_and_its_body_written_in_one_loop_turn_are_one_send():
    transport = RecordingTransport()
    writer = _OneSendPerAnswer(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    writer.write(b"{}")
    await _one_turn()
    assert transport.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_a_head_whose_body_comes_later_is_sent_at_the_end_of_its_loop_turn():
    """A streamed answer's head must not wait for its first event (the client would see nothing)."""
    transport = RecordingTransport()
    writer = _OneSendPerAnswer(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert transport.sends == []
    await _one_turn()
    assert transport.sends == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    writer.write(b"5\r\nhello\r\n")
    writer.write(b"0\r\n\r\n")
    assert transport.sends[1:] == [b"5\r\nhello\r\n", b"0\r\n\r\n"]  # only the head is ever held


async def test_closing_sends_a_held_head_first():
    transport = RecordingTransport()
    writer = _OneSendPerAnswer(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    writer.close()
    assert transport.sends == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    assert transport.closed
    await _one_turn()
    assert len(transport.sends) == 1  # the end-of-turn flush finds nothing more to send

