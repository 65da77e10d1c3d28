"""One chat completion through the kernel: model, queue slot, retries, decoding, and the numbers about it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiosd.config.settings import ModelSpec
from aiosd.errors import AiosdError, KernelTextDropped
from aiosd.kernel.call import forward_query
from aiosd.kernel.retry import AttemptReport
from aiosd.service.history import Trip
from aiosd.service.metrics import status_class
from aiosd.translate.chat_request import ChatRequest
from aiosd.translate.query import KernelCall, build_kernel_call
from aiosd.translate.reply import Reply

log = logging.getLogger("aiosd.forward")


@dataclass(slots=True)
class Completion:
    reply: Reply
    model: ModelSpec
    call: KernelCall  # the call that produced the reply: what was really sent, for the usage estimate
    attempts: int
    # Seconds spent waiting on others (kernel, queue, retry waits): the rest is aiosd's own overhead.
    waiting: float


class _Forwarding:
    """The state of one request's trip to the kernel (possibly several calls, each possibly retried)."""

    def __init__(self, runtime, request: ChatRequest, request_id: str, trip: Trip | None = None) -> None:
        self.runtime = runtime
        self.trip = trip  # the status page's record of this request
        self.generation = runtime.current  # the config this request runs on, start to end
        self.request = request
        self.request_id = request_id
        self.waiting = 0.0
        config = self.generation.config
        self.deadline = time.monotonic() + config.kernel.queue_timeout + config.retry.budget + (
            config.kernel.timeout * (config.retry.max_retries + 1)
        )

    async def run(self, model: ModelSpec) -> Completion:
        agent = self.generation.config.kernel.agent_name
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
        if reply.warning:
            log.warning("request %s: model %s: %s", self.request_id, model.id, reply.warning)
        return Completion(reply, model, call, attempts, self.waiting)

    async def _call(self, content: bytes, model: ModelSpec):
        metrics = self.runtime.metrics
        trip = self.trip
        kernel_label = self.generation.config.kernel.shown_url

        def on_call(queued: float, call: float, error: BaseException | None) -> None:
            self.waiting += queued + call
            if trip is not None:
                trip.called(kernel_label, queued, call)
            metrics.queue_wait.observe(queued)
            result = "ok" if error is None else status_class(getattr(error, "kernel_status", None))
            metrics.kernel_call_duration.labels(result).observe(call)

        def on_attempt(report: AttemptReport) -> None:
            if report.outcome == "retry":
                self.runtime.retry_times.append(time.monotonic())
                metrics.retries.labels(status_class(report.status)).inc()
                metrics.retry_wait.inc(report.wait or 0.0)
                self.waiting += report.wait or 0.0
                if trip is not None:
                    trip.retrying_in(report.wait or 0.0)

        return await forward_query(
            content,
            kernel=self.generation.kernel,
            queue=self.runtime.admission if trip is None else trip.tracked(self.runtime.admission),
            policy=self.generation.retry,
            deadline=self.deadline,
            settings=self.generation.config.kernel,  # a reload mid-request does not change its limits
            # Only a log label: the retry log lines then carry the request id too.
            model=f"{model.id}, request {self.request_id}",
            on_attempt=on_attempt,
            on_call=on_call,
        )


async def complete(runtime, request: ChatRequest, request_id: str, trip: Trip | None = None) -> Completion:
    """Resolve the model and run the call; raises AiosdError subclasses for everything a client should see.
    ``trip`` (the status page's record of the request) learns its queue waits, kernel calls and retry waits."""
    model = runtime.catalog.resolve(request.model)
    try:
        return await _Forwarding(runtime, request, request_id, trip).run(model)
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
    exc.message = f"{exc.message} [{'; '.join(facts)}]"
    exc.args = (exc.message, *exc.args[1:])
