"""Test helpers for a real ``python -m aiosd run`` process: a NOTIFY_SOCKET the test owns, the process,
and file swaps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Notification:
    """One sd_notify datagram: its raw text and its KEY=VALUE fields."""

    raw: str
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> Notification:
        raw = data.decode("latin-1")
        fields = {}
        for line in raw.split("\n"):
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value
        return cls(raw, fields)

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def __getitem__(self, key: str) -> str:
        return self.fields[key]


class NotifySocket:
    """The systemd side of sd_notify: an AF_UNIX datagram socket the test binds and reads.

    Every datagram received is kept in ``received``, in order; ``wait_for`` reads until one
    matches, with a socket timeout (no sleeps).
    """

    def __init__(self, directory: Path) -> None:
        path = Path(directory) / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if len(os.fsencode(path)) < 100:
            self.sock.bind(str(path))
            self.address = str(path)
        else:  # sun_path holds 108 bytes; a deep tmp dir falls back to the abstract namespace
            name = f"aiosd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        self.received: list[Notification] = []

    def close(self) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> Notification | None:
        """The next datagram, or None when none came within ``timeout`` seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        note = Notification.parse(data)
        self.received.append(note)
        return note

    def wait_for(self, key: str, value: str | None = None, *, timeout: float = 10.0,
                 process: AiosdProcess | None = None) -> Notification:
        """Read datagrams until one carries ``key`` (with ``value``, if given); AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = "\n  ".join(n.raw.replace("\n", " | ") for n in self.received[-10:])
                logs = f"\naiosd's stderr:\n{process.stderr_text()}" if process else ""
                wanted = f"{key}{'=' + value if value else ''}"
                raise AssertionError(f"no {wanted} within {timeout}s; last seen:\n  {seen}{logs}")
            note = self.receive(min(left, 0.5) if process else left)
            if note is None:
                if process is not None and process.poll() is not None:
                    raise AssertionError(f"aiosd exited ({process.returncode}) before {key}:\n{process.stderr_text()}")
                continue
            if key in note and (value is None or note[key] == value):
                return note

    def collect(self, seconds: float) -> list[Notification]:
        """Every datagram that arrives within ``seconds`` (to show something did NOT happen)."""
        deadline = time.monotonic() + seconds
        notes = []
        while (left := deadline - time.monotonic()) > 0:
            note = self.receive(left)
            if note is not None:
                notes.append(note)
        return notes


def write_by_rename(path: Path, text: str) -> None:
    """Save ``text`` the way editors and deploy tools do: a temp file in the same directory, then rename."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def swap_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically, as ``ln -sfn`` + rename (and Kubernetes) do."""
    link = Path(link)
    temp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(target, temp)
    os.replace(temp, link)


def daemon_config(kernel_url: str, port: int, *, models: dict[str, str] | None = None, extra: str = "",
                  drain_timeout: str = "5s", reload_debounce: str = "50ms") -> str:
    """YAML for a daemon under test: fast timings, no OpenClaw sync, the given ``models.map`` (id -> kernel model)."""
    models = {"sonnet": "gpt-4o-mini"} if models is None else models
    lines = [f'    {model_id}: {{kernel_model: "{kernel_model}"}}' for model_id, kernel_model in models.items()]
    model_map = ("\n" + "\n".join(lines)) if lines else " {}"
    return f"""\
listen: "127.0.0.1:{port}"
kernel:
  url: "{kernel_url}"
  timeout: "10s"
  connect_timeout: "1s"
retry: {{max_retries: 0}}
models:
  discover: false
  map:{model_map}
openclaw: {{sync: false}}
server: {{drain_timeout: "{drain_timeout}", reload_debounce: "{reload_debounce}"}}
{extra}"""


class AiosdProcess:
    """``python -m aiosd run --config PATH`` as a child process, its stderr in a file.

    With ``journal=True`` the child gets $JOURNAL_STREAM naming that file, so its lines carry
    syslog priorities (``<3>`` for errors) as they would under systemd.
    """

    def __init__(self, config_path: Path, notify: NotifySocket | None, tmp_path: Path, *,
                 env: dict[str, str] | None = None, journal: bool = True, args: list[str] | None = None) -> None:
        self.config_path = Path(config_path)
        self.stdout_path = Path(tmp_path) / "aiosd.stdout"
        self.stderr_path = Path(tmp_path) / "aiosd.stderr"
        home = Path(tmp_path) / "home"
        home.mkdir(exist_ok=True)
        child_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # never the real home directory
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
            "LANG": "C.UTF-8",
        }
        if notify is not None:
            child_env["NOTIFY_SOCKET"] = notify.address
        # Open for the child's whole life, closed when it is reaped: no with block fits.
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        if journal:
            st = os.fstat(self._stderr.fileno())
            child_env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        child_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aiosd", *(args or ["run", "--config", str(self.config_path)])],
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, env=child_env, cwd=tmp_path,
        )
        self.pid = self.process.pid

    # --- the process --------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"aiosd did not exit within {timeout}s:\n{self.stderr_text()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill()
        self._stdout.close()
        self._stderr.close()

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stderr_lines(self) -> list[str]:
        return self.stderr_text().splitlines()


@dataclass
class RunningDaemon:
    """A started daemon: its process, its notify socket, and its HTTP address."""

    process: AiosdProcess
    notify: NotifySocket
    port: int
    config_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> Notification:
        return self.notify.wait_for(key, value, timeout=timeout, process=self.process)

    def model_ids(self) -> list[str]:
        response = httpx.get(self.url + "/v1/models", timeout=5)
        response.raise_for_status()
        return [m["id"] for m in response.json()["data"]]

    def status(self) -> dict:
        response = httpx.get(self.url + "/status", timeout=5)
        response.raise_for_status()
        return response.json()

    def wait_for_reload(self, timeout: float = 10.0) -> tuple[Notification, Notification]:
        """The RELOADING=1 datagram of the next reload and the READY=1 that ends it."""
        reloading = self.wait_for("RELOADING", "1", timeout)
        ready = self.wait_for("READY", "1", timeout)
        return reloading, ready

    def wait_for_applied_reload(self, timeout: float = 10.0, reloads: int = 3) -> Notification:
        """The READY=1 of the next reload that applied, past at most ``reloads - 1`` refused ones (on a
        busy machine the file watch may report one deletion as two bursts, each a refused reload)."""
        for _ in range(reloads):
            _, ready = self.wait_for_reload(timeout)
            if "REFUSED" not in ready["STATUS"]:
                return ready
        raise AssertionError(f"no reload applied in {reloads}: {ready['STATUS']}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)


def start_daemon(tmp_path: Path, config_text: str, port: int, *, env: dict[str, str] | None = None,
                 config_name: str = "aiosd.yaml", journal: bool = True) -> RunningDaemon:
    """Write ``config_text``, start aiosd on it and wait for READY=1; the caller must ``close_daemon`` it."""
    config_path = Path(tmp_path) / config_name
    if not config_path.exists():
        config_path.write_text(config_text, encoding="utf-8")
    notify = NotifySocket(tmp_path)
    process = AiosdProcess(config_path, notify, tmp_path, env=env, journal=journal)
    daemon = RunningDaemon(process, notify, port, config_path)
    try:
        daemon.wait_for("READY", "1", timeout=20)
    except BaseException:
        close_daemon(daemon)
        raise
    return daemon


def close_daemon(daemon: RunningDaemon) -> None:
    daemon.process.close()
    daemon.notify.close()
