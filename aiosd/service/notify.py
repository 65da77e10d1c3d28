"""Talking to systemd over $NOTIFY_SOCKET: readiness, status, reload, stop and watchdog messages."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Mapping

import sdnotify

# Messages waiting beyond this many mean systemd is not reading; only state changes are kept then.
_BACKLOG_LIMIT = 64
_CLOSE = object()


class SystemdNotifier:
    """A thin wrapper over sdnotify with one method per message aiosd sends.

    Without $NOTIFY_SOCKET (run from a terminal) every method does nothing. Messages are sent,
    in order, by one sender thread: sdnotify's socket blocks once systemd's queue is full, and
    that must never freeze the event loop that serves requests.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_interval = _watchdog_interval(environ)
        self._outbox: queue.Queue[object] = queue.Queue()
        self._sender: threading.Thread | None = None

    def _send(self, message: str) -> None:
        if self._notifier is None:
            return
        if self._outbox.qsize() > _BACKLOG_LIMIT and message.startswith(("STATUS=", "WATCHDOG=")):
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="sd-notify", daemon=True)
            self._sender.start()
        self._outbox.put(message)

    def _send_loop(self) -> None:
        notifier = self._notifier
        assert notifier is not None  # the sender starts only with a socket to send to
        while (message := self._outbox.get()) is not _CLOSE:
            notifier.notify(message)

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (STOPPING=1 above all) before the process exits."""
        if self._sender is not None:
            self._outbox.put(_CLOSE)
            self._sender.join(timeout)
            self._sender = None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={_one_line(status)}")

    def reloading(self) -> None:
        # systemd (Type=notify-reload semantics) wants both in one datagram.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={_one_line(status)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd asked for, or None when it asked for none (or not of us)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


def _one_line(text: str) -> str:
    # sdnotify encodes latin-1 and a newline would end the STATUS field.
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")
