"""The server tests' event loops: the connection layer's in-process tests run on asyncio's loop and on uvloop (the
daemon's), since its flow control, half-closes and timers drive the loop's transports; the rest on asyncio's."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

BOTH_LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    if getattr(item, "module", None) is not None and item.module.__name__.endswith(".test_connection_bounds"):
        return BOTH_LOOPS
    return {"asyncio": asyncio.new_event_loop}
