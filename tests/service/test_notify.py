"""The systemd notifier: messages arrive in order, and a systemd that stops reading never blocks the caller."""

from __future__ import annotations

import os
import socket

from aiosd.service.notify import SystemdNotifier


def bound_socket(tmp_path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    return sock, path


def test_messages_arrive_in_order_and_close_delivers_the_last_one(tmp_path, monkeypatch):
    sock, path = bound_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # sdnotify reads it from the process environment
    notifier = SystemdNotifier()
    notifier.ready("gen 1")
    notifier.reloading()
    notifier.stopping("bye")
    notifier.close()
    received = [sock.recv(4096).decode() for _ in range(3)]
    assert received[0] == "READY=1\nSTATUS=gen 1"
    assert received[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert received[2] == "STOPPING=1\nSTATUS=bye"


def test_a_full_notify_socket_does_not_block_the_event_loops_thread(tmp_path, monkeypatch):
    sock, path = bound_socket(tmp_path)  # nobody reads: the kernel's datagram queue fills up
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = SystemdNotifier()
    for n in range(500):
        notifier.status(f"status {n}")
        notifier.watchdog()
    # The calls all returned while the socket is full: what systemd has not read waits in the
    # sender thread's outbox (bounded), not in the caller.
    assert 0 < notifier._outbox.qsize() <= 64 + 1
    # Once systemd reads again, the backlog drains in order.
    first = sock.recv(4096).decode()
    assert first == "STATUS=status 0"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    notifier = SystemdNotifier({})
    notifier.ready("x")
    notifier.watchdog()
    notifier.close()
    assert notifier.watchdog_interval is None


def test_the_watchdog_pings_at_half_the_timeout_systemd_asked_for_and_only_for_this_process():
    assert SystemdNotifier({"WATCHDOG_USEC": "300000"}).watchdog_interval == 0.15
    assert SystemdNotifier({"WATCHDOG_USEC": "300000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 0.15
    assert SystemdNotifier({"WATCHDOG_USEC": "300000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert SystemdNotifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert SystemdNotifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
