"""The kernel tests' event loops: the lean wire's run on asyncio's and on uvloop (the daemon's), the rest on asyncio's.

Why both for the lean wire: it drives transports itself, and uvloop's differ from asyncio's (they do not
subclass asyncio.Transport, and connection_made may run after create_connection returns).
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

BOTH_LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    if getattr(item, "module", None) is not None and item.module.__name__.endswith(".test_lean_wire"):
        return BOTH_LOOPS
    return {"asyncio": asyncio.new_event_loop}
