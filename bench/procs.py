"""The processes under test: the fake kernel and aiosd, each started as its own OS process.

Also what the bench reads of them: systemd notifications and resident memory.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` from /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class ListeningProcess:
    """A helper process whose first stdout line says ``... listening on http://HOST:PORT``."""

    name = "process"

    def __init__(self, workdir: Path, command: list[str], log_name: str) -> None:
        self.log_path = workdir / log_name
        self.command = command
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> None:
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode() if ready else ""
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"the {self.name} did not start: {self.log_path.read_text(errors='replace')[-2000:]}")
        self.url = line.rsplit("listening on ", 1)[1].strip()

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        stop_process(self.process)


class FakeKernelProcess(ListeningProcess):
    """``tests/support/fake_kernel.py`` with no batching and no LLM latency, in its own process."""

    name = "fake kernel"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, [sys.executable, str(REPO / "tests" / "support" / "fake_kernel.py"),
                                   "--port", "0", "--batch-interval", "0"], "fake-kernel.log")


class RelayProcess(ListeningProcess):
    """``bench/relay.py``, the bare aiohttp relay aiosd is compared with, in its own process."""

    name = "bare relay"

    def __init__(self, workdir: Path, kernel_url: str, *, kernel_model: str, backend: str, agent: str,
                 python: str = sys.executable) -> None:
        super().__init__(workdir, [python, str(REPO / "bench" / "relay.py"), "--kernel", kernel_url,
                                   "--kernel-model", kernel_model, "--backend", backend, "--agent", agent],
                         "relay.log")


class NotifySocket:
    """A NOTIFY_SOCKET the bench owns: aiosd's READY=1 / RELOADING=1 datagrams with their arrival times."""

    def __init__(self, workdir: Path) -> None:
        self.path = str(workdir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []  # (perf_counter at arrival, fields)
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, name="notify-socket", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            arrived = time.perf_counter()
            fields = dict(line.split("=", 1) for line in data.decode("latin-1").splitlines() if "=" in line)
            with self._changed:
                self.messages.append((arrived, fields))
                self._changed.notify_all()

    def wait_for(self, key: str, *, after: float, timeout: float) -> float:
        """Arrival time of the first datagram with ``key=1`` that arrived after ``after``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, fields in self.messages:
                    if arrived > after and fields.get(key) == "1":
                        return arrived
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key}=1 on NOTIFY_SOCKET within {timeout:g}s")
                self._changed.wait(left)

    def close(self) -> None:
        self._closed = True
        self.sock.close()


class AiosdProcess:
    """``python -m aiosd run --config PATH`` with NOTIFY_SOCKET pointing at the bench."""

    def __init__(self, config_path: Path, notify: NotifySocket, workdir: Path, *, pythonpath: str = "",
                 python: str = sys.executable) -> None:
        self.config_path = config_path
        self.pythonpath = pythonpath
        self.python = python
        self.notify = notify
        # Not beside the config: aiosd watches the config's directory (inotify), so a log written there
        # wakes its watcher thread once per line. A daemon logs to the journal, not to /etc.
        self.log_path = workdir / "logs" / "aiosd.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_at = 0.0

    def start(self, timeout: float = 30.0) -> float:
        """Start it and wait for READY=1; returns seconds from spawning to READY=1."""
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        env.pop("WATCHDOG_USEC", None)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.pythonpath, env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                [self.python, "-m", "aiosd", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.config_path.parent,
            )
        try:
            self.ready_at = self.notify.wait_for("READY", after=self.started_at, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"aiosd did not send READY=1: {self.log_tail()}") from None
        return self.ready_at - self.started_at

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (None if it had to be killed)."""
        return stop_process(self.process)


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> int | None:
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            if self._stop.wait(self.interval):
                return
