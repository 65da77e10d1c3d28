"""The models aiosd exposes: ``models.map`` plus what the kernel lists, refreshed in the background.

What lives here: ``ModelCatalog`` (resolve an OpenClaw model id to a ``ModelSpec``, the stable
list for ``/v1/models`` and the OpenClaw sync, the periodic refresh from ``/core/llms/list``
that keeps the last good list while the kernel is down, the check of ``models.map`` against the
kernel's list, and change notification). What does not: talking HTTP to the kernel
(``kernel.client``), writing OpenClaw's config (``openclaw``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiosd.config.schema import model_id_problem
from aiosd.config.settings import ModelSettings, ModelSpec
from aiosd.errors import AiosdError, ModelNotFound
from aiosd.models.memory import ModelMemory, clean_backend

log = logging.getLogger("aiosd.models")

# How many ids a ModelNotFound message lists before "and N more".
NOT_FOUND_LIST_LIMIT = 20
# After a failed refresh, try again sooner than refresh_interval (the kernel may be starting).
FAILED_REFRESH_RETRY = 5.0
# How much of a text from outside (a kernel's model name, an exception) a log line or message shows.
SHOWN_LIMIT = 80


def shown(text: object, limit: int = SHOWN_LIMIT) -> str:
    """``text`` quoted for a log line or an error: control characters escaped, at most ``limit`` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def _some(ids: list[str], limit: int = NOT_FOUND_LIST_LIMIT) -> str:
    """Ids for one log line: at most ``limit`` of them, then how many more."""
    if not ids:
        return "none"
    listed = ", ".join(shown(i, 60)[1:-1] if len(i) > 60 else i for i in ids[:limit])
    return listed + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class ModelLister(Protocol):
    """What the catalog needs of ``KernelClient``."""

    async def list_llms(self) -> list[dict]: ...


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """The outcome of the latest model-list refresh, for status output."""

    ok: bool
    message: str
    at: float  # wall clock (time.time()), for humans
    at_monotonic: float


@dataclass(frozen=True, slots=True)
class UnavailableModel:
    """A ``models.map`` entry whose kernel model the kernel does not list: not offered until it does."""

    spec: ModelSpec

    @property
    def reason(self) -> str:
        return f"mapped to kernel model {shown(self.spec.kernel_model)}, which the kernel does not list"

    def as_dict(self) -> dict:
        return {"id": self.spec.id, "kernel_model": self.spec.kernel_model, "reason": self.reason}


ChangeListener = Callable[[tuple[ModelSpec, ...]], object]


class ModelCatalog:
    """Map entries first (file order), then discovered kernel models (sorted by id).

    A map id wins over a discovered model of the same id. Once the kernel's list is known in this
    run, a map entry whose ``kernel_model`` it does not list is left out (``unavailable()``) and
    its id answers 404 saying why; until then (kernel down, nothing fetched yet) every map entry
    is kept as it is, and discovered models come from ``memory``, the list the kernel gave last
    time aiosd ran (``unconfirmed()`` names them), so a restart while the kernel is down drops
    nothing. Every good list is remembered for the next start. ``version`` grows by one whenever
    ``models()`` changes; listeners added with ``add_listener`` are called with the new tuple,
    and ``await wait_changed(version)`` returns once it moved past ``version``.
    """

    def __init__(
        self,
        settings: ModelSettings,
        lister: ModelLister | Callable[[], ModelLister],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        memory: ModelMemory | None = None,
    ) -> None:
        self._settings = settings
        self._memory = memory
        # The list the kernel gave when aiosd last ran; offered only until the kernel answers now.
        self._remembered: tuple[tuple[str, str | None], ...] = memory.load() if memory is not None else ()
        self._unconfirmed: frozenset[str] = frozenset()
        # Either the lister itself or a function giving the current one (the daemon replaces its
        # KernelClient on reload).
        self._lister_now: Callable[[], ModelLister] = (
            (lambda: lister) if hasattr(lister, "list_llms") else lister
        )
        self._clock = clock
        self._wall_clock = wall_clock
        # The last good discovered list, raw (name, backend): rebuilt into specs on reload.
        self._discovered: tuple[tuple[str, str | None], ...] = ()
        # Every name in the kernel's last good list of this run (invalid ids included: a map entry
        # may route to one); None until the kernel answered.
        self._kernel_names: frozenset[str] | None = None
        self._unavailable: dict[str, UnavailableModel] = {}
        self._models: tuple[ModelSpec, ...] = ()
        self._by_id: dict[str, ModelSpec] = {}
        self.version = 0
        self.last_refresh: RefreshResult | None = None
        self._failure_streak = 0
        self._failure_kind: str | None = None
        self._skipped_names: frozenset[str] = frozenset()
        self._left_out = 0  # discovered models beyond models.max_discovered, as last said
        self._listeners: list[ChangeListener] = []
        self._changed = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._first_refresh = asyncio.Event()
        self._rebuild(initial=True)
        if self._unconfirmed:
            log.info("offering %d discovered models remembered from the kernel's last list (%s) until the kernel "
                     "answers", len(self._unconfirmed), memory.path if memory is not None else "memory")

    # --- reading ------------------------------------------------------------------------------

    def models(self) -> tuple[ModelSpec, ...]:
        """Every model id that works right now, in stable order."""
        return self._models

    def resolve(self, model_id: str) -> ModelSpec:
        """The spec for an OpenClaw model id; ``ModelNotFound`` (404) listing what exists, or saying
        why a mapped model is not offered."""
        spec = self._by_id.get(model_id)
        if spec is not None:
            return spec
        unavailable = self._unavailable.get(model_id)
        if unavailable is not None:
            raise ModelNotFound(
                f"The model {shown(model_id)} is {unavailable.reason} ({self._kernel_list_summary()}); "
                f"fix models.map.{model_id}.kernel_model in aiosd's config or add the model to the kernel."
            )
        raise ModelNotFound(self._not_found_message(model_id))

    def unavailable(self) -> tuple[UnavailableModel, ...]:
        """Map entries left out because the kernel does not list their kernel model, in file order."""
        return tuple(self._unavailable.values())

    def unconfirmed(self) -> frozenset[str]:
        """Ids offered from the remembered list: the kernel has not confirmed them in this run."""
        return self._unconfirmed

    def memory_status(self) -> dict | None:
        """The remembered list's file for /status; None when the catalog keeps none."""
        memory = self._memory
        if memory is None:
            return None
        return {"path": str(memory.path), "models": None if memory.saved is None else len(memory.saved),
                "saved_at": memory.saved_at, "in_use": bool(self._unconfirmed)}

    def set_memory(self, memory: ModelMemory | None) -> None:
        """Remember the list somewhere else from now on (``state_dir`` changed on reload)."""
        self._memory = memory

    @property
    def kernel_list_known(self) -> bool:
        """True once the kernel listed its models in this run."""
        return self._kernel_names is not None

    @property
    def settings(self) -> ModelSettings:
        return self._settings

    # --- changing -----------------------------------------------------------------------------

    def apply_settings(self, settings: ModelSettings) -> None:
        """Take a reloaded ``models`` section. Call ``await refresh()`` after it when discovery
        is on, so a newly enabled discovery does not wait a whole interval."""
        self._settings = settings
        if not settings.discover:
            # No more refreshes: a list that only gets older must not keep mappings out.
            self._kernel_names = None
        self._rebuild()
        self._wake.set()  # the background loop picks up a new refresh_interval now

    async def refresh(self) -> RefreshResult:
        """Fetch the kernel's list now. On failure the last good list stays."""
        async with self._refresh_lock:
            return await self._refresh_locked()

    async def _refresh_locked(self) -> RefreshResult:
        if not self._settings.discover:
            return self._record(True, "discovery is off (models.discover: false); models.map is not checked "
                                      "against the kernel's list")
        try:
            listed = await self._lister_now().list_llms()
            result = self._take(listed)
        except AiosdError as exc:
            return self._failed(exc.message, kind="kernel")
        except Exception as exc:
            # Whatever the kernel's answer does to the decoder (RecursionError on deeply nested JSON)
            # or a bug here: the refresh reports it and keeps the last good list; the loop goes on.
            log.debug("model-list refresh: traceback", exc_info=exc)
            return self._failed(f"unexpected {type(exc).__name__} while reading it: {shown(exc, 200)}",
                                kind=type(exc).__name__, unexpected=True)
        await self._remember()
        return result

    async def _remember(self) -> None:
        memory = self._memory
        if memory is None or memory.saved == self._discovered:
            return
        try:
            await asyncio.to_thread(memory.save, self._discovered)
        except Exception:  # a bug in saving must not turn a good refresh into a failed one
            log.exception("could not remember the kernel's model list")

    def _failed(self, message: str, *, kind: str, unexpected: bool = False) -> RefreshResult:
        result = self._record(False, message)
        self._failure_streak += 1
        # Once per streak, and again when the kind of failure changes (down, then garbage).
        if self._failure_streak == 1 or kind != self._failure_kind:
            if self._kernel_names is not None:
                kept = f"keeping the last good list ({len(self._discovered)} models)"
            elif self._unconfirmed:
                kept = f"offering the {len(self._unconfirmed)} models remembered from its last list meanwhile"
            else:
                kept = "no discovered models yet"
            retry = min(self._settings.refresh_interval, FAILED_REFRESH_RETRY)
            log.log(logging.ERROR if unexpected else logging.WARNING,
                    "could not refresh the kernel's model list: %s; %s; trying again every %gs", message, kept, retry)
        self._failure_kind = kind
        return result

    def _take(self, listed: list[dict]) -> RefreshResult:
        """Adopt a list the kernel answered with (raises only on a bug; the caller keeps the old list then)."""
        seen: dict[str, str | None] = {}
        skipped: dict[str, str] = {}  # name -> why, for names that are no valid model id
        for entry in listed:
            name = entry.get("name")
            if not isinstance(name, str) or not name or name in seen:
                continue
            why = model_id_problem(name)
            if why:
                skipped.setdefault(name, why)
                continue
            seen[name] = clean_backend(entry.get("backend"))
        names = frozenset(entry["name"] for entry in listed if isinstance(entry.get("name"), str))
        if self._failure_streak:
            log.info("the kernel's model list is available again")
        self._failure_streak = 0
        self._failure_kind = None
        self._report_skipped(skipped)
        self._discovered = self._within_cap(sorted(seen.items()))
        self._remembered = self._discovered  # what to fall back on if discovery is switched off and on
        self._kernel_names = names
        self._rebuild()
        message = f"{len(self._discovered)} models listed by the kernel"
        if skipped:
            message += f"; {len(skipped)} more skipped (not a valid model id)"
        if self._unavailable:
            message += f"; {len(self._unavailable)} mapped model(s) it does not list, not offered"
        return self._record(True, message)

    def _within_cap(self, discovered: list[tuple[str, str | None]]) -> tuple[tuple[str, str | None], ...]:
        """The first ``models.max_discovered`` discovered models by name (names a mapped id takes do not
        count: the map entry is offered instead); one warning when how many are left out changes."""
        limit = self._settings.max_discovered
        mapped = {spec.id for spec in self._settings.map}
        kept: list[tuple[str, str | None]] = []
        left_out: list[str] = []
        for name, backend in discovered:
            if name in mapped or len(kept) < limit:
                kept.append((name, backend))
            else:
                left_out.append(name)
        if len(left_out) != self._left_out:
            self._left_out = len(left_out)
            if left_out:
                log.warning(
                    "the kernels list %d models to discover; aiosd offers the first %d by name "
                    "(models.max_discovered) and leaves out %d, from %s to %s; map one in models.map to offer it",
                    len(discovered), limit, len(left_out), shown(left_out[0], 60), shown(left_out[-1], 60))
            else:
                log.info("every discovered model is offered again (%d, within models.max_discovered)", len(kept))
        return tuple(kept)

    def _report_skipped(self, skipped: dict[str, str]) -> None:
        """One warning when the set of kernel names that are no valid id changes, not every refresh."""
        names = frozenset(skipped)
        if names == self._skipped_names:
            return
        self._skipped_names = names
        if not names:
            log.info("the kernel lists no invalid model ids any more")
            return
        example = min(names, key=len)  # the shortest: most likely to be read whole
        log.warning(
            "the kernel lists %d model name(s) that are no valid model id, skipped (not offered, not written "
            "to OpenClaw's file; map one in models.map under an id of your choice to use it); e.g. %s: %s",
            len(names), shown(example), skipped[example],
        )

    def add_listener(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(models)`` after every change; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def first_refresh_done(self, timeout: float | None = None) -> bool:
        """Wait until the first refresh finished (ok or not); False if ``timeout`` ran out first."""
        try:
            async with asyncio.timeout(timeout):
                await self._first_refresh.wait()
        except TimeoutError:
            return False
        return True

    def last_refresh_status(self) -> dict | None:
        """``last_refresh`` as JSON for status output; None before the first refresh."""
        result = self.last_refresh
        if result is None:
            return None
        return {
            "ok": result.ok,
            "message": result.message,
            "kernel_list_known": self.kernel_list_known,
            "at": result.at,
            "seconds_ago": round(self._clock() - result.at_monotonic, 3),
        }

    async def wait_changed(self, since_version: int) -> int:
        """Return the current ``version`` once it differs from ``since_version``."""
        while self.version == since_version:
            await self._changed.wait()
        return self.version

    # --- background refresh ---------------------------------------------------------------------

    def start(self, *, refresh_now: bool = True) -> None:
        """Run ``run()`` as a task of the catalog's own (``stop()`` ends it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(refresh_now=refresh_now), name="aiosd-model-refresh"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def run(self, *, refresh_now: bool = True) -> None:
        """The periodic refresh, forever (run it as a task and cancel it, or use start/stop).
        The first refresh runs at once unless ``refresh_now`` is False (the caller just awaited
        ``refresh()``); after a failure the next try comes within ``FAILED_REFRESH_RETRY``."""
        while True:
            if refresh_now:
                await self.refresh()
            refresh_now = True
            interval = self._settings.refresh_interval
            if self.last_refresh is not None and not self.last_refresh.ok:
                interval = min(interval, FAILED_REFRESH_RETRY)
            self._wake.clear()
            try:
                # apply_settings wakes us so a new interval applies at once.
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass

    # --- internals ----------------------------------------------------------------------------

    def _record(self, ok: bool, message: str) -> RefreshResult:
        result = RefreshResult(ok, message, self._wall_clock(), self._clock())
        self.last_refresh = result
        self._first_refresh.set()
        return result

    def _rebuild(self, *, initial: bool = False) -> None:
        settings = self._settings
        specs: list[ModelSpec] = []
        by_id: dict[str, ModelSpec] = {}
        names = self._kernel_names
        unavailable: dict[str, UnavailableModel] = {}
        for spec in settings.map:
            if spec.id in by_id or spec.id in unavailable:
                continue
            if names is not None and spec.kernel_model not in names:
                # Its id stays reserved: a discovered model of the same name must not stand in for it.
                unavailable[spec.id] = UnavailableModel(spec)
                continue
            by_id[spec.id] = spec
            specs.append(spec)
        self._report_unavailable(unavailable)
        unconfirmed: set[str] = set()
        if settings.discover:
            discovered = self._discovered if names is not None else self._remembered
            room = settings.max_discovered  # _take kept within it; a remembered list or a reload may not be
            for name, backend in discovered:  # already sorted by name (= id)
                if name not in by_id and name not in unavailable and room > 0:
                    room -= 1
                    spec = settings.spec_for_discovered(name, backend)
                    by_id[spec.id] = spec
                    specs.append(spec)
                    if names is None:
                        unconfirmed.add(spec.id)
        self._unconfirmed = frozenset(unconfirmed)
        models = tuple(specs)
        if models == self._models and not initial:
            return
        old_ids = {spec.id for spec in self._models}
        self._models = models
        self._by_id = by_id
        if initial:
            return
        new_ids = set(by_id)
        added = sorted(new_ids - old_ids)
        removed = sorted(old_ids - new_ids)
        if added or removed:
            log.info("models changed: %d exposed; added %s; removed %s", len(models), _some(added), _some(removed))
        else:
            log.info("model settings changed (same %d ids)", len(models))
        self.version += 1
        # Wake every waiter, then start a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in list(self._listeners):
            try:
                listener(models)
            except Exception:  # a broken listener must not stop the catalog
                log.exception("a model-list listener failed")

    def _report_unavailable(self, unavailable: dict[str, UnavailableModel]) -> None:
        """Log a mapping the kernel stopped (or started) listing; nothing while the set stays the same."""
        old, self._unavailable = self._unavailable, unavailable
        for model_id, entry in unavailable.items():
            if model_id not in old or old[model_id].spec.kernel_model != entry.spec.kernel_model:
                log.warning(
                    "models.map.%s is %s (%s): not offered in /v1/models nor written to OpenClaw's file until "
                    "it does; requests for it get 404", model_id, entry.reason, self._kernel_list_summary(),
                )
        for model_id, entry in old.items():
            if model_id not in unavailable and any(spec.id == model_id for spec in self._settings.map):
                log.info("models.map.%s: the kernel lists %s now; offered again", model_id,
                         shown(entry.spec.kernel_model))

    def _kernel_list_summary(self) -> str:
        names = sorted(self._kernel_names or ())
        if not names:
            return "the kernel lists no models"
        listed = ", ".join(shown(name, 60) for name in names[:NOT_FOUND_LIST_LIMIT])
        more = len(names) - NOT_FOUND_LIST_LIMIT
        return f"the kernel lists {listed}" + (f" and {more} more" if more > 0 else "")

    def _not_found_message(self, model_id: str) -> str:
        shown = repr(model_id if len(model_id) <= 100 else model_id[:99] + "…")
        ids = [spec.id for spec in self._models]
        if not ids:
            why = "the kernel's model list is not available yet" if self._settings.discover else "models.map is empty"
            return f"The model {shown} does not exist: aiosd exposes no models right now ({why})."
        listed = ", ".join(ids[:NOT_FOUND_LIST_LIMIT])
        more = len(ids) - NOT_FOUND_LIST_LIMIT
        if more > 0:
            listed += f" and {more} more (GET /v1/models lists them all)"
        return f"The model {shown} does not exist. Available: {listed}."

