"""The optional canary /query that proves the kernel's scheduler works when no real traffic does."""

from __future__ import annotations

import logging

from aiosd.errors import AiosdError

log = logging.getLogger("aiosd.canary")


async def run_canary(runtime) -> bool:
    """Ask the kernel one tiny question; a reply (even an error inside HTTP 200) proves it schedules."""
    config = runtime.config
    models = runtime.catalog.models()
    kernel_model = config.kernel.probe_model or (models[0].kernel_model if models else None)
    body = {
        "agent_name": config.kernel.agent_name,
        "query_type": "llm",
        "query_data": {
            "messages": [{"role": "user", "content": "Reply with the single word: ok"}],
            "tools": [],
            "action_type": "chat",
            "message_return_type": "text",
        },
    }
    if kernel_model:
        body["query_data"]["llms"] = [{"name": kernel_model}]
    try:
        await runtime.kernel.query(body, timeout=min(config.kernel.timeout, 60.0))
    except AiosdError as exc:
        # An error *inside* HTTP 200 still proves the scheduler ran the call; the client recorded that.
        answered = runtime.kernel.answered_within(1.0)
        log.log(logging.INFO if answered else logging.WARNING,
                "kernel canary (%s): %s", kernel_model or "kernel's first model", exc.message)
        return answered
    log.debug("kernel canary (%s) answered", kernel_model)
    return True
