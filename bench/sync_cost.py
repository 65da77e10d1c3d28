"""The cost of one OpenClaw sync (``sync_openclaw`` called directly) on a 1 MB openclaw.json.

The file lists 200 aiosd models.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

from aiosd.config.settings import Config, ModelSpec
from aiosd.openclaw.merge import desired_provider
from aiosd.openclaw.sync import openclaw_api_key, sync_openclaw

MODELS = 200
TARGET_BYTES = 1_000_000


def aiosd_models(config: Config, count: int = MODELS, *, variant: str = "") -> list[ModelSpec]:
    """``count`` models as aiosd would expose them; ``variant`` changes their display names."""
    template = config.models.map[0]
    return [
        replace(template, id=f"model-{i:03d}", kernel_model=f"kernel-model-{i:03d}",
                name=f"model {i:03d}{variant} (via AIOS)")
        for i in range(count)
    ]


def _other_provider(number: int) -> dict:
    # Other providers the user keeps by hand: the bulk of a big real file.
    return {
        "baseUrl": f"https://llm-{number}.example.internal/v1",
        "apiKey": f"sk-user-provider-{number:04d}",
        "api": "openai-completions",
        "models": [
            {
                "id": f"their-model-{number}-{m}",
                "name": f"Their model {number}/{m} with a longer descriptive display name",
                "reasoning": bool(m % 2),
                "input": ["text", "image"] if m % 3 == 0 else ["text"],
                "cost": {"input": 0.15, "output": 0.6, "cacheRead": 0.075, "cacheWrite": 0.3},
                "contextWindow": 128000,
                "maxTokens": 16384,
            }
            for m in range(10)
        ],
    }


def build_file(path: Path, config: Config, models: list[ModelSpec], target_bytes: int = TARGET_BYTES) -> int:
    """Write a ~``target_bytes`` (1 MB) openclaw.json in which aiosd's provider already lists ``models``; its size."""
    base_url = config.own_base_url
    document = {
        "meta": {"lastTouchedVersion": "2026.9.6", "migrations": {"modelPolicyAllowlist": True}},
        "models": {"mode": "merge", "providers": {
            config.openclaw.provider_id: desired_provider(models, base_url, openclaw_api_key(config))}},
        "agents": {"defaults": {"models": {}, "modelPolicy": {"allow": [f"{config.openclaw.provider_id}/*"]}}},
    }
    providers = document["models"]["providers"]
    size = len(json.dumps(document, indent=2))
    number = 0
    while size < target_bytes:
        providers[f"user-provider-{number:03d}"] = provider = _other_provider(number)
        # Its size at the nesting depth it has in the file (4 levels of 2-space indent).
        size += len(json.dumps({"k": {"k": {"k": provider}}}, indent=2)) - 20
        number += 1
    text = json.dumps(document, indent=2) + "\n"
    path.write_text(text)
    return len(text.encode())


def measure(config: Config, workdir: Path, *, rounds: int, model_count: int = MODELS,
            target_bytes: int = TARGET_BYTES) -> dict:
    """Median and max milliseconds of a sync that changes nothing and of one that rewrites the file."""
    path = workdir / "openclaw" / "openclaw.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = replace(config.openclaw, config_path=str(path), sync=True)
    models = aiosd_models(config, model_count)
    size = build_file(path, config, models, target_bytes)
    api_key = openclaw_api_key(config)
    # One log line per sync is the daemon's behaviour, but not what is measured here.
    logging.getLogger("aiosd.openclaw").disabled = True
    try:
        def timed(model_list: list[ModelSpec], expected: str) -> float:
            started = time.perf_counter()
            result = sync_openclaw(settings, model_list, base_url=config.own_base_url, api_key=api_key)
            elapsed = time.perf_counter() - started
            if result.outcome != expected:
                raise RuntimeError(f"sync gave {result.outcome!r}, expected {expected!r}: {result.message}")
            return elapsed

        unchanged = [timed(models, "unchanged") for _ in range(rounds)]
        renamed = aiosd_models(config, model_count, variant=" v2")
        # Alternate the display names so every round really rewrites the file.
        changed = [timed(renamed if i % 2 == 0 else models, "written") for i in range(rounds)]
    finally:
        logging.getLogger("aiosd.openclaw").disabled = False
    return {
        "file_bytes": size,
        "models": len(models),
        "rounds": rounds,
        "unchanged_ms_median": round(statistics.median(unchanged) * 1000, 1),
        "unchanged_ms_max": round(max(unchanged) * 1000, 1),
        "changed_ms_median": round(statistics.median(changed) * 1000, 1),
        "changed_ms_max": round(max(changed) * 1000, 1),
    }
