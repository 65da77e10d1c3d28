"""Builders for kernel-layer tests: kernel and retry settings, a real /query body, the kernel's answer."""

from __future__ import annotations

from typing import Any

from aiosd.config.settings import BackoffSettings, KernelSettings, RetrySettings


def kernel_settings(url: str = "http://kernel.test", **overrides) -> KernelSettings:
    values: dict[str, Any] = {
        "url": url,
        "agent_name": "openclaw",
        "timeout": 5.0,
        "connect_timeout": 1.0,
        "max_concurrency": 4,
        "queue_timeout": 5.0,
        "ready_window": 300.0,
        "probe_interval": 0.0,
        "probe_model": None,
    }
    values.update(overrides)
    return KernelSettings(**values)


def inner(status_code: int = 200, message: str | None = "Hi!", error: str | None = None) -> dict:
    return {
        "response": {
            "response_class": "llm",
            "response_message": message,
            "tool_calls": None,
            "finished": True,
            "error": error,
            "status_code": status_code,
        },
        "start_times": [],
        "end_times": [],
        "waiting_times": [],
        "turnaround_times": [],
    }


def real_body(text: str = "hello", model: str = "gpt-4o-mini") -> dict:
    return {
        "agent_name": "openclaw",
        "query_type": "llm",
        "query_data": {
            "messages": [{"role": "user", "content": text}],
            "llms": [{"name": model, "backend": "openai"}],
            "tools": [],
            "action_type": "chat",
            "message_return_type": "text",
        },
    }


def retry_settings(
    *, max_retries=3, on_status=(429,), initial=20.0, multiplier=1.0, max=60.0, jitter=0.0, budget=120.0
) -> RetrySettings:
    return RetrySettings(
        max_retries=max_retries,
        on_status=frozenset(on_status),
        backoff=BackoffSettings(initial=initial, multiplier=multiplier, max=max, jitter=jitter),
        budget=budget,
    )
