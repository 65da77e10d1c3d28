"""One chat completion through the kernel: model, queue slot, retries, decoding, and the numbers about it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiosd.config.settings import ClientKey, ModelSpec
from aiosd.errors import AiosdError, KernelTextDropped
from aiosd.kernel.call import forward_query
from aiosd.kernel.retry import AttemptReport
from aiosd.service import continuation
from aiosd.service.continuation import CertainSink
from aiosd.service.history import Phase, Trip
from aiosd.service.metrics import status_class
from aiosd.translate.chat_request import ChatRequest
from aiosd.translate.query import KernelCall, build_kernel_call
from aiosd.translate.reply import Reply

if TYPE_CHECKING:  # the runtime imports nothing from here; the type only
    from aiosd.service.runtime import Runtime

log = logging.getLogger("aiosd.forward")


@dataclass(slots=True)
class Completion:
    reply: Reply
    model: ModelSpec
    call: KernelCall  # the call that produced the reply: what was really sent, for the usage estimate
    attempts: int
    # Seconds spent waiting on others (kernel, queue, retry waits): the rest is aiosd's own overhead.
    waiting: float
    kernels: list[str]  # the pool kernel of each call, in order (X-Aiosd-Kernels)
    session: str | None = None  # the session's short form (8 hex characters), None without a session id
    continuations: int = 0  # further calls for an answer the kernel cut (X-Aiosd-Continuations)
    stopped: str | None = None  # why a continued answer ended still cut (X-Aiosd-Continuation-Stopped)


class _Forwarding:
    """The state of one request's trip to the kernel (possibly several calls, each possibly retried)."""

    def __init__(self, runtime: Runtime, request: ChatRequest, request_id: str, client: ClientKey,
                 priority_header: str | None, trip: Trip | None = None, session_id: str | None = None,
                 sink: CertainSink | None = None) -> None:
        self.runtime = runtime
        self.trip = trip  # the status page's record of this request
        self.generation = runtime.current  # the config this request runs on, start to end
        self.request = request
        self.request_id = request_id
        self.client = client
        self.priority_header = priority_header
        self.sink = sink  # a stream's: hears the certain text of a continued answer piece by piece
        self.first_queued: float | None = None  # when the request first asked for a slot
        self.waiting = 0.0
        self.kernels: list[str] = []
        scheduler = runtime.scheduler
        self.key = scheduler.key_state(client)
        self.session = scheduler.session(self.key, session_id)
        self.short = self.session.short if self.session.tracked else None
        if trip is not None and self.short is not None:
            trip.session = self.short
        config = self.generation.config
        # Every retry may take a whole kernel call, and a failover one more per other kernel.
        calls = config.retry.max_retries + len(config.pool)
        self.deadline = time.monotonic() + config.kernel.queue_timeout + config.retry.budget + (
            config.kernel.timeout * calls
        )

    async def run(self, model: ModelSpec) -> Completion:
        kernel_settings = self.generation.config.kernel
        agent = kernel_settings.agent_name
        if kernel_settings.agent_name_per_key:
            agent = f"{agent}.{self.client.name}"
        if kernel_settings.agent_name_per_session and self.short is not None:
            agent = f"{agent}.{self.short}"
        call = build_kernel_call(self.request, model, agent)
        if call.note:
            log.info("request %s: model %s: %s", self.request_id, model.id, call.note)
        response, attempts = await self._call(call.content, model)
        try:
            reply = call.decode(response)
        except KernelTextDropped as exc:
            if model.on_text_dropped != "retry_without_tools":
                exc.attempts = attempts
                raise
            log.warning(
                "request %s: model %s: the kernel dropped the answer (native tools); asking again without "
                "tools (set models.map.%s.on_text_dropped: error to fail instead)",
                self.request_id, model.id, model.id,
            )
            call = build_kernel_call(self.request, model, agent, tool_mode_override="none")
            response, more = await self._call(call.content, model)
            attempts += more
            reply = call.decode(response)
        cut = continuation.first_cut(response, reply, call, self.generation.config)
        if cut is not None:
            return await self._continue(call, model, cut, attempts)
        if reply.warning:
            log.warning("request %s: model %s: %s", self.request_id, model.id, reply.warning)
        return Completion(reply, model, call, attempts, self.waiting, self.kernels, self.short)

    async def _continue(self, call: KernelCall, model: ModelSpec, first: str, attempts: int) -> Completion:
        """The answer the kernel cut, continued (``service.continuation``) and joined."""

        async def ask(content: bytes) -> tuple[dict[str, Any], int]:
            return await self._call(content, model, continuing=True)

        chain = continuation.Chain(call, self.generation.config, ask, self.deadline, self.sink,
                                   f"{self.request_id}: model {model.id}")
        done = await chain.run(first)
        metrics = self.runtime.metrics
        metrics.continued.labels(done.outcome if done.outcome in continuation.OUTCOMES else "failed").inc()
        metrics.continuation_calls.inc(done.calls)
        if self.trip is not None:
            self.trip.pieces = len(done.pieces)
        reply = done.reply
        if reply.warning:
            log.warning("request %s: model %s: %s", self.request_id, model.id, reply.warning)
        return Completion(reply, model, call, attempts + done.attempts, self.waiting, self.kernels,
                          continuations=done.calls, stopped=done.stopped)

    async def _call(self, content: bytes, model: ModelSpec, *, continuing: bool = False) -> tuple[dict[str, Any], int]:
        metrics = self.runtime.metrics
        trip = self.trip

        def on_call(queued: float, call: float, error: BaseException | None, kernel: str) -> None:
            self.waiting += queued + call
            if trip is not None:
                trip.called(kernel, queued, call)
            metrics.queue_wait.observe(queued)
            result = "ok" if error is None else status_class(getattr(error, "kernel_status", None))
            metrics.kernel_call_duration.labels(result).observe(call)
            self.runtime.kernel_call_done(error is not None)

        def on_attempt(report: AttemptReport) -> None:
            if report.outcome == "retry":
                self.runtime.retry_times.append(time.monotonic())
                metrics.retries.labels(status_class(report.status)).inc()
                metrics.retry_wait.inc(report.wait or 0.0)
                self.waiting += report.wait or 0.0
                if trip is not None:
                    trip.retrying_in(report.wait or 0.0)

        def on_phase(phase: str) -> None:
            # The status page's phases: waiting for a slot, at a kernel, between calls.
            assert trip is not None  # passed only with a trip
            if phase == "calling":
                trip.attempts += 1
            trip.set_phase(cast(Phase, phase))

        scheduler = self.runtime.scheduler
        key = self.key
        level = scheduler.class_level(self.client.priority, model.priority, self.priority_header)
        if trip is not None:
            trip.key, trip.klass = self.client.name, scheduler.settings.classes[level]
        try:
            result = await forward_query(
                content,
                scheduler=scheduler,
                kernel_model=model.kernel_model,
                key=key,
                level=level,
                policy=self.generation.retry,
                deadline=self.deadline,
                settings=self.generation.config.kernel,  # a reload mid-request does not change its limits
                # Only a log label: the retry log lines then carry the request id too.
                model=f"{model.id}, request {self.request_id}",
                on_attempt=on_attempt,
                on_call=on_call,
                on_phase=None if trip is None else on_phase,
                session=self.session,
                since=self.first_queued if continuing else None,  # a continuation keeps the request's place
            )
        except AiosdError as exc:
            self.kernels.extend(exc.kernels)
            exc.kernels = tuple(self.kernels)
            raise
        self.kernels.extend(result.kernels)
        if self.first_queued is None:
            self.first_queued = result.first_queued
        return result.response, result.attempts


async def complete(runtime: Runtime, request: ChatRequest, request_id: str, *, key_index: int | None = None,
                   headers: Iterable[tuple[bytes, bytes]] = (), trip: Trip | None = None,
                   session_id: str | None = None, sink: CertainSink | None = None) -> Completion:
    """Resolve the model and run the call; raises AiosdError subclasses for everything a client should see.

    ``key_index``: which of ``auth.keys`` the request presented (None: auth off), for its scheduler
    class, share and limits; ``headers`` (ASGI pairs) may carry ``scheduler.priority_header``.
    ``trip`` (the status page's record of the request) learns its key and class, queue waits,
    kernel calls and retry waits. ``session_id`` (checked by the API layer) names the conversation.
    kernel calls and retry waits. ``sink`` (a stream's) hears the final text of an answer the kernel
    cut as each piece arrives (``service.continuation``); it is never called for an answer that was not cut.
    """
    model = runtime.catalog.resolve(request.model)
    config = runtime.config
    client = config.auth.client_at(key_index)
    wanted = config.scheduler.priority_header.encode()
    header = None
    for name, value in headers:
        if name == wanted:
            header = value[:64].decode("latin-1")
            break
    try:
        return await _Forwarding(runtime, request, request_id, client, header, trip, session_id, sink).run(model)
    except AiosdError as exc:
        exc.model_id = model.id  # a known id: safe as a metrics label
        _add_context(exc, model)
        raise


def _add_context(exc: AiosdError, model: ModelSpec) -> None:
    """Append what aiosd knows to the kernel's generic sentence: which model, how many attempts."""
    attempts = getattr(exc, "attempts", None)
    facts = [f"model {model.id!r} (kernel model {model.kernel_model!r})"]
    if attempts and "attempt" not in exc.message:
        facts.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    kernels = getattr(exc, "kernels", None)
    if kernels and len(set(kernels)) > 1:
        facts.append(f"kernels tried: {', '.join(kernels)}")
    exc.message = f"{exc.message} [{'; '.join(facts)}]"
    exc.args = (exc.message, *exc.args[1:])
