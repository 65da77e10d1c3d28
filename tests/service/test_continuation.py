"""service.continuation: the chain of calls for an answer the kernel cut (its place in the queue, its limits)."""

from __future__ import annotations

import asyncio
import json

import pytest

from aiosd.config.settings import ContinuationSettings
from aiosd.errors import KernelUnreachable
from aiosd.service import continuation
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call
from aiosd.translate.stitch import CONTINUE_INSTRUCTION
from tests.support.endpoint import chat, stack, wait_for
from tests.support.fake_kernel import CHARS_PER_TOKEN, Hang, Text
from tests.support.long_answers import prose
from tests.support.model_specs import model_spec

CAP_CHARS = 1000 * CHARS_PER_TOKEN
LONG = prose(6_000)


def _user_text(query: dict) -> str:
    messages = query["query_data"]["messages"]
    return "continue" if messages[-1]["content"] == CONTINUE_INSTRUCTION else messages[-1]["content"]


async def test_a_continuation_keeps_the_requests_place_in_the_queue(tmp_path):
    """One kernel slot; A's answer is cut. C and D arrive after A. A's continuation is served before D."""
    first_a, first_c = Hang(), Hang()
    async with stack(tmp_path, "kernel: {max_concurrency: 1}") as s:
        s.kernel.llm = lambda messages, tools, model: Text(LONG if messages[-1]["content"] == "A" else "short.")
        s.kernel.script(first_a, first_c)
        a = asyncio.ensure_future(s.client.post("/chat/completions", json=chat("A")))
        await s.kernel.wait_for_in_flight_async(1)
        c = asyncio.ensure_future(s.client.post("/chat/completions", json=chat("C")))
        await wait_for(lambda: s.runtime.scheduler.queued == 1, what="C waiting")
        d = asyncio.ensure_future(s.client.post("/chat/completions", json=chat("D")))
        await wait_for(lambda: s.runtime.scheduler.queued == 2, what="D waiting")
        first_a.release()  # A's first piece comes back cut; the slot goes to C, the oldest waiting
        await s.kernel.wait_for_queries_async(2)
        await wait_for(lambda: s.runtime.scheduler.queued == 2, what="A's continuation waiting beside D")
        first_c.release()
        answers = await asyncio.gather(a, c, d)
    assert [_user_text(q) for q in s.kernel.queries] == ["A", "C", "continue", "D"]
    assert answers[0].json()["choices"][0]["message"]["content"] == LONG
    assert answers[0].headers["x-aiosd-continuations"] == "1"


def _chain(ask, *, deadline: float = float("inf"), max_calls: int = 16, sink=None, **request):
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], **request}
    call = build_kernel_call(parse_chat_request(json.dumps(body).encode()), model_spec("m"), "openclaw")

    class _Config:  # the two sections of Config the chain reads
        kernel = type("K", (), {"answer_token_cap": 1000})()
        continuation = ContinuationSettings(max_calls=max_calls)

    return continuation.Chain(call, _Config(), ask, deadline, sink, "req_test")


def _kernel_answers(*pieces: str):
    sent: list[bytes] = []

    async def ask(content: bytes) -> tuple[dict, int]:
        sent.append(content)
        return {"response_message": pieces[len(sent) - 1]}, 1

    return ask, sent


async def test_the_chain_joins_pieces_and_tells_the_sink_what_is_certain():
    text = prose(9_000)
    ask, sent = _kernel_answers(text[CAP_CHARS:2 * CAP_CHARS], text[2 * CAP_CHARS:])
    heard: list[str] = []

    async def sink(certain: str, call) -> None:
        heard.append(certain)

    done = await _chain(ask, sink=sink).run(text[:CAP_CHARS])
    assert (done.reply.content, done.reply.finish_reason, done.calls, done.stopped) == (text, "stop", 2, None)
    assert heard == [text[:CAP_CHARS], text[: 2 * CAP_CHARS], text]
    assert done.pieces == [CAP_CHARS, CAP_CHARS, len(text) - 2 * CAP_CHARS]
    assert len(sent) == 2


async def test_a_piece_that_only_repeats_the_answer_ends_the_chain():
    text = prose(6_000)
    ask, _ = _kernel_answers(text[CAP_CHARS - 200:CAP_CHARS], "never asked")
    done = await _chain(ask).run(text[:CAP_CHARS])
    assert (done.reply.content, done.calls, done.stopped) == (text[:CAP_CHARS], 1, None)


async def test_a_failed_call_stops_the_chain_with_its_code():
    text = prose(9_000)

    async def ask(content: bytes) -> tuple[dict, int]:
        raise KernelUnreachable("the kernel is down")

    done = await _chain(ask).run(text[:CAP_CHARS])
    assert (done.reply.content, done.reply.finish_reason, done.outcome) == (text[:CAP_CHARS], "length", "failed")
    assert done.stopped == "kernel_unreachable"


@pytest.mark.parametrize("max_calls, calls", [(1, 0), (3, 2)])
async def test_max_calls_counts_the_first_call(max_calls, calls):
    text = prose(40_000)
    pieces = [text[i:i + CAP_CHARS] for i in range(CAP_CHARS, len(text), CAP_CHARS)]
    ask, sent = _kernel_answers(*pieces)
    done = await _chain(ask, max_calls=max_calls).run(text[:CAP_CHARS])
    assert (len(sent), done.stopped, done.reply.finish_reason) == (calls, "max_calls", "length")
    assert done.reply.content == text[: (calls + 1) * CAP_CHARS]


async def test_a_deadline_already_past_makes_no_call():
    ask, sent = _kernel_answers()
    done = await _chain(ask, deadline=0.0).run(prose(9_000)[:CAP_CHARS])
    assert (sent, done.stopped) == ([], "deadline")
