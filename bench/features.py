"""What each optional feature costs per request, on and off, in alternated pairs (in-process, CPU time).

    python3 bench/features.py [--requests 20000] [--pairs 5]

Each feature's per-request work is run exactly as the completion route and ``forwarding`` run it
for one answered request (the calls, their arguments, how many per request), ``--requests``
times, timed with ``time.process_time``; "off" runs the same loop with the feature's work left
out. Pairs alternate on, off, on, off... and the median difference is the feature's cost.

- status page records: ``RequestHistory.begin``, three phase changes, one ``called``, ``finish``;
- phase callbacks: the three ``on_phase`` calls ``kernel.call`` makes (a closure setting the phase);
- log ring: the ``LogRing`` handler seeing the request's one info line (the stderr handler is not
  counted: it is the journal line, not a feature; logging is set up as ``setup_logging`` does it:
  lean records, a ``StreamHandler`` and ``OneLineFormatter``, writing to /dev/null);
- debug-level formatting: the request's debug lines at level info (filtered) and at debug;
- metrics: the labelled children looked up and the five counter/histogram updates.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from aiosd.service.history import RequestHistory  # noqa: E402
from aiosd.service.logs import LogRing, OneLineFormatter, lean_records  # noqa: E402
from aiosd.service.metrics import Metrics  # noqa: E402

MODEL = "mock-model"


def history_work(history: RequestHistory) -> Callable[[int], None]:
    def one(number: int) -> None:
        trip = history.begin(f"req_{number:016x}")
        trip.key, trip.klass, trip.model = "-", "default", MODEL
        trip.set_phase("queued")
        trip.attempts += 1
        trip.set_phase("calling")
        trip.called("k0", 0.0001, 0.002)
        trip.set_phase("between")
        history.finish(trip, status=200, outcome="ok", model=MODEL, total=0.003)
    return one


def phase_callbacks() -> Callable[[int], None]:
    class Holder:
        phase = "starting"

    holder = Holder()

    def on_phase(phase: str) -> None:
        holder.phase = phase

    def one(number: int) -> None:
        for phase in ("queued", "calling", "between"):
            on_phase(phase)
    return one


def log_line(logger: logging.Logger) -> Callable[[int], None]:
    def one(number: int) -> None:
        logger.info("request %s: model %s answered in %.2fs (%d attempt%s on %s, finish %s%s)",
                    f"req_{number:016x}", MODEL, 0.003, 1, "", "k0", "stop", "")
    return one


def debug_lines(logger: logging.Logger) -> Callable[[int], None]:
    def one(number: int) -> None:
        logger.debug("request %s: kernel %s slot taken (%d in flight)", f"req_{number:016x}", "k0", 1)
        logger.debug("request %s: kernel %s answered in %.3fs", f"req_{number:016x}", "k0", 0.002)
    return one


def metrics_work(metrics: Metrics) -> Callable[[int], None]:
    def one(number: int) -> None:
        metrics.queue_wait.observe(0.0001)
        metrics.kernel_call_duration.labels("ok").observe(0.002)
        metrics.requests_child(MODEL, "ok").inc()
        metrics.request_duration_child(MODEL).observe(0.003)
        metrics.overhead.observe(0.001)
    return one


def nothing(number: int) -> None:
    pass


def timed(work: Callable[[int], None], requests: int) -> float:
    """CPU microseconds per request of ``work``."""
    started = time.process_time()
    for number in range(requests):
        work(number)
    return (time.process_time() - started) * 1e6 / requests


def cost(on: Callable[[int], None], off: Callable[[int], None], requests: int, pairs: int) -> tuple[float, list[float]]:
    differences = []
    timed(on, requests // 10)
    for _ in range(pairs):
        differences.append(timed(on, requests) - timed(off, requests))
    return statistics.median(differences), differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    # The daemon's logging (``setup_logging``): lean records, aiosd's logger at info, its one-line
    # formatter on its handler, writing nowhere (line-buffered, like stderr).
    lean_records()
    logger = logging.getLogger("aiosd.http")
    sink = logging.StreamHandler(open("/dev/null", "w", buffering=1))  # noqa: SIM115  (lives as long as the run)
    sink.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("aiosd")
    root.addHandler(sink)
    root.propagate = False
    root.setLevel(logging.INFO)
    ring = LogRing()
    features: list[tuple[str, Callable[[], tuple[float, list[float]]]]] = [
        ("status page records (history + trip)", lambda: cost(history_work(RequestHistory()), nothing,
                                                              args.requests, args.pairs)),
        ("phase callbacks (3 per request)", lambda: cost(phase_callbacks(), nothing, args.requests, args.pairs)),
        ("metrics (lookups + 5 updates)", lambda: cost(metrics_work(Metrics()), nothing, args.requests, args.pairs)),
        ("debug lines at level info (filtered out)", lambda: cost(debug_lines(logger), nothing,
                                                                   args.requests, args.pairs)),
    ]
    print(f"| feature | cost per request (median of {args.pairs} pairs) | pairs, us |\n|---|---|---|")
    for name, measure in features:
        median, all_pairs = measure()
        print(f"| {name} | {median:.2f} us | {' '.join(f'{d:.2f}' for d in all_pairs)} |", flush=True)

    def with_ring(on: bool) -> Callable[[int], None]:
        line = log_line(logger)

        def one(number: int) -> None:
            line(number)
        if on:
            root.addHandler(ring)
        else:
            root.removeHandler(ring)
        return one

    ring_pairs = []
    for _ in range(args.pairs):
        on = timed(with_ring(True), args.requests)
        off = timed(with_ring(False), args.requests)
        ring_pairs.append(on - off)
    print(f"| log ring (the request's info line) | {statistics.median(ring_pairs):.2f} us | "
          f"{' '.join(f'{d:.2f}' for d in ring_pairs)} |")
    root.setLevel(logging.DEBUG)
    median, all_pairs = cost(debug_lines(logger), nothing, args.requests, args.pairs)
    print(f"| debug lines at level debug (formatted, written) | {median:.2f} us | "
          f"{' '.join(f'{d:.2f}' for d in all_pairs)} |")
    root.setLevel(logging.INFO)
    median, all_pairs = cost(log_line(logger), nothing, args.requests, args.pairs)
    print(f"| for scale: the request's info line (formatted, written) | {median:.2f} us | "
          f"{' '.join(f'{d:.2f}' for d in all_pairs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
