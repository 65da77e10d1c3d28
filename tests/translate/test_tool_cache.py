"""The caches of decoded tool lists and rendered <tools> blocks: OpenClaw's list is reused, nothing else stays."""

from __future__ import annotations

import gc
import json
import tracemalloc

from aiosd.translate import chat_request, tool_prompt
from aiosd.translate.chat_request import parse_chat_request
from tests.support.chat_fixtures import body, openclaw_tools
from tests.support.endpoint import chat, stack


def big_tools(tag: str, megabytes: float) -> list[dict]:
    """A distinct tools list of about ``megabytes`` of JSON."""
    count = max(1, int(megabytes * 1024 * 1024 / 12_100))
    return [{"type": "function", "function": {"name": f"t{tag}_{k}", "description": f"{tag} {k} " + "x" * 12_000,
                                              "parameters": {"type": "object"}}} for k in range(count)]


async def test_huge_tool_lists_sent_to_an_unknown_model_leave_nothing_behind(tmp_path):
    """Issue 18 item 5: distinct 1 MB tools lists refused with 404 are not kept (main kept 16 of them,
    raw and decoded: 905 MB for 24 MB lists)."""
    async with stack(tmp_path) as s:
        await s.client.post("/chat/completions", json=chat())  # everything a first request sets up
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(6):
                payload = {**chat(), "model": "no-such-model", "tools": big_tools(str(i), 1.0)}
                response = await s.client.post("/chat/completions", content=json.dumps(payload),
                                               headers={"content-type": "application/json"})
                assert response.status_code == 404
                del payload, response
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert held < 2 * 1024 * 1024, f"{held / 2**20:.1f} MB still held after six refused 1 MB tools lists"


def test_openclaws_tools_are_decoded_once_seen_twice_and_rendered_once():
    """Issue 18 item 5: the byte bound keeps what it is for: OpenClaw's same list every turn costs nothing."""
    text = body([{"role": "user", "content": "x"}], tools=openclaw_tools())
    first, second, third = (parse_chat_request(text) for _ in range(3))
    assert second.tools is third.tools and first.tools == second.tools
    assert tool_prompt.render_tool_instructions(second) is tool_prompt.render_tool_instructions(third)
    block = tool_prompt._tools_block(third.tools or ())
    assert tool_prompt._tools_block(third.tools or ()) is block


def test_a_tools_list_over_the_entry_bound_is_never_cached():
    """Issue 18 item 5: a list larger than an entry may be is decoded for its request only."""
    tools = big_tools("entry", chat_request.TOOLS_CACHE_ENTRY_BYTES / 2**20 * 1.5)
    text = body([{"role": "user", "content": "x"}], tools=tools)
    parsed = [parse_chat_request(text) for _ in range(3)]
    assert parsed[1].tools is not parsed[2].tools
    assert chat_request._TOOLS_CACHE.size <= chat_request.TOOLS_CACHE_BYTES
    tool_prompt.render_tool_instructions(parsed[2])
    assert tool_prompt._BLOCKS.get(id(parsed[2].tools)) is None


def test_the_byte_bounded_cache_evicts_the_least_recently_used_to_fit():
    from aiosd.translate.byte_cache import ByteBoundedCache

    cache: ByteBoundedCache[str, str] = ByteBoundedCache(max_entries=3, max_bytes=100, max_entry_bytes=60)
    assert cache.put("a", "A", 40) and cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # now "b" is the oldest
    assert cache.put("c", "C", 30)  # 110 > 100: "b" goes
    assert (cache.get("a"), cache.get("b"), cache.get("c"), cache.size) == ("A", None, "C", 70)
    assert not cache.put("d", "D", 61) and cache.get("d") is None
    assert cache.put("e", "E", 10) and cache.put("f", "F", 10)  # four entries > 3: the oldest ("a") goes
    assert cache.get("a") is None and len(cache) == 3 and cache.size == 50
