"""The watchdog pings come from the event loop itself: a blocked loop stops them, so systemd restarts a hung aiosd."""

from __future__ import annotations

import asyncio
import threading
import time

from aiosd.daemon import Daemon
from tests.support.aiosd_harness import config_for
from tests.support.daemon_process import NotifySocket
from tests.support.fake_kernel import FakeKernel


class Recorder:
    """Reads the notify socket in a thread, keeping each datagram with the time it arrived."""

    def __init__(self, notify: NotifySocket) -> None:
        self.notify = notify
        self.arrivals: list[tuple[float, object]] = []
        self.changed = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped:
            note = self.notify.receive(0.05)
            if note is not None:
                with self.changed:
                    self.arrivals.append((time.monotonic(), note))
                    self.changed.notify_all()

    def wait_for(self, key: str, *, after: float = 0.0, timeout: float = 5.0) -> float:
        with self.changed:
            ok = self.changed.wait_for(
                lambda: any(t > after and key in n for t, n in self.arrivals), timeout=timeout)
        assert ok, f"no {key} after {after}"
        return min(t for t, n in self.arrivals if t > after and key in n)

    def pings_between(self, start: float, end: float) -> int:
        return sum(1 for t, n in self.arrivals if start < t < end and "WATCHDOG" in n)


async def test_a_blocked_event_loop_sends_no_watchdog_pings(tmp_path, monkeypatch):
    notify = NotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    recorder = Recorder(notify)
    with FakeKernel() as kernel:
        config = config_for(tmp_path, kernel.url)
        daemon = Daemon(config.source_path, config)
        running = asyncio.create_task(daemon.run())
        try:
            ready = await asyncio.to_thread(recorder.wait_for, "READY")
            await asyncio.to_thread(recorder.wait_for, "WATCHDOG", after=ready)

            blocked_at = time.monotonic()
            time.sleep(0.5)  # the point of the test: a handler that blocks the loop
            unblocked_at = time.monotonic()
            resumed = await asyncio.to_thread(recorder.wait_for, "WATCHDOG", after=unblocked_at)
        finally:
            daemon._request_stop("test")
            assert await running == 0
            recorder.stopped = True
            recorder.thread.join()
            notify.close()
    # A ping already queued when the loop blocked may still arrive just after; none for the rest.
    assert recorder.pings_between(blocked_at + 0.06, unblocked_at) == 0
    assert resumed - unblocked_at < 1.0
    assert recorder.pings_between(ready, blocked_at) >= 1
