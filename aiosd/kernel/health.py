"""Outlier ejection for one pool kernel (as Envoy does it): consecutive gateway failures eject it for a growing backoff.

What lives here: ``Health`` (pure state on an injected clock: failures in a row, ejections, when
the current one ends, whether a probe has brought the kernel back) and ``is_gateway_failure`` (which
kernel errors say the kernel itself is broken). What does not: probing (the pool's model-list
refresh and the canary call ``record_probe``), choosing kernels (``scheduler``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosd.config.settings import HealthSettings
from aiosd.errors import KernelBadAnswer, KernelError, KernelTimeout, KernelUnreachable


def is_gateway_failure(error: BaseException) -> bool:
    """True when ``error`` says the kernel is broken, not the request: refused, reset, hung, garbage,
    a 5xx, or its LLM core down (503 inside 200, or a model list it cannot give)."""
    if isinstance(error, (KernelUnreachable, KernelTimeout, KernelBadAnswer)):
        return error.code != "kernel_dropped_text"
    if isinstance(error, KernelError):
        if error.code == "kernel_model_unavailable":
            return False  # about the model asked for (this kernel lacks it), not about the kernel
        status = error.kernel_status
        return error.code == "kernel_not_ready" or (status is not None and status >= 500)
    return False


def fails_over(error: BaseException) -> bool:
    """True when another kernel may well answer what this one could not: every gateway failure, a
    429 (this kernel's LLM quota), and the kernel's own LLM misconfiguration (401/403/404). Not a
    400 (the request's content) nor 422 (the body's shape: the same on every kernel). A kernel that
    lacks the model fails over too (another may have it) but is not ejected for it."""
    if is_gateway_failure(error):
        return True
    if isinstance(error, KernelError):
        return error.kernel_status in (429, 401, 403, 404, 408) or error.code == "kernel_model_unavailable"
    return False


@dataclass(frozen=True, slots=True)
class HealthView:
    """A snapshot for status output."""

    state: str  # "healthy", "ejected" (backoff running) or "probing" (backoff over, waiting for a probe)
    consecutive_failures: int
    ejections: int  # in a row (drives the backoff); reset after a long healthy spell
    ejections_total: int
    ejected_for: float | None  # seconds left of the current backoff


class Health:
    """One kernel's health. ``record_success``/``record_failure`` after every call,
    ``record_probe`` after every model-list refresh or canary.

    A kernel is ejected after ``consecutive_failures`` gateway failures in a row, for
    ``base_ejection * 2**(n-1)`` (n = ejections in a row), at most ``max_ejection``. Once the
    backoff is over it rejoins at its next successful probe; a successful call (the pool had to use
    it anyway, nothing healthy serving the model) brings it back at once; a failed probe after the
    backoff ejects it again for longer. Ejections in
    a row are forgotten after ``max_ejection`` of good health.
    """

    def __init__(self, settings: HealthSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejections_total = 0
        self.ejected_until: float | None = None  # set while ejected (backoff running or over)
        self._healthy_since: float = clock()

    @property
    def ejected(self) -> bool:
        """Out of the rotation: backoff running, or over and no probe has succeeded yet."""
        return self.ejected_until is not None

    def backoff_over(self) -> bool:
        return self.ejected_until is not None and self._clock() >= self.ejected_until

    def record_success(self) -> bool:
        """A call got a meaningful answer. Returns True when this brought the kernel back: a real
        answer (the pool used the kernel while nothing healthy served the model) ends an ejection at
        once, backoff or not, since it proves more than a probe."""
        self.consecutive_failures = 0
        return self._rejoin(early=True)

    def record_failure(self, error: BaseException) -> bool:
        """A call failed; returns True when this failure ejected the kernel (only gateway failures count)."""
        if not is_gateway_failure(error):
            return False
        self.consecutive_failures += 1
        if self.ejected_until is not None:
            if self.backoff_over():  # it was tried again after the backoff and still fails
                self._eject()
                return True
            return False
        if self.consecutive_failures >= self.settings.consecutive_failures:
            self._eject()
            return True
        return False

    def record_probe(self, ok: bool) -> str | None:
        """A model-list refresh or canary finished: "rejoined", "ejected" (again), or None (no change)."""
        if ok:
            self.consecutive_failures = 0
            return "rejoined" if self._rejoin() else None
        if self.ejected_until is not None:
            if self.backoff_over():
                self._eject()
                return "ejected"
            return None
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.settings.consecutive_failures:
            self._eject()
            return "ejected"
        return None

    def backoff(self) -> float:
        """The length of the current (or next) ejection."""
        n = max(1, self.ejections)
        return min(self.settings.max_ejection, self.settings.base_ejection * float(2 ** min(n - 1, 30)))

    def view(self) -> HealthView:
        left = None
        state = "healthy"
        if self.ejected_until is not None:
            left = max(0.0, self.ejected_until - self._clock())
            state = "ejected" if left > 0 else "probing"
        return HealthView(state, self.consecutive_failures, self.ejections, self.ejections_total,
                          None if left is None else round(left, 3))

    def _eject(self) -> None:
        now = self._clock()
        if self.ejected_until is None and now - self._healthy_since >= self.settings.max_ejection:
            self.ejections = 0  # a long healthy spell since the last ejection: start the backoff over
        self.ejections += 1
        self.ejections_total += 1
        self.ejected_until = now + self.backoff()

    def _rejoin(self, *, early: bool = False) -> bool:
        if self.ejected_until is None:
            return False
        if not early and not self.backoff_over():
            return False  # Envoy keeps an ejected host out for its whole backoff
        self.ejected_until = None
        self.consecutive_failures = 0
        self._healthy_since = self._clock()
        return True
