"""The pool benchmark (issue 12): fake kernels like the real one (about 1 s per call, 6 slots each) behind one aiosd.

    python3 bench/pool.py            # about 2 minutes
    python3 bench/pool.py --quick    # about 30 s: checks the harness (figures are rougher)

Measures, each against its target: throughput with 1, 2 and 3 kernels (>= 0.9 x N times one
kernel), slot utilisation under saturation with 3 kernels (>= 95%: the share of the kernels' slots
busy while requests wait), and the queue wait p95 of an interactive key's requests while a
background key floods the pool (<= one kernel call, 1 s), next to the same traffic sent by one key
in one class (what the old FIFO queue did). The sessions run (issue 20): 3 kernels, one key, 24
quiet sessions (one call at a time, a pause between) and one session flooding with 60 calls at
once: the quiet sessions' queue wait p95 (<= one call), next to the same traffic without session
headers (the key-level queue of before); the share of a session's calls on the kernel of its
previous call (>= 90% while all kernels are healthy), throughput (>= 0.9 x N kernels' worth) and
slot use (>= 95%). The fake kernels run in this process's threads (each
its own event loop, as in the tests), aiosd in this process's loop; the load is a few dozen
requests a second, so neither is CPU bound.

Exit status: 0 when every figure meets its target, 1 when one misses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import httpx  # noqa: E402

from tests.support.aiosd_harness import config_for, serve_aiosd  # noqa: E402
from tests.support.fake_kernel import FakeKernel  # noqa: E402

CALL_SECONDS = 1.0
SLOTS = 6
CHAT = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
USER_KEY = "interactive-key-0001"
CRON_KEY = "background-key-0001"


@dataclass(frozen=True)
class Plan:
    window: float  # seconds measured after warm-up
    warm_up: float
    interactive_samples: int


FULL = Plan(window=20.0, warm_up=3.0, interactive_samples=40)
QUICK = Plan(window=5.0, warm_up=2.0, interactive_samples=10)


def start_kernels(n: int) -> list[FakeKernel]:
    return [FakeKernel(workers=SLOTS, llm_latency=CALL_SECONDS, record=False).start() for _ in range(n)]


def pool_config(workdir: Path, kernels: list[FakeKernel], extra: str = ""):
    entries = "\n".join(f'  - {{url: "{k.url}", name: k{i}, max_concurrency: {SLOTS}}}' for i, k in enumerate(kernels))
    text = f"""
kernels:
{entries}
kernel: {{timeout: 30s, queue_timeout: 300s}}
{extra}
"""
    return config_for(workdir, kernels[0].url, text)


async def saturate(n: int, plan: Plan, workdir: Path) -> dict:
    """Throughput and slot utilisation with ``n`` kernels and three times as many requests as slots."""
    kernels = start_kernels(n)
    try:
        async with serve_aiosd(pool_config(workdir, kernels)) as aiosd:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=aiosd.url, timeout=120, limits=limits) as client:
                finished: list[float] = []
                failures = 0
                stop = asyncio.Event()

                async def loop() -> None:
                    nonlocal failures
                    while not stop.is_set():
                        response = await client.post("/v1/chat/completions", json=CHAT)
                        if response.status_code == 200:
                            finished.append(time.monotonic())
                        else:
                            failures += 1

                workers = [asyncio.create_task(loop()) for _ in range(3 * SLOTS * n)]
                await asyncio.sleep(plan.warm_up)
                start = time.monotonic()
                busy_samples: list[float] = []
                while time.monotonic() - start < plan.window:
                    busy_samples.append(sum(k.busy_workers for k in kernels) / (SLOTS * n))
                    await asyncio.sleep(0.01)
                end = time.monotonic()
                stop.set()
                await asyncio.gather(*workers)
        done = sum(1 for t in finished if start <= t < end)
        return {
            "kernels": n,
            "requests_per_second": done / (end - start),
            "utilisation": statistics.fmean(busy_samples),
            "failures": failures,
        }
    finally:
        for kernel in kernels:
            kernel.stop()


async def interactive_under_flood(plan: Plan, workdir: Path, *, separate_classes: bool) -> dict:
    """Two kernels (12 slots), 48 background requests always waiting; an interactive request every
    0.3 s. ``separate_classes`` False sends both from one key in one class (first come, first served)."""
    kernels = start_kernels(2)
    extra = f"""
auth:
  keys:
    - {{key: "{USER_KEY}", name: user}}
    - {{key: "{CRON_KEY}", name: cron, priority: background}}
"""
    user_key = USER_KEY if separate_classes else CRON_KEY
    try:
        async with serve_aiosd(pool_config(workdir, kernels, extra)) as aiosd:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=aiosd.url, timeout=300, limits=limits) as client:
                stop = asyncio.Event()

                async def flood() -> None:
                    while not stop.is_set():
                        await client.post("/v1/chat/completions", json=CHAT,
                                          headers={"authorization": f"Bearer {CRON_KEY}"})

                flooders = [asyncio.create_task(flood()) for _ in range(60)]
                await asyncio.sleep(plan.warm_up)
                waits: list[float] = []
                statuses: list[int] = []

                async def one() -> None:
                    sent = time.monotonic()
                    response = await client.post("/v1/chat/completions", json=CHAT,
                                                 headers={"authorization": f"Bearer {user_key}"})
                    statuses.append(response.status_code)
                    # What the request waited beyond its own kernel call: the queue (and aiosd's few ms).
                    waits.append(max(0.0, time.monotonic() - sent - CALL_SECONDS))

                singles = []
                for _ in range(plan.interactive_samples):
                    singles.append(asyncio.create_task(one()))
                    await asyncio.sleep(0.3)
                await asyncio.gather(*singles)
                stop.set()
                await asyncio.gather(*flooders)
        waits.sort()
        return {
            "separate_classes": separate_classes,
            "samples": len(waits),
            "wait_p50": waits[len(waits) // 2],
            "wait_p95": waits[min(len(waits) - 1, int(0.95 * len(waits)))],
            "errors": sum(1 for s in statuses if s != 200),
        }
    finally:
        for kernel in kernels:
            kernel.stop()


QUIET_SESSIONS = 24
FLOOD_CALLS = 60


async def sessions_run(plan: Plan, workdir: Path, *, with_sessions: bool) -> dict:
    """Three kernels, one key: ``QUIET_SESSIONS`` sessions each sending one call at a time with a pause of
    0.5-2.5 s between, and one session keeping ``FLOOD_CALLS`` calls in flight or waiting.
    ``with_sessions`` False sends the same traffic without session headers (one key-level queue)."""
    kernels = start_kernels(3)
    rng = random.Random(20)
    try:
        async with serve_aiosd(pool_config(workdir, kernels)) as aiosd:
            limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
            async with httpx.AsyncClient(base_url=aiosd.url, timeout=300, limits=limits) as client:
                stop = asyncio.Event()
                measuring = {"from": float("inf"), "to": float("inf")}
                quiet: list[tuple[float, str, str]] = []  # (wait, session, kernel) of calls measured
                finished: list[float] = []
                failures = 0

                def headers(session: str) -> dict[str, str]:
                    return {"x-session-affinity": session} if with_sessions else {}

                async def call(session: str) -> tuple[float, str]:
                    nonlocal failures
                    sent = time.monotonic()
                    response = await client.post("/v1/chat/completions", json=CHAT, headers=headers(session))
                    if response.status_code != 200:
                        failures += 1
                    finished.append(time.monotonic())
                    return max(0.0, time.monotonic() - sent - CALL_SECONDS), response.headers.get("x-aiosd-kernels", "")

                async def flood() -> None:
                    while not stop.is_set():
                        await call("flood-session:0")

                async def conversation(name: str) -> None:
                    await asyncio.sleep(rng.uniform(0, 2))
                    while not stop.is_set():
                        sent = time.monotonic()
                        wait, kernel = await call(name)
                        if measuring["from"] <= sent < measuring["to"]:
                            quiet.append((wait, name, kernel))
                        await asyncio.sleep(rng.uniform(0.5, 2.5))

                tasks = [asyncio.create_task(flood()) for _ in range(FLOOD_CALLS)]
                tasks += [asyncio.create_task(conversation(f"quiet-{i:02d}:0")) for i in range(QUIET_SESSIONS)]
                await asyncio.sleep(plan.warm_up)
                start = measuring["from"] = time.monotonic()
                measuring["to"] = start + plan.window
                busy: list[float] = []
                while time.monotonic() - start < plan.window:
                    busy.append(sum(k.busy_workers for k in kernels) / (SLOTS * 3))
                    await asyncio.sleep(0.01)
                end = time.monotonic()
                status = (await client.get("/status")).json()
                stop.set()
                await asyncio.gather(*tasks)
    finally:
        for kernel in kernels:
            kernel.stop()
    waits = sorted(w for w, _, _ in quiet)
    kept = moved = 0
    last: dict[str, str] = {}
    for _, session, kernel in quiet:
        if session in last:
            kept, moved = (kept + 1, moved) if last[session] == kernel else (kept, moved + 1)
        last[session] = kernel
    return {
        "with_sessions": with_sessions,
        "quiet_samples": len(waits),
        "quiet_wait_p50": waits[len(waits) // 2] if waits else None,
        "quiet_wait_p95": waits[min(len(waits) - 1, int(0.95 * len(waits)))] if waits else None,
        "quiet_same_kernel_share": kept / (kept + moved) if kept + moved else None,
        "requests_per_second": sum(1 for t in finished if start <= t < end) / (end - start),
        "utilisation": statistics.fmean(busy),
        "failures": failures,
        "sessions": status.get("sessions"),
    }


def session_rows(on: dict, off: dict) -> list[tuple[str, str, str, bool]]:
    """The sessions run's figures against their targets."""
    capacity = 3 * SLOTS / CALL_SECONDS
    table = on["sessions"] or {}
    calls = (table.get("affinity_kept", 0) + table.get("affinity_moved", 0)) or 1
    share = on["quiet_same_kernel_share"] or 0.0
    failed = on["failures"] + off["failures"]
    return [
        ("sessions: quiet sessions' wait p50 / p95 beside a flooding one",
         f"{on['quiet_wait_p50']:.3f} / {on['quiet_wait_p95']:.3f} s", "p95 <= 1 s",
         on["quiet_wait_p95"] is not None and on["quiet_wait_p95"] <= CALL_SECONDS),
        ("same traffic without session ids (key-level queue), p50 / p95",
         f"{off['quiet_wait_p50']:.3f} / {off['quiet_wait_p95']:.3f} s", "(for comparison)", True),
        ("sessions: quiet sessions' calls on their previous call's kernel", f"{share:.1%}", ">= 90%", share >= 0.9),
        ("sessions: all sessions' calls (flood included), same kernel",
         f"{table.get('affinity_kept', 0) / calls:.1%}", "(for comparison)", True),
        ("sessions: throughput, 3 kernels", f"{on['requests_per_second']:.2f} req/s "
         f"({on['requests_per_second'] / capacity:.2f} x N kernels)", ">= 0.9 x N",
         on["requests_per_second"] >= 0.9 * capacity),
        ("sessions: slot utilisation", f"{on['utilisation']:.1%}", ">= 95%", on["utilisation"] >= 0.95),
        ("sessions: failed requests", str(failed), "0", failed == 0),
    ]


async def run(plan: Plan) -> tuple[list[tuple[str, str, str, bool]], dict]:
    workdir = Path(tempfile.mkdtemp(prefix="aiosd-pool-bench-"))
    runs = {}
    for n in (1, 2, 3):
        (workdir / str(n)).mkdir()
        runs[n] = await saturate(n, plan, workdir / str(n))
        print(f"  {n} kernel(s): {runs[n]['requests_per_second']:.2f} req/s, "
              f"utilisation {runs[n]['utilisation']:.1%}, failures {runs[n]['failures']}", flush=True)
    (workdir / "p").mkdir()
    (workdir / "f").mkdir()
    priority = await interactive_under_flood(plan, workdir / "p", separate_classes=True)
    fifo = await interactive_under_flood(plan, workdir / "f", separate_classes=False)
    one = runs[1]["requests_per_second"]
    rows = []
    for n in (1, 2, 3):
        ratio = runs[n]["requests_per_second"] / (n * one)
        throughput = f"{runs[n]['requests_per_second']:.2f} req/s ({ratio:.2f} x N x one)"
        rows.append((f"throughput, {n} kernel(s)", throughput,
                     ">= 0.9 x N" if n > 1 else "", n == 1 or ratio >= 0.9))
    utilisation = runs[3]["utilisation"]
    rows.append(("slot utilisation, 3 kernels saturated", f"{utilisation:.1%}", ">= 95%", utilisation >= 0.95))
    rows.append(("interactive queue wait p50 / p95 under a background flood",
                 f"{priority['wait_p50']:.3f} / {priority['wait_p95']:.3f} s", "p95 <= 1 s",
                 priority["wait_p95"] <= CALL_SECONDS and priority["errors"] == 0))
    rows.append(("same traffic from one key in one class (FIFO), p50 / p95",
                 f"{fifo['wait_p50']:.3f} / {fifo['wait_p95']:.3f} s", "(for comparison)", True))
    failures = sum(r["failures"] for r in runs.values())
    rows.append(("failed requests", str(failures + priority["errors"] + fifo["errors"]), "0",
                 failures + priority["errors"] + fifo["errors"] == 0))
    (workdir / "s").mkdir()
    (workdir / "k").mkdir()
    sessions = await sessions_run(plan, workdir / "s", with_sessions=True)
    key_level = await sessions_run(plan, workdir / "k", with_sessions=False)
    rows.extend(session_rows(sessions, key_level))
    return rows, {"saturation": runs, "interactive": priority, "fifo": fifo,
                  "sessions": sessions, "sessions_key_level": key_level}


async def run_sessions(plan: Plan) -> tuple[list[tuple[str, str, str, bool]], dict]:
    workdir = Path(tempfile.mkdtemp(prefix="aiosd-pool-bench-"))
    (workdir / "s").mkdir()
    (workdir / "k").mkdir()
    sessions = await sessions_run(plan, workdir / "s", with_sessions=True)
    key_level = await sessions_run(plan, workdir / "k", with_sessions=False)
    return session_rows(sessions, key_level), {"sessions": sessions, "sessions_key_level": key_level}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows: checks the harness works")
    parser.add_argument("--sessions", action="store_true", help="only the sessions run (issue 20)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pool.json", help="JSON results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    plan = QUICK if args.quick else FULL
    rows, details = asyncio.run(run_sessions(plan) if args.sessions else run(plan))
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, target, ok in rows:
        verdict = "" if not target or target.startswith("(") else ("pass" if ok else "MISS")
        print(f"{name:<{width}}  {value:<34} {target:<16} {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"mode": "quick" if args.quick else "full", **details}, indent=2, default=str))
    print(f"\nJSON written to {args.out}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
