"""The kernel tests' event loops: the lean wire's run on asyncio's and on uvloop (the daemon's), the rest on asyncio's.

Why both for the lean wire: it drives transports itself, and uvloop's differ from asyncio's (they do not
subclass asyncio.Transport, and connection_made may run after create_connection returns).
"""

from __future__ import annotations

import pytest

from tests.support.event_loops import loops_for


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    return loops_for(item, ("test_lean_wire",))
