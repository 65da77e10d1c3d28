"""Readiness as a pure read on a hand-moved clock, the watch that logs its changes once, and the
config generations: no sockets, no sleeps."""

from __future__ import annotations

import dataclasses
import logging

from aiosd.kernel.pool import KernelPool
from aiosd.models.catalog import RefreshResult
from aiosd.service.generations import ConfigGenerations
from aiosd.service.readiness import (
    Readiness,
    ReadinessWatch,
    kernel_readiness,
    next_expiry,
    pool_readiness,
)
from tests.support.aiosd_harness import config_for

URL = "http://127.0.0.1:9"


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_of_one(tmp_path, clock: Clock) -> KernelPool:
    config = config_for(tmp_path, URL)
    return KernelPool(config.pool, config.health, clock=clock)


def test_a_kernel_is_ready_inside_the_window_and_not_after_it(tmp_path):
    clock = Clock()
    member = pool_of_one(tmp_path, clock).first()
    assert kernel_readiness(member, 5.0, clock()) == Readiness(False, f"the kernel at {URL} has not answered yet")
    member.client.last_success_at = clock.now
    clock.now += 5.0
    assert kernel_readiness(member, 5.0, clock()).ready  # the window's last moment still counts
    clock.now += 0.5
    late = kernel_readiness(member, 5.0, clock())
    assert not late.ready and late.reason == f"the kernel at {URL} has not answered for 5.5s (ready_window 5s)"


def test_a_failure_newer_than_the_last_answer_makes_it_unready_at_once(tmp_path):
    clock = Clock()
    member = pool_of_one(tmp_path, clock).first()
    member.client.last_success_at = clock.now
    clock.now += 1.0
    member.client.last_failure_at, member.client.last_failure = clock.now, "unreachable"
    clock.now += 0.25
    state = kernel_readiness(member, 300.0, clock())
    assert state == Readiness(False, f"the kernel at {URL} failed 0.2s ago: unreachable (last answer 1.2s ago)")


def test_a_failed_model_list_after_the_last_answer_makes_the_pool_unready(tmp_path):
    clock = Clock()
    pool = pool_of_one(tmp_path, clock)
    pool.first().client.last_success_at = clock.now
    failed = RefreshResult(ok=False, message="too deeply nested", at=0.0, at_monotonic=clock.now + 1)
    clock.now += 3
    assert pool_readiness(list(pool), None, 300.0, clock()).ready
    state = pool_readiness(list(pool), failed, 300.0, clock())
    assert state == Readiness(False, "the kernel's model list could not be read 2.0s ago: too deeply nested")


def test_reading_readiness_changes_nothing_and_logs_nothing(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    pool = pool_of_one(tmp_path, clock)
    pool.first().client.last_success_at = clock.now
    first = [pool_readiness(list(pool), None, 5.0, clock()) for _ in range(3)]
    clock.now += 6
    later = [pool_readiness(list(pool), None, 5.0, clock()) for _ in range(3)]
    assert {s.ready for s in first} == {True} and {s.ready for s in later} == {False}
    assert caplog.records == []


def test_next_expiry_is_when_the_newest_answer_leaves_the_window(tmp_path):
    clock = Clock()
    member = pool_of_one(tmp_path, clock).first()
    assert next_expiry([member], 5.0, clock()) is None
    member.client.last_success_at = clock.now
    clock.now += 2
    assert next_expiry([member], 5.0, clock()) == 3.0
    clock.now += 4
    assert next_expiry([member], 5.0, clock()) is None


def test_the_watch_logs_the_first_ready_and_each_turn_once(caplog):
    caplog.set_level(logging.INFO, logger="aiosd.runtime")
    watch = ReadinessWatch()
    unready = Readiness(False, "the kernel has not answered yet")
    seen = [watch.observe(state, single_kernel=True, window=5.0)
            for state in (unready, unready, Readiness(True, "ok"), Readiness(True, "ok"), unready, unready)]
    assert seen == [False, False, True, False, True, False]
    assert [r.getMessage() for r in caplog.records] == [
        "kernel ready: it answered within the last 5s", "kernel not ready: the kernel has not answered yet"]


def test_a_pool_reports_which_kernels_are_not_ready(tmp_path):
    clock = Clock()
    config = config_for(tmp_path, URL, f'kernels: [{{name: a, url: "{URL}"}}, {{name: b, url: "{URL}"}}]')
    pool = KernelPool(config.pool, config.health, clock=clock)
    pool.members["a"].client.last_success_at = clock.now
    state = pool_readiness(list(pool), None, 5.0, clock())
    assert state.ready and state.reason == f"ok: 1 of 2 kernels ready; b: the kernel at {URL} has not answered yet"
    pool.members["a"].client.last_failure_at = clock.now
    pool.members["a"].client.last_failure = "refused"
    assert pool_readiness(list(pool), None, 5.0, clock()).reason.startswith("none of the 2 kernels is ready: a: ")


def test_generations_count_up_and_keep_the_bound_address(tmp_path):
    config = config_for(tmp_path, URL)
    times = iter([10.0, 20.0])
    generations = ConfigGenerations(config, wall_clock=lambda: next(times))
    moved = dataclasses.replace(config, listen_host="127.0.0.2")
    generation, notes = generations.next(moved)
    assert generation.number == 2 and generations.current is generation
    assert generation.config.listen_host == config.listen_host  # the socket stays where it was bound
    assert generations.pending_listen == moved.listen and "needs a restart" in notes[0]
    generations.record_reload(ok=True)
    assert generations.applied_at == 20.0
    assert generations.next(config)[1] == [] and generations.pending_listen is None


def test_a_refused_reload_is_kept_as_the_last_refusal(tmp_path):
    generations = ConfigGenerations(config_for(tmp_path, URL))
    refused = object()
    generations.last_reload = refused  # type: ignore[assignment]  # any record will do here
    generations.record_reload(ok=False)
    assert generations.last_refused_reload is refused

