"""Continuing an answer the kernel cut at its token cap: the chain of further calls, and its outcome.

``first_cut`` tells (cheaply: most answers are short) whether the first kernel answer was cut;
``Chain.run`` asks the kernel for the rest, piece after piece, through the same call path as the
first call (``ask``: the scheduler with the request's key, class and place, failover, the retry
policy, the request's deadline), joins the pieces (``translate.stitch``) and parses the joined
text once. It ends when a piece was not cut, the model says there is nothing more, or a limit is
reached: the client's ``max_tokens``, ``continuation.max_calls``, the deadline, the size aiosd
parses, or a call that failed; then the answer is what was certain, with ``finish_reason: "length"``.

What does not live here: the text rules (``translate.stitch``), the HTTP answer (``api``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from aiosd.config.settings import Config
from aiosd.errors import AiosdError
from aiosd.translate import stitch, tool_prompt
from aiosd.translate.query import KernelCall
from aiosd.translate.reply import Reply

log = logging.getLogger("aiosd.forward")

# (a /query body) -> (the kernel's response object, kernel calls made); raises AiosdError.
Ask = Callable[[bytes], Awaitable[tuple[dict, int]]]
# Hears the text that is final so far (a prefix of the answer's content) after every piece, and the call.
CertainSink = Callable[[str, KernelCall], Awaitable[None]]

# How a chain ended, as counted in /metrics (a kernel error's own code is said in the header and log).
OUTCOMES = ("complete", "max_tokens", "max_calls", "deadline", "max_size", "failed")

clock: Callable[[], float] = time.monotonic  # the chain's deadline checks (tests move it)


def first_cut(response: dict, reply: Reply, call: KernelCall, config: Config) -> str | None:
    """The first piece's text when the kernel cut it and continuing is on, else None."""
    if call.tool_mode == "native" or not config.continuation.enabled:
        return None
    text = response.get("response_message")
    if not isinstance(text, str):
        return None
    cap = config.kernel.answer_token_cap
    ends_in_invoke = reply.finish_reason == "length"  # prompt mode: the parser found a cut invoke
    if not ends_in_invoke and not stitch.near_cap(text, cap):
        return None  # the common case, decided on the length alone
    block_open = call.tool_mode == "prompt" and stitch.open_block_at(text, 0, None) is not None
    return text if stitch.verdict(text, ends_in_invoke=ends_in_invoke, block_open=block_open, cap_tokens=cap) else None


@dataclass(slots=True)
class Continued:
    """A continued answer: the joined reply and how the chain went."""

    reply: Reply
    calls: int = 0  # continuation calls made (X-Aiosd-Continuations)
    attempts: int = 0  # kernel calls they took, retries and failovers included
    pieces: list[int] = field(default_factory=list)  # characters of each piece as the kernel sent it
    outcome: str = "complete"  # one of OUTCOMES
    stopped: str | None = None  # why the answer ended still cut: a limit, or the failed call's error code
    detail: str = ""  # the failed call's message, for the log


@dataclass
class Chain:
    """One answer's continuation (see the module docstring)."""

    call: KernelCall
    config: Config
    ask: Ask
    deadline: float
    sink: CertainSink | None = None
    request_label: str = ""
    _block: int | None = None  # where the <function_calls> block open at the answer's end starts

    async def run(self, first: str) -> Continued:
        started = clock()
        answer = first
        result = Continued(Reply(first), pieces=[len(first)])
        mode = self.call.tool_mode
        limit = self.call.request.max_output_tokens
        if mode == "prompt":
            self._block = stitch.open_block_at(first, 0, None)
        await self._emit(answer, mode, limit)
        while True:
            result.stopped = self._limit_reached(answer, limit, result)
            if result.stopped is not None:
                result.outcome = result.stopped
                break
            body = stitch.continuation_body(self.call.content, answer)
            try:
                response, attempts = await self.ask(body)
                result.attempts += attempts
                piece = self._piece_call().decode(response).content or ""
            except AiosdError as exc:
                result.attempts += getattr(exc, "attempts", 0) or 0
                past = clock() >= self.deadline
                result.outcome = "deadline" if past else "failed"
                result.stopped = "deadline" if past else exc.code
                result.detail = exc.message
                break
            finally:
                result.calls += 1
            result.pieces.append(len(piece))
            joined = stitch.join_piece(answer, piece, self._block)
            if joined.ended or not joined.added:
                break  # nothing more (or only what was already there): the answer is complete
            start, answer = len(answer), answer + joined.added
            if mode == "prompt":
                self._block = stitch.open_block_at(answer, start, self._block)
            await self._emit(answer, mode, limit)
            if not stitch.likely_cut(piece, answer, block_open=self._block is not None,
                                     cap_tokens=self.config.kernel.answer_token_cap):
                break
        result.reply = self._final_reply(answer, limit, result)
        self._log(result, len(answer), clock() - started)
        return result

    def _limit_reached(self, answer: str, limit: int | None, result: Continued) -> str | None:
        if limit is not None and stitch.estimated_tokens(answer) >= limit:
            return "max_tokens"
        if 1 + result.calls >= self.config.continuation.max_calls:
            return "max_calls"
        if len(answer) >= tool_prompt.MAX_PARSED_REPLY_CHARS:
            return "max_size"
        if clock() >= self.deadline:
            return "deadline"
        return None

    def _piece_call(self) -> KernelCall:
        """A continuation's answer is read as plain text: only the joined answer is parsed for tool calls."""
        return replace(self.call, tool_mode="none")

    async def _emit(self, answer: str, mode: str, limit: int | None) -> None:
        if self.sink is not None:
            shown = answer if limit is None else stitch.trim_to_tokens(answer, limit)
            await self.sink(stitch.certain_prefix(shown, mode), self.call)

    def _final_reply(self, answer: str, limit: int | None, result: Continued) -> Reply:
        if limit is not None and stitch.estimated_tokens(answer) > limit:
            answer = stitch.trim_to_tokens(answer, limit)
            result.outcome = result.stopped = "max_tokens"
        if result.stopped is not None:
            certain = stitch.certain_prefix(answer, self.call.tool_mode)
            return Reply(certain, finish_reason="length", generated_chars=len(answer))
        return self.call.decode({"response_message": answer})

    def _log(self, result: Continued, size: int, took: float) -> None:
        pieces = stitch.pieces_summary(result.pieces)
        if result.stopped is None:
            log.info("request %s: answer continued: %d pieces (%s characters from the kernel, %d joined) in %.2fs",
                     self.request_label, len(result.pieces), pieces, size, took)
            return
        why = {
            "max_tokens": "the client's max_tokens was reached",
            "max_calls": f"continuation.max_calls ({self.config.continuation.max_calls}) was reached",
            "max_size": f"the answer reached {tool_prompt.MAX_PARSED_REPLY_CHARS} characters",
            "deadline": "the request's deadline passed",
        }.get(result.stopped, f"a continuation call failed: {result.detail}")
        log.warning("request %s: answer continued: %d pieces (%s characters from the kernel, %d joined) in %.2fs; "
                    "still cut, returned with finish length: %s", self.request_label, len(result.pieces), pieces,
                    size, took, why)
