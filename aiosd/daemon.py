"""The daemon's life: start-up order, signals, live reload, systemd notifications, drain and exit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from aiosd.config.loader import ConfigError, ConfigProblem, NoConfigFile, load_config, read_config_bytes
from aiosd.config.settings import Config, exposed_without_auth, format_listen
from aiosd.config.watch import watch_config
from aiosd.server.accept import accept_connections, listening_sockets
from aiosd.server.connections import uvicorn_config
from aiosd.service.generations import ReloadOutcome
from aiosd.service.logs import set_level, setup_logging
from aiosd.service.notify import SystemdNotifier

log = logging.getLogger("aiosd.daemon")

T = TypeVar("T")
# The longest a reload may take to read and check the file (it takes milliseconds: the file is at
# most 1 MiB and its aliases are bounded) before it is refused; only a file system that does not
# answer gets there.
RELOAD_READ_TIMEOUT = 30.0


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside aiosd's own loop: aiosd owns the signals, accepts the connections and learns when
    the socket is bound.

    uvicorn has no setting for leaving signals alone: ``serve()`` wraps itself in ``capture_signals()``,
    which replaces the SIGINT/SIGTERM handlers and raises the signals again once it returns. A no-op
    ``capture_signals`` is the embedding hook its maintainers point to (tests/server pin it). The
    sockets go to aiosd's ``Acceptor`` rather than ``loop.create_server`` (server/connections.py says
    why); uvicorn's start-up runs with none, and shuts the acceptors down as its servers.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the daemon installs its own handlers
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:
            try:
                sockets = listening_sockets(self.config.host, self.config.port)
            except OSError as exc:
                log.error("cannot listen on %s: %s", format_listen(self.config.host, self.config.port),
                          (exc.strerror or str(exc)).lower())
                self.should_exit = True
                return
        try:
            await super().startup([])
        except SystemExit:
            # uvicorn logs a start-up error, then calls sys.exit() from inside our event loop; the
            # daemon decides how to exit (one log line and status 1, not a traceback and status 3).
            self.should_exit = True
            return
        if not self.started:
            return
        config, loop = self.config, asyncio.get_running_loop()

        def create_protocol() -> asyncio.Protocol:  # as uvicorn's own startup makes them (tests/server pin it)
            protocol = config.http_protocol_class
            return protocol(config=config, server_state=self.server_state,  # type: ignore[call-arg]  # typed as a bare Protocol
                            app_state=self.lifespan.state, _loop=loop)

        # uvicorn only closes its servers and waits for them to close: an Acceptor does both.
        self.servers = accept_connections(sockets, create_protocol, config.backlog)  # type: ignore[assignment]
        await asyncio.sleep(0)  # one loop turn before it counts as listening, as loop.create_server takes
        self.listening.set()


class Daemon:
    def __init__(self, config_path: Path, config: Config, *, config_digest: str | None = None) -> None:
        from aiosd.service.runtime import Runtime

        self.config_path = config_path
        self.notifier = SystemdNotifier()
        self.runtime = Runtime(config, notifier_status=self._publish_status)
        self.runtime.last_reload = ReloadOutcome(ok=True, at=time.time(), reason="start")
        # Taken before ``config`` was read, so an edit in between still differs from it and is applied.
        self._config_digest = config_digest if config_digest is not None else _digest(config_path)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[object]] = []

    async def run(self) -> int:
        from aiosd.api.app import build_app

        config = self.runtime.config
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._schedule_reload, "SIGHUP")

        try:  # before anything starts: a busy address is one clear line and exit 1
            sockets = listening_sockets(config.listen_host, config.listen_port)
        except OSError as exc:
            log.error("cannot listen on %s: %s", config.listen, (exc.strerror or str(exc)).lower())
            log.critical("could not listen on %s (see the error above); exiting", config.listen)
            await self.runtime.close()
            self.notifier.close()
            return 1
        # drain_timeout is set again at stop: it applies live.
        server = EmbeddedServer(uvicorn_config(build_app(self.runtime), self.runtime,
                                               graceful_timeout=config.server.drain_timeout))
        await self.runtime.start()
        serving = asyncio.create_task(server.serve(sockets=sockets), name="http-server")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not server.listening.is_set():
            listening.cancel()
            log.critical("could not listen on %s (see the error above); exiting", config.listen)
            await self.runtime.close()
            self.notifier.close()
            return 1
        log.info("listening on http://%s (%s, config %s); event loop %s", config.listen, config.shown_pool,
                 self.config_path, running_loop_name())
        # Watch before READY=1: an edit made right after systemd reports us started must not be missed.
        watching = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._watch(watching), name="config-watch"))
        try:
            await asyncio.wait_for(watching.wait(), 5.0)
        except TimeoutError:
            log.warning("the config file is not watched yet (see above); edits apply once it is, SIGHUP reloads now")
        self.notifier.ready(self.runtime.status_line())

        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._watchdog(self.notifier.watchdog_interval), name="watchdog"))

        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            stopping.cancel()
            log.critical("the HTTP server stopped unexpectedly (see the error above); exiting")
            await self._close()
            return 1
        drain = self.runtime.config.server.drain_timeout
        self.notifier.stopping(f"stopping: draining requests in flight (up to {drain:g}s)")
        log.info("stopping: no new connections; requests in flight may finish within %gs", drain)
        server.config.timeout_graceful_shutdown = drain  # type: ignore[assignment]  # an int to uvicorn; any float works
        server.should_exit = True
        await serving
        await self._close()
        log.info("stopped")
        return 0

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()
        self.notifier.close()

    def _request_stop(self, name: str) -> None:
        if self._stop.is_set():
            return
        log.info("%s received: shutting down", name)
        self._stop.set()

    def _schedule_reload(self, reason: str) -> None:
        if self._stop.is_set():
            return
        task = asyncio.create_task(self.reload(reason, force=True), name="reload")
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[object]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _watch(self, watching: asyncio.Event) -> None:
        async def on_change() -> None:
            await self.reload("file changed")

        await watch_config(
            self.config_path,
            on_change,
            debounce=lambda: self.runtime.config.server.reload_debounce,
            stop=self._stop,
            watching=watching,
        )

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def reload(self, reason: str, *, force: bool = False) -> ReloadOutcome:
        """Load the config again and apply it, or keep the running one and say why."""
        async with self._reload_lock:
            try:
                digest = await _off_loop(_digest, self.config_path)
            except TimeoutError:
                digest = None  # _load_and_apply says so
            last = self.runtime.last_reload
            if not force and digest == self._config_digest and last is not None and last.ok:
                log.debug("config file touched but its content is unchanged; nothing to do")
                return last
            self._config_digest = digest
            self.notifier.reloading()
            try:
                return await self._load_and_apply(reason)
            finally:
                # systemd stays in "reloading" until READY=1, whatever happened (unless we are stopping).
                if not self._stop.is_set():
                    self.notifier.ready(self.runtime.status_line())

    async def _load_and_apply(self, reason: str) -> ReloadOutcome:
        try:
            config = await _off_loop(load_config, self.config_path, empty_ok=False)
        except TimeoutError:
            return self._refused(reason, [ConfigProblem(str(self.config_path), None, None, "", (
                f"could not be read within {RELOAD_READ_TIMEOUT:g}s (a file system that does not answer?); "
                "the running config stays"))])
        except ConfigError as exc:
            if exc.missing:  # how to create a config is no news to a daemon that ran on one
                log.error("config file %s is gone (deleted or moved away); it is applied again when it reappears",
                          self.config_path)
                return self._refused(reason, [NoConfigFile(str(self.config_path), None, None, "",
                                                           "the file was deleted or moved away")])
            return self._refused(reason, exc.problems)
        except Exception as exc:  # a bug in loading must not take the running config down with it
            log.exception("config reload (%s) failed unexpectedly", reason)
            return self._refused(reason, [ConfigProblem(str(self.config_path), None, None, "",
                                                        f"internal error while loading: {exc!r}")])
        runtime = self.runtime
        changed = changed_sections(runtime.config, config, runtime.pending_listen)
        if exposed_without_auth(runtime.bound_host, config.auth, config.allow_remote):
            # The file may name a loopback address, but the socket stays where it was bound until a restart.
            bound = format_listen(runtime.bound_host, runtime.bound_port)
            return self._refused(reason, [ConfigProblem(
                str(self.config_path), None, None, "auth.keys",
                f"aiosd is still bound to {bound} (a new listen applies only after a restart), which is not a "
                "loopback address: without auth.keys anyone who can reach it could use your LLMs; keep "
                "auth.keys (or set allow_remote: true) until aiosd has been restarted on the new address")])
        try:
            notes = await self.runtime.apply(config)
        except Exception as exc:  # likewise: keep serving, and say so
            log.exception("config reload (%s) failed unexpectedly while applying", reason)
            return self._refused(reason, [ConfigProblem(str(self.config_path), None, None, "",
                                                        f"internal error while applying: {exc!r}")])
        set_level(config.log_level)
        if config.server.event_loop != running_loop_name():
            notes = [*notes, f"server.event_loop changed to {config.server.event_loop} but needs a restart "
                             f"(still on {running_loop_name()})"]
        outcome = ReloadOutcome(ok=True, at=time.time(), reason=reason, notes=notes)
        self.runtime.last_reload = outcome
        log.info("config reloaded (%s): generation %d now serving; %s", reason, self.runtime.generation,
                 f"changed: {', '.join(changed)}" if changed else "no setting changed")
        for note in notes:
            log.warning("config reload: %s", note)
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


# Config fields named otherwise than their top-level key in the file.
_FIELD_KEYS = {"listen_host": "listen", "listen_port": "listen", "log_level": "logging"}


def changed_sections(old: Config, new: Config, pending_listen: str | None = None) -> list[str]:
    """The top-level keys whose settings differ between the running config and a new one, in the config's
    order; never a value (a changed key under ``auth`` is said as "auth"). The running config names the
    bound socket, so ``listen`` is compared with the file's ``pending_listen`` when there is one."""
    names = ["listen"] if new.listen != (pending_listen or old.listen) else []
    names += [_FIELD_KEYS.get(f.name, f.name) for f in dataclasses.fields(Config)
              if f.compare and f.name not in ("listen_host", "listen_port")
              and getattr(old, f.name) != getattr(new, f.name)]
    return list(dict.fromkeys(names))


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(read_config_bytes(Path(path))).hexdigest()
    except ConfigError:  # a FIFO, a device or a huge file is read by nobody: the load says why
        return None


async def _off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a daemon thread of its own, waiting at most ``RELOAD_READ_TIMEOUT``.

    Not ``asyncio.to_thread``: a thread stuck in the file system would hold up the default
    executor's shutdown, so a stop would log "stopped" and never exit (issue 18 item 7). A stuck
    thread is abandoned; cancelling the caller (shutdown) returns at once.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]  # T when no error

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:
            pass  # the loop is gone: the daemon stopped meanwhile

    threading.Thread(target=run, name="config-read", daemon=True).start()
    return await asyncio.wait_for(done, RELOAD_READ_TIMEOUT)


def run_daemon(config_path: Path) -> int:
    """``aiosd run``: exit 0 after a clean stop, 1 when it cannot start."""
    setup_logging("info")
    digest = _digest(config_path)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        if exc.missing:  # not an invalid config: there is none
            log.critical("cannot start: %s", exc.problems[0])
            return 1
        for problem in exc.problems:
            log.error("config rejected: %s", problem)
        log.critical("cannot start: %s is not a valid config (%d problem(s))", config_path, len(exc.problems))
        return 1
    setup_logging(config.log_level)

    async def main() -> int:
        return await Daemon(config_path, config, config_digest=digest).run()

    with asyncio.Runner(loop_factory=event_loop_factory(config.server.event_loop)) as runner:
        return runner.run(main())


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop ``server.event_loop`` names: uvloop's (libuv; the default) or asyncio's own."""
    if name == "uvloop":
        import uvloop  # here: only the daemon runs on it, the other commands need not load it

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def running_loop_name() -> str:
    """``server.event_loop``'s name for the loop running now."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
