"""Config generations: the config each request runs on, the address bound at start, and the last reloads."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosd.config.settings import Config
from aiosd.kernel.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Generation:
    """What one request runs on from start to end, even if the config is reloaded meanwhile."""

    number: int
    config: Config
    retry: RetryPolicy


@dataclass
class ReloadOutcome:
    """The result of the last attempt to load the config, for STATUS, /status and metrics."""

    ok: bool
    at: float  # wall clock
    reason: str  # "start", "file changed", "SIGHUP"
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


class ConfigGenerations:
    """The current generation and its history: a reload makes the next one; the socket bound at
    start stays (a new ``listen`` waits for a restart); the last reload and the last refused one
    are kept for /status and the status page."""

    def __init__(self, config: Config, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        # The HTTP server binds once, at start; a reload cannot move it (changing listen needs a restart).
        self.bound_host, self.bound_port = config.listen_host, config.listen_port
        self.pending_listen: str | None = None  # a listen from a reload, applied at the next restart
        self.current = Generation(1, config, RetryPolicy(config.retry))
        self.last_reload: ReloadOutcome | None = None  # set by the daemon
        self.last_refused_reload: ReloadOutcome | None = None
        self.applied_at = wall_clock()  # when the serving config was last applied (wall clock)

    def next(self, config: Config) -> tuple[Generation, list[str]]:
        """Make ``config`` the next generation (listening where the server is bound); returns it
        and notes for the log (a listen that needs a restart)."""
        notes = []
        if (config.listen_host, config.listen_port) != (self.bound_host, self.bound_port):
            # Until a restart everything that says where aiosd listens (OpenClaw's baseUrl, /status)
            # names the socket actually bound, not the file's new address nobody listens on yet.
            self.pending_listen = config.listen
            config = dataclasses.replace(config, listen_host=self.bound_host, listen_port=self.bound_port)
            notes.append(f"listen changed to {self.pending_listen} but needs a restart (still on {config.listen})")
        else:
            self.pending_listen = None
        self.current = Generation(self.current.number + 1, config, RetryPolicy(config.retry))
        return self.current, notes

    def record_reload(self, *, ok: bool) -> None:
        """Note an applied config (now) or a refused one (``last_reload`` is the refusal)."""
        if ok:
            self.applied_at = self._wall_clock()
        else:
            self.last_refused_reload = self.last_reload
