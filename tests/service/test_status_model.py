"""The one status model: its structs hold every key the parts report, and the closed metric label sets stay complete."""

from __future__ import annotations

import typing

import msgspec

from aiosd.cli.status import render_status
from aiosd.kernel.pool import KernelPool
from aiosd.openclaw.sync import Outcome
from aiosd.service.metrics import SYNC_RESULTS
from aiosd.service.runtime import Runtime
from aiosd.service.status_model import PoolKernelStatus, Status, from_json
from tests.support.aiosd_harness import config_for

URL = "http://127.0.0.1:9"


def fields(kind: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(kind)]


def test_every_sync_outcome_has_its_metric_series():
    assert set(SYNC_RESULTS) == set(typing.get_args(Outcome))


def test_a_pool_kernel_status_holds_every_key_the_pool_reports(tmp_path):
    config = config_for(tmp_path, URL)
    member = KernelPool(config.pool, config.health).first()
    assert fields(PoolKernelStatus) == [*member.status(), "ready", "reason"]


async def test_status_json_round_trips_through_the_model_and_renders(tmp_path):
    runtime = Runtime(config_for(tmp_path, URL))
    try:
        body = runtime.status()
        assert list(body) == fields(Status)
        model = from_json(msgspec.json.decode(msgspec.json.encode(body)))
        assert msgspec.to_builtins(model) == body
        text = render_status(model)
        assert text.splitlines()[1].startswith("config ") and f"kernel     {URL}: NOT READY" in text
    finally:
        await runtime.close()
