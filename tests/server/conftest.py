"""The server tests' event loops: the connection layer's in-process tests run on asyncio's loop and on uvloop (the
daemon's), since its flow control, half-closes and timers drive the loop's transports; the rest on asyncio's."""

from __future__ import annotations

import pytest

from tests.support.event_loops import loops_for


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    return loops_for(item, ("test_connection_bounds",))
