"""Conversations within an API key (OpenClaw's session ids): each one's share, limit and kernel, bounded in count.

What lives here: ``SessionState`` (one session's service so far, calls in flight and waiting, the
kernel that served its last call) and ``SessionTable`` (every session seen lately, keyed by a keyed
hash of (key name, session id): at most ``max_sessions`` of them, an idle one forgotten after
``idle_after``, the least recently used idle one first when full; how many sessions each kernel
holds, for placing new ones). What does not: who gets a free slot (``scheduler``), reading the id
from a request (``api``).

The id itself is never kept: only its hash (the table's key) and ``short``, the first 8 hex
characters of it, which logs, /status and the status page show. The hash key is random per
process, so ``short`` cannot be turned back into the id nor matched against another run's.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Entries looked at per prune or eviction: the table's upkeep costs O(1) per request at most.
UPKEEP_STEPS = 32


@dataclass(eq=False, slots=True)
class SessionState:
    """One session of one key (``token`` b"": the key's requests without a session id, never forgotten)."""

    key_name: str
    short: str  # 8 hex characters: what logs and pages show; "-" for the key-level session
    token: bytes = b""
    served: float = 0.0  # slots granted (stride): the session with the least goes first within its key
    last_served: float = -math.inf
    in_flight: int = 0
    queued: int = 0
    kernel: str | None = None  # affinity: the kernel of its last call (None: the key-level session, or new)
    idle_since: float = 0.0

    # A real session (kept in the table, with affinity); False for the key-level one. A field, not a
    # property: the request path reads it on every slot.
    tracked: bool = False

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.queued > 0


class SessionTable:
    """Sessions seen lately, in order of last use (the front is the least recently used)."""

    def __init__(self, max_sessions: int, idle_after: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.idle_after = idle_after
        self._clock = clock
        self._secret = os.urandom(16)
        self._states: OrderedDict[bytes, SessionState] = OrderedDict()
        self._per_kernel: dict[str, int] = {}
        self.forgotten_total = 0  # idle sessions dropped (idle too long, or to make room)
        self.overflow_total = 0  # requests counted key-level because every entry was busy

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[SessionState]:
        return iter(self._states.values())

    def short_of(self, key_name: str, session_id: str) -> str:
        """The 8 hex characters shown for ``session_id`` of ``key_name`` (what ``get`` would name it)."""
        return self._token(key_name, session_id)[:4].hex()

    def _token(self, key_name: str, session_id: str) -> bytes:
        data = key_name.encode() + b"\x00" + session_id.encode("utf-8", "replace")
        return hashlib.blake2b(data, digest_size=16, key=self._secret).digest()

    def get(self, key_name: str, session_id: str) -> SessionState | None:
        """The state of ``session_id`` within ``key_name``, created on first use; None when the table is
        full of sessions with calls waiting or in flight (the request then counts as key-level)."""
        token = self._token(key_name, session_id)
        state = self._states.get(token)
        if state is not None:
            self._states.move_to_end(token)
            return state
        self.prune()
        while len(self._states) >= self.max_sessions:  # more than one only after a reload lowered the bound
            if not self._evict_one():
                self.overflow_total += 1
                return None
        state = self._states[token] = SessionState(key_name, token[:4].hex(), token, idle_since=self._clock(),
                                                   tracked=True)
        return state

    def went_idle(self, state: SessionState) -> None:
        """``state`` has nothing waiting or in flight any more: its idle time starts now."""
        state.idle_since = self._clock()
        if self._states.get(state.token) is state:
            self._states.move_to_end(state.token)

    def set_kernel(self, state: SessionState, kernel: str) -> None:
        """``state``'s calls go to ``kernel`` from now on."""
        if self._states.get(state.token) is state:
            self._count(state.kernel, -1)
            self._count(kernel, 1)
        state.kernel = kernel

    def sessions_on(self, kernel: str) -> int:
        """Sessions whose calls go to ``kernel``."""
        return self._per_kernel.get(kernel, 0)

    def prune(self) -> None:
        """Forget sessions idle for longer than ``idle_after`` (a few per call, from the front)."""
        deadline = self._clock() - self.idle_after
        for _ in range(min(UPKEEP_STEPS, len(self._states))):
            token, state = next(iter(self._states.items()))
            if state.busy:
                self._states.move_to_end(token)  # in use: it moves back when it goes idle
            elif state.idle_since <= deadline:
                self._drop(token, state)
            else:
                return  # the front is the least recently idle: nothing further is older

    def _evict_one(self) -> bool:
        """Make room by forgetting the least recently used idle session; False if none was found."""
        for _ in range(min(UPKEEP_STEPS, len(self._states))):
            token, state = next(iter(self._states.items()))
            if not state.busy:
                self._drop(token, state)
                return True
            self._states.move_to_end(token)
        return False

    def _drop(self, token: bytes, state: SessionState) -> None:
        del self._states[token]
        self._count(state.kernel, -1)
        self.forgotten_total += 1

    def _count(self, kernel: str | None, delta: int) -> None:
        if kernel is None:
            return
        count = self._per_kernel.get(kernel, 0) + delta
        if count > 0:
            self._per_kernel[kernel] = count
        else:
            self._per_kernel.pop(kernel, None)
