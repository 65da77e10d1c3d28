"""Helpers for the robustness suite: leak counters (tasks, TCP connections), memory and per-loop-turn
meters, OpenAI error checks, aiosd in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.aiosd_harness import RunningAiosd, serve_aiosd

# /proc/net/tcp state codes (include/net/tcp_states.h).
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str


def own_tcp_sockets() -> list[TcpSocket]:
    """Every TCP socket this process holds open (fds resolved through /proc/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] in inodes:
                        sockets.append(TcpSocket(int(fields[1].rsplit(":", 1)[1], 16),
                                                 int(fields[2].rsplit(":", 1)[1], 16), fields[3]))
        except FileNotFoundError:
            continue
    return sockets


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakMemory:
    """This process's peak resident memory growth while the block runs, in MiB (``growth``).

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) and reads ``VmHWM`` after;
    where that is not allowed, a thread samples ``VmRSS`` every millisecond instead."""

    def __init__(self) -> None:
        self.growth = 0.0
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        self._before = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled_peak = max(self._sampled_peak, _status_kib("VmRSS"))

    def __exit__(self, *exc_info) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = self._sampled_peak
        else:
            peak = _status_kib("VmHWM")
        self.growth = max(0, peak - self._before) / 1024


class LoopTurnMeter:
    """How much of a kernel answer the client took in within one turn of the event loop.

    A ticker task runs once per loop turn (``turns``); ``count`` is fed every piece of answer the
    HTTP library hands over (see ``counting_answer_bytes``), and ``most_in_one_turn`` is the largest
    number of bytes taken in between two ticks. A reader that yields to the loop takes in one
    socket read per turn; one that inflates or parses a whole answer at once takes it all in one
    turn, keeping every other request waiting. Bytes, not seconds: the machine's speed does not
    change it."""

    def __init__(self) -> None:
        self.turns = 0
        self.taken = 0
        self.most_in_one_turn = 0
        self._taken_at_last_turn = 0
        self._task: asyncio.Task | None = None

    def count(self, piece: bytes) -> None:
        self.taken += len(piece)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0)  # once per loop turn
            self._note()

    def _note(self) -> None:
        self.turns += 1
        self.most_in_one_turn = max(self.most_in_one_turn, self.taken - self._taken_at_last_turn)
        self._taken_at_last_turn = self.taken

    async def __aenter__(self) -> LoopTurnMeter:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._note()  # what was taken in since the last tick counts too
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.contextmanager
def counting_answer_bytes(meter: LoopTurnMeter) -> Iterator[None]:
    """Feed ``meter`` every piece of answer body aiohttp's and httpx's readers hand to their caller
    (aiohttp ``StreamReader.readany``, which ``iter_any`` and ``read`` use; httpx
    ``Response.aiter_bytes``, which ``aread`` uses) and httptools to the lean wire (``on_body``)."""
    import aiohttp
    import httpx

    from aiosd.kernel.lean_wire import _Connection

    on_body = _Connection.on_body

    def counted_on_body(self: _Connection, body: bytes) -> None:
        meter.count(body)
        on_body(self, body)

    readany = aiohttp.StreamReader.readany
    aiter_bytes = httpx.Response.aiter_bytes

    async def counted_readany(self: aiohttp.StreamReader) -> bytes:
        piece = await readany(self)
        meter.count(piece)
        return piece

    async def counted_aiter_bytes(self: httpx.Response, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        async for piece in aiter_bytes(self, chunk_size):
            meter.count(piece)
            yield piece

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aiohttp.StreamReader, "readany", counted_readany)
        patch.setattr(httpx.Response, "aiter_bytes", counted_aiter_bytes)
        patch.setattr(_Connection, "on_body", counted_on_body)
        yield


def connections_to(port: int) -> int:
    """Open client-side connections of this process to ``port`` (any state but LISTEN)."""
    return sum(1 for s in own_tcp_sockets() if s.remote_port == port and s.state != TCP_LISTEN)


def connections_from_clients_to(port: int, state: str | None = None) -> int:
    """Server-side connections this process holds on its listening ``port`` (only those in ``state``, if given:
    TCP_ESTABLISHED leaves out the ones aiosd answered and half-closed)."""
    return sum(1 for s in own_tcp_sockets()
               if s.local_port == port and s.state != TCP_LISTEN and (state is None or s.state == state))


async def eventually(predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition") -> None:
    """Wait (yielding to the loop) until ``predicate()`` holds; for state no event announces."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.005)


def other_tasks(baseline: set[asyncio.Task]) -> set[asyncio.Task]:
    """Tasks alive now that were not in ``baseline`` (the calling task excluded)."""
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t not in baseline and t is not current and not t.done()}


def assert_openai_error(response, status: int | tuple[int, ...]) -> dict:
    """The response is an OpenAI error body with the given status; returns its ``error`` object."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["code"], str) and error["code"]
    return error


def assert_idle(aiosd: RunningAiosd) -> None:
    """aiosd holds no kernel slot and nobody waits in its queue."""
    admission = aiosd.runtime.scheduler
    assert (admission.in_flight, admission.queued) == (0, 0)


class AiosdInThread:
    """aiosd served from its own event loop in a background thread, for synchronous callers
    (hypothesis' and schemathesis' test functions cannot share the server's loop)."""

    def __init__(self, config) -> None:
        self.config = config
        self.aiosd: RunningAiosd | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aiosd-under-test", daemon=True)

    def __enter__(self) -> RunningAiosd:
        self._thread.start()
        if not self._started.wait(10) or self.aiosd is None:
            raise RuntimeError("aiosd did not start in its thread") from self._error
        return self.aiosd

    def __exit__(self, *exc_info) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[], object]):
        """Run ``fn`` on aiosd's loop and return its result (to read its state safely)."""

        async def run():
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def _run(self) -> None:
        async def main():
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                async with serve_aiosd(self.config) as aiosd:
                    self.aiosd = aiosd
                    self._started.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._started.set()

        with contextlib.suppress(BaseException):
            asyncio.run(main())
