"""Which event loops a test module's async tests run on: both the daemon's (uvloop) and asyncio's, or asyncio's only."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

ASYNCIO_ONLY = {"asyncio": asyncio.new_event_loop}
BOTH_LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def loops_for(item: pytest.Item, modules_on_both: tuple[str, ...]) -> dict[str, object]:
    """Loop factories for ``item`` (pytest-asyncio's ``pytest_asyncio_loop_factories``): both loops for a
    test in one of ``modules_on_both`` (module names' last part), else asyncio's."""
    module = getattr(item, "module", None)
    if module is not None and module.__name__.rpartition(".")[2] in modules_on_both:
        return BOTH_LOOPS
    return ASYNCIO_ONLY
