"""The daemon's life: start-up order, signals, live reload, systemd notifications, drain and exit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from aiosd.config import Config
from aiosd.config_watch import watch_config
from aiosd.loader import ConfigError, ConfigProblem, load_config
from aiosd.logs import set_level, setup_logging
from aiosd.notify import SystemdNotifier

log = logging.getLogger("aiosd.daemon")


@dataclass
class ReloadOutcome:
    """The result of the last attempt to load the config, for STATUS, /status and metrics."""

    ok: bool
    at: float  # wall clock
    reason: str  # "start", "file changed", "SIGHUP"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside aiosd's own loop: aiosd owns the signals and learns when the socket is bound."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    def capture_signals(self):  # the daemon installs its own handlers
        import contextlib

        return contextlib.nullcontext()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class Daemon:
    def __init__(self, config_path: Path, config: Config) -> None:
        from aiosd.runtime import Runtime

        self.config_path = config_path
        self.notifier = SystemdNotifier()
        self.runtime = Runtime(config, notifier_status=self._publish_status)
        self.runtime.last_reload = ReloadOutcome(ok=True, at=time.time(), reason="start")
        self._config_digest = _digest(config_path)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    async def run(self) -> int:
        from aiosd.app import build_app

        config = self.runtime.config
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._schedule_reload, "SIGHUP")

        server = EmbeddedServer(
            uvicorn.Config(
                build_app(self.runtime),
                host=config.listen_host,
                port=config.listen_port,
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=max(1, int(config.server.drain_timeout)),
                timeout_keep_alive=65,  # OpenClaw keeps connections alive between turns
            )
        )
        await self.runtime.start()
        serving = asyncio.create_task(server.serve(), name="http-server")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            listening.cancel()
            log.critical("could not listen on %s (see the error above); exiting", config.listen)
            await self.runtime.close()
            return 1
        log.info("listening on http://%s (kernel %s, config %s)", config.listen, config.kernel.url, self.config_path)
        self.notifier.ready(self.runtime.status_line())

        self._tasks.append(asyncio.create_task(self._watch(), name="config-watch"))
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._watchdog(self.notifier.watchdog_interval), name="watchdog"))

        await self._stop.wait()
        self.notifier.stopping(f"stopping: draining requests in flight (up to {config.server.drain_timeout:g}s)")
        log.info("stopping: no new connections; requests in flight may finish within %gs",
                 self.runtime.config.server.drain_timeout)
        server.should_exit = True
        await serving
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()
        log.info("stopped")
        return 0

    def _request_stop(self, name: str) -> None:
        if self._stop.is_set():
            return
        log.info("%s received: shutting down", name)
        self._stop.set()

    def _schedule_reload(self, reason: str) -> None:
        self._tasks.append(asyncio.create_task(self.reload(reason, force=True)))

    async def _watch(self) -> None:
        await watch_config(
            self.config_path,
            lambda: self.reload("file changed"),
            debounce=lambda: self.runtime.config.server.reload_debounce,
            stop=self._stop,
        )

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def reload(self, reason: str, *, force: bool = False) -> ReloadOutcome:
        """Load the config again and apply it, or keep the running one and say why."""
        async with self._reload_lock:
            digest = _digest(self.config_path)
            if not force and digest == self._config_digest and self.runtime.last_reload.ok:
                log.debug("config file touched but its content is unchanged; nothing to do")
                return self.runtime.last_reload
            self._config_digest = digest
            self.notifier.reloading()
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                outcome = self._refused(reason, exc.problems)
            else:
                notes = await self.runtime.apply(config)
                set_level(config.log_level)
                outcome = ReloadOutcome(ok=True, at=time.time(), reason=reason, notes=notes)
                self.runtime.last_reload = outcome
                log.info("config reloaded (%s): generation %d now serving%s", reason, self.runtime.generation,
                         "; " + "; ".join(notes) if notes else "")
            self.notifier.ready(self.runtime.status_line())
            return outcome

    def _refused(self, reason: str, problems: list[ConfigProblem]) -> ReloadOutcome:
        for problem in problems:
            log.error("config rejected: %s", problem)
        log.error("config reload (%s) refused with %d problem(s); still serving generation %d",
                  reason, len(problems), self.runtime.generation)
        outcome = ReloadOutcome(ok=False, at=time.time(), reason=reason, problems=[str(p) for p in problems])
        self.runtime.last_reload = outcome
        self.runtime.record_reload(ok=False)
        return outcome

    def _publish_status(self) -> None:
        self.notifier.status(self.runtime.status_line())


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def run_daemon(config_path: Path) -> int:
    """``aiosd run``: exit 0 after a clean stop, 1 when it cannot start."""
    setup_logging("info")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config rejected: %s", problem)
        log.critical("cannot start: %s is not a valid config (%d problem(s))", config_path, len(exc.problems))
        return 1
    setup_logging(config.log_level)

    async def main() -> int:
        return await Daemon(config_path, config).run()

    return asyncio.run(main())
