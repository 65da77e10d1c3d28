"""End to end: the real OpenClaw CLI (2026.9.6) -> a real aiosd process -> the fake AIOS kernel.

Needs the CLI: ``bash tests/support/install_openclaw.sh`` (see tests/support/openclaw_cli.py for
where it is looked for). Without it these tests FAIL, saying so; they do not skip.

One OpenClaw gateway serves the whole module (its start costs 15-50 s: it is paid once, by the
module fixture, with one warm-up turn); each test's turns go through it with ``openclaw agent``
and take a few seconds each.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.support.long_answers import file_content
from tests.support.openclaw_cli import OpenClawStack, openclaw_stack, prompt_mode_call

# The module fixture (gateway start + warm-up turn) is charged to the first test's setup.
pytestmark = pytest.mark.timeout(420)

TURN_BUDGET = 30.0  # seconds for one `openclaw agent` turn through the running gateway

AFFINITY_HEADERS = ("session_id", "x-client-request-id", "x-session-affinity")


def _echo(messages, tools, model_name):
    from tests.support.fake_kernel import echo_llm

    return echo_llm(messages, tools, model_name)


def _add_recorded_providers(stack: OpenClawStack) -> None:
    """Provider rows whose baseUrl is the recording proxy in front of aiosd, copied from aiosd's own row
    without OpenClaw's compat.sendSessionAffinityHeaders (which aiosd writes: issue 20), then with it."""
    row = stack.model_row("sonnet")
    base = {k: v for k, v in row.get("compat", {}).items() if k != "sendSessionAffinityHeaders"}

    def provider(api: str, base_url: str, compat: dict | None = None, **more) -> dict:
        model = dict(row, compat={**base, **(compat or {})}, **more)
        return {"baseUrl": base_url, "apiKey": "aiosd-e2e", "api": api, "models": [model]}

    def change(document: dict) -> None:
        providers = document["models"]["providers"]
        providers["rec-affinity"] = provider("openai-completions", stack.proxy.url + "/v1",
                                             {"sendSessionAffinityHeaders": True})
        providers["rec-plain"] = provider("openai-completions", stack.proxy.url + "/v1")
        providers["rec-no-retention"] = provider("openai-completions", stack.proxy.url + "/v1",
                                                 {"sendSessionAffinityHeaders": True},
                                                 params={"cacheRetention": "none"})

    stack.sandbox.update_config(change)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    holder = {"llm": _echo}
    with openclaw_stack(tmp_path_factory.mktemp("openclaw-e2e"),
                        llm=lambda *args: holder["llm"](*args),
                        configure=_add_recorded_providers) as running:
        running.extra["llm"] = holder
        # The gateway loads its agent runtime on the first turn (15-30 s): pay it here, once.
        warm = running.sandbox.agent("warm up", model="aios/sonnet", session_id="warm-up")
        assert warm.ok, warm.describe()
        yield running


@pytest.fixture
def llm(stack):
    """Set what the fake kernel's LLM answers for this test (``llm(callable)``); echo afterwards."""
    holder = stack.extra["llm"]
    yield lambda fn: holder.__setitem__("llm", fn)
    holder["llm"] = _echo


def test_a_plain_text_turn_through_aiosd(stack, llm):
    nonce = uuid.uuid4().hex[:12]
    asked = []

    def answer(messages, tools, model_name):
        asked.append(messages)
        return f"the fake kernel answers {nonce}"

    llm(answer)
    stack.kernel.reset_counters()
    turn = stack.sandbox.agent(f"say {nonce}", model="aios/sonnet", session_id=f"plain-{nonce}")

    assert turn.ok, turn.describe()
    assert turn.text == f"the fake kernel answers {nonce}"
    assert turn.seconds < TURN_BUDGET, turn.describe()
    # The kernel got OpenClaw's turn: a system prompt and the user's message, via aiosd.
    assert len(asked) == 1
    texts = [m.get("content") if isinstance(m.get("content"), str) else str(m.get("content")) for m in asked[0]]
    assert any(f"say {nonce}" in text for text in texts), texts
    assert asked[0][0]["role"] == "system"


def _affinity_headers(stack: OpenClawStack, model: str, session_key: str) -> dict[str, str | None]:
    stack.proxy.clear()
    turn = stack.sandbox.agent("hello", model=model, session_key=session_key)
    assert turn.ok, turn.describe()
    assert turn.seconds < TURN_BUDGET, turn.describe()
    calls = stack.proxy.matching("/v1/chat/completions")
    assert len(calls) == 1, [(r.method, r.path) for r in stack.proxy.requests]
    return {name: calls[0].header(name) for name in AFFINITY_HEADERS}


def test_openclaw_sends_session_affinity_headers_when_the_model_row_asks(stack):
    """Documents OpenClaw 2026.9.6 (issue 20): with compat.sendSessionAffinityHeaders on an
    openai-completions model row, each /v1/chat/completions carries session_id,
    x-client-request-id and x-session-affinity, one value "<uuid>:0", one uuid per session."""
    first = _affinity_headers(stack, "rec-affinity/sonnet", "agent:main:e2e-affinity-a")
    second = _affinity_headers(stack, "rec-affinity/sonnet", "agent:main:e2e-affinity-b")

    for seen in (first, second):
        assert len(set(seen.values())) == 1, seen  # the three headers carry one value
        uuid_0 = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:0"
        assert re.fullmatch(uuid_0, seen["session_id"] or ""), seen
    assert first["session_id"] != second["session_id"]  # two sessions, two values

    # The same row without the compat flag: none of them.
    plain = _affinity_headers(stack, "rec-plain/sonnet", "agent:main:e2e-affinity-a")
    assert plain == dict.fromkeys(AFFINITY_HEADERS), plain
    # Observed in 2026.9.6 (the README says so): the model's params.cacheRetention "none" does not stop them.
    no_retention = _affinity_headers(stack, "rec-no-retention/sonnet", "agent:main:e2e-affinity-a")
    assert no_retention == first, no_retention


def test_aiosds_own_rows_ask_for_the_session_and_two_session_keys_are_two_sessions_in_aiosd(stack):
    """Issue 20: the rows aiosd writes carry compat.sendSessionAffinityHeaders, so OpenClaw names the
    conversation of each call; aiosd logs it short (a keyed hash, never the id) and keeps one state each."""
    assert stack.model_row("sonnet")["compat"]["sendSessionAffinityHeaders"] is True
    turns = [stack.sandbox.agent("hello", model="aios/sonnet", session_key=key)
             for key in ("agent:main:e2e-sessions-a", "agent:main:e2e-sessions-b", "agent:main:e2e-sessions-a")]
    for turn in turns:
        assert turn.ok, turn.describe()
        assert turn.seconds < TURN_BUDGET, turn.describe()
    answered = [line for line in stack.aiosd.stderr_lines() if "answered in" in line]
    shorts = [m.group(1) for line in answered[-3:] if (m := re.search(r", session ([0-9a-f]{8})\)", line))]
    assert len(shorts) == 3, answered[-3:]
    assert shorts[0] == shorts[2] != shorts[1]  # one session per --session-key, the same on a later turn
    status = httpx.get(stack.aiosd_url + "/status", timeout=10).json()
    active = {s["key"]: s["sessions_active"] for c in status["classes"] for s in c["keys"]}
    assert sum(active.values()) >= 2, status["sessions"]


def test_an_agent_writes_a_12_kb_file_the_kernel_cut_into_pieces(stack, llm):
    """The model's write call is three times the kernel's 1000-token cap: aiosd continues and joins
    it, OpenClaw gets one tool call and writes the file byte for byte (issue 17)."""
    nonce = uuid.uuid4().hex[:12]
    name = f"long-{nonce}.txt"
    content = file_content(12_288)
    call = prompt_mode_call("write", path=name, content=content)
    assert len(call) > 3 * 4000  # four pieces from the fake kernel, which cuts at 4000 characters

    def answer(messages, tools, model_name):
        if any(m["role"] == "user" and str(m["content"]).startswith("<function_results>") for m in messages):
            return f"I wrote {name}."
        return call

    llm(answer)
    stack.kernel.reset_counters()
    turn = stack.sandbox.agent(f"write the long file {nonce}", model="aios/sonnet", session_id=f"long-{nonce}")

    assert turn.ok, turn.describe()
    written = stack.sandbox.workspace / name
    assert written.read_bytes() == content.encode("utf-8")
    assert turn.text == f"I wrote {name}."
    assert stack.kernel.query_count == 5  # four pieces of the write call, then the answer after it
