"""A stand-in for the kernel's model list, and shorthands for building and reading a ModelCatalog in tests."""

from __future__ import annotations

import asyncio

from aiosd.config.settings import ModelSettings, ModelSpec
from aiosd.models.catalog import ModelCatalog
from tests.support.model_specs import DEFAULTS


def model_settings(*map_entries: ModelSpec, discover: bool = True, refresh_interval: float = 60.0) -> ModelSettings:
    return ModelSettings(discover=discover, refresh_interval=refresh_interval, defaults=DEFAULTS,
                         map=tuple(map_entries))


class FakeLister:
    """Stands in for KernelClient.list_llms: answers with `models` or raises `error`."""

    def __init__(self, models: list[dict] | None = None, error: Exception | None = None) -> None:
        self.models = models or []
        self.error = error
        self.calls = 0
        self.called = asyncio.Event()

    async def list_llms(self) -> list[dict]:
        self.calls += 1
        self.called.set()
        if self.error is not None:
            raise self.error
        return [dict(m) for m in self.models]


def ids(catalog: ModelCatalog) -> list[str]:
    return [spec.id for spec in catalog.models()]
