"""aiosd's benchmarks: one command for a fake kernel and aiosd on loopback, driven with wrk.

It starts a zero-latency fake kernel, aiosd and the bare aiohttp relay (``relay.py``, the baseline)
on loopback, drives them with wrk, prints a table against the targets (issues 6 and 21: aiosd's
CPU per request and added p50 as ratios to the relay's, measured in alternation) and writes JSON.
``--baseline-pythonpath DIR`` runs a second aiosd from another source tree (e.g. a ``git
worktree`` of the commit before a change) in the same alternation: before and after, one run.

    python3 bench/run.py            # the full run (about 2-3 minutes on 2 cores)
    python3 bench/run.py --quick    # a few hundred requests per step: checks the harness, not aiosd
    python3 bench/run.py --ratios-only --rounds 5   # only the alternation against the relay

Exit status: 0 when every figure meets its target, 1 when one misses, 2 when the bench itself
could not run (no wrk, a process did not start, a sanity request failed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bodies  # noqa: E402
import ratios  # noqa: E402
import report  # noqa: E402
import sync_cost  # noqa: E402
from procs import (  # noqa: E402
    AiosdProcess,
    FakeKernelProcess,
    NotifySocket,
    RelayProcess,
    RssSampler,
    cpu_seconds,
    free_port,
    http_get,
    http_post,
)
from report import Figure  # noqa: E402
from wrk_load import LoadResult, ensure_wrk, run_wrk, write_script  # noqa: E402

from aiosd.config.loader import load_config  # noqa: E402

MB = 1024 * 1024
SOAK_REQUESTS = 10_000
NEW_MODEL = "bench-reload"


@dataclass(frozen=True)
class Plan:
    seconds: float  # per wrk run
    concurrencies: tuple[int, ...]
    soak_requests: int
    reload_edits: int
    sync_rounds: int
    sync_models: int
    sync_bytes: int
    warm_up: bool = True
    ratio_rounds: int = 3  # alternated rounds against the bare relay
    ratio_seconds: float = 3
    ratios_only: bool = False  # skip everything but the alternation against the relay


FULL = Plan(seconds=5, concurrencies=(1, 16, 64), soak_requests=SOAK_REQUESTS, reload_edits=3,
            sync_rounds=5, sync_models=sync_cost.MODELS, sync_bytes=sync_cost.TARGET_BYTES)
QUICK = Plan(seconds=1, concurrencies=(1, 16), soak_requests=300, reload_edits=1,
             sync_rounds=1, sync_models=20, sync_bytes=100_000, warm_up=False, ratio_rounds=1, ratio_seconds=1)


class BenchFailed(Exception):
    """The bench could not measure (not: aiosd missed a target)."""


def config_text(listen_port: int, kernel_url: str, *, extra_model: str | None = None) -> str:
    extra = f"\n    {extra_model}: {{kernel_model: \"gpt-4o-mini\", backend: \"openai\"}}" if extra_model else ""
    return textwrap.dedent(f"""\
        # aiosd bench config: the cap is generous so that aiosd, not its queue, is measured.
        listen: "127.0.0.1:{listen_port}"
        kernel:
          url: "{kernel_url}"
          timeout: "30s"
          queue_timeout: "30s"
          max_concurrency: 64
        models:
          discover: false
          map:
            {bodies.FIXTURE_MODEL}: {{kernel_model: "gpt-4o-mini", backend: "openai"}}""") + extra + textwrap.dedent("""
        openclaw:
          sync: false
        logging:
          level: info
        """)


def write_renamed(path: Path, text: str) -> None:
    """Write as editors and deploy tools do: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run: checks the harness works (figures mean little)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json", help="JSON results file")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install wrk when it is missing")
    parser.add_argument("--aiosd-pythonpath", default="",
                        help="prepended to aiosd's PYTHONPATH only (e.g. a directory shadowing an optional package, "
                             "to measure without it)")
    parser.add_argument("--aiosd-python", default=sys.executable,
                        help="the interpreter that runs aiosd (e.g. a clean venv's, to measure an install without "
                             "the test dependencies)")
    parser.add_argument("--baseline-pythonpath", default="",
                        help="a second aiosd, from this source tree, measured in the same alternation ('before')")
    parser.add_argument("--rounds", type=int, help="alternated rounds against the bare relay (default 3, quick 1)")
    parser.add_argument("--ratio-seconds", type=float, help="seconds per wrk run in those rounds (default 3)")
    parser.add_argument("--ratios-only", action="store_true", help="only the alternation against the bare relay")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    plan = dataclasses.replace(plan, ratio_rounds=args.rounds or plan.ratio_rounds,
                               ratio_seconds=args.ratio_seconds or plan.ratio_seconds, ratios_only=args.ratios_only)
    # SIGTERM unwinds like Ctrl-C, so the fake kernel and aiosd are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    wrk = ensure_wrk(install=not args.no_install)
    if wrk is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="aiosd-bench-"))
    try:
        figures, details = measure_all(plan, wrk, workdir, args.aiosd_pythonpath, args.aiosd_python,
                                       args.baseline_pythonpath)
    except BenchFailed as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    details["mode"] = "quick" if args.quick else "full"
    print()
    print(report.table(figures))
    report.write_json(args.out, figures, details)
    print(f"\nJSON written to {args.out}")
    return 1 if any(f.verdict == "MISS" for f in figures) else 0


def measure_all(plan: Plan, wrk: str, workdir: Path, aiosd_pythonpath: str,
                aiosd_python: str, baseline_pythonpath: str = "") -> tuple[list[Figure], dict]:
    # Other work on the machine skews every figure: keep the load average with the results.
    details: dict = {"plan": plan.__dict__, "loadavg_before": os.getloadavg(), "aiosd_python": aiosd_python,
                     "aiosd_pythonpath": aiosd_pythonpath, "baseline_pythonpath": baseline_pythonpath}
    kernel = FakeKernelProcess(workdir)
    notify = NotifySocket(workdir)
    port = free_port()
    config_path = workdir / "aiosd.yaml"
    aiosd = AiosdProcess(config_path, notify, workdir, pythonpath=aiosd_pythonpath, python=aiosd_python)
    before_dir = workdir / "before"
    before_dir.mkdir()
    before_port = free_port()
    before = AiosdProcess(before_dir / "aiosd.yaml", notify, before_dir, pythonpath=baseline_pythonpath,
                          python=aiosd_python) if baseline_pythonpath else None
    relay: RelayProcess | None = None
    try:
        try:
            kernel.start()
            config_path.write_text(config_text(port, kernel.url))
            ready_seconds = aiosd.start()
            config = load_config(config_path)
            model = next(spec for spec in config.models.map if spec.id == bodies.FIXTURE_MODEL)
            relay = RelayProcess(workdir, kernel.url, kernel_model=model.kernel_model, backend=model.backend or "",
                                 agent=config.kernel.agent_name, python=aiosd_python)
            relay.start()
            if before is not None:
                (before_dir / "aiosd.yaml").write_text(config_text(before_port, kernel.url))
                before.start()
        except RuntimeError as exc:
            raise BenchFailed(str(exc)) from None
        print(f"aiosd READY=1 after {ready_seconds * 1000:.0f} ms (pid {aiosd.pid}); "
              f"fake kernel {kernel.url} (pid {kernel.pid}); bare relay {relay.url} (pid {relay.pid})"
              + (f"; before (pid {before.pid})" if before is not None else ""), flush=True)
        paths = bodies.write_bodies(workdir, config)
        urls = {"kernel": (kernel.url + "/query", kernel.pid),
                "aiosd": (f"http://127.0.0.1:{port}/v1/chat/completions", aiosd.pid),
                "relay": (relay.url + "/v1/chat/completions", relay.pid)}
        if before is not None:
            urls["before"] = (f"http://127.0.0.1:{before_port}/v1/chat/completions", before.pid)
        tails = {"aiosd": aiosd.log_tail, "relay": lambda: relay.log_path.read_text(errors="replace")[-3000:],
                 "before": before.log_tail if before is not None else aiosd.log_tail}
        for name, (url, _) in urls.items():
            if name != "kernel":
                check_answers(url, urls["kernel"][0], paths, tails[name], name)
        scripts = {
            "kernel": write_script(workdir, "kernel", paths["query"], stream=False),
            "plain": write_script(workdir, "plain", paths["chat_plain"], stream=False),
            "stream": write_script(workdir, "stream", paths["chat_stream"], stream=True),
        }
        load = load_driver(wrk, scripts, urls)
        if plan.warm_up:
            print("warm-up", flush=True)
            for server in urls:
                for mode in ("plain", "stream") if server != "kernel" else ("plain",):
                    load(server, mode, 16, 1)
        figures: list[Figure] = []
        if not plan.ratios_only:
            main_figures = measure_main(plan, load, aiosd, notify, config_path, port, kernel.url, details)
            figures.extend(main_figures)
        print(f"against the bare relay: {plan.ratio_rounds} alternated rounds", flush=True)
        servers = ["relay", "aiosd"] + (["before"] if before is not None else [])
        rounds = ratios.alternate(load, servers, plan.ratio_rounds, plan.ratio_seconds)
        figures.extend(ratios.figures(rounds))
        details["ratio_runs"] = rounds.as_dict()
        details["rss_bytes_after_ratios"] = {"aiosd": aiosd.rss(), "relay": relay.rss(),
                                             **({"before": before.rss()} if before is not None else {})}
        figures.append(Figure("RSS after the alternation, aiosd", round(aiosd.rss() / MB, 1), "MB",
                              note=f"bare relay {relay.rss() / MB:.1f} MB"
                              + (f", before {before.rss() / MB:.1f} MB" if before is not None else "")))
        exit_status = aiosd.stop()
        if exit_status != 0:
            raise BenchFailed(f"aiosd did not exit 0 on SIGTERM (status {exit_status}): {aiosd.log_tail()}")
    finally:
        aiosd.stop()
        if before is not None:
            before.stop()
        if relay is not None:
            relay.stop()
        kernel.stop()
        notify.close()

    if not plan.ratios_only:
        print("openclaw sync", flush=True)
        sync = sync_cost.measure(config, workdir, rounds=plan.sync_rounds, model_count=plan.sync_models,
                                 target_bytes=plan.sync_bytes)
        details["openclaw_sync"] = sync
        figures.extend(sync_figures(sync))
    details.update(loadavg_after=os.getloadavg(), aiosd_log_lines=count_lines(aiosd.log_path))
    return figures, details


def measure_main(plan: Plan, load: Load, aiosd: AiosdProcess, notify: NotifySocket, config_path: Path, port: int,
                 kernel_url: str, details: dict) -> list[Figure]:
    """aiosd alone: latency and throughput against the targets of issue 6, memory, config edits."""
    rss_idle = aiosd.rss()
    print("latency and throughput", flush=True)
    runs: dict[str, dict[int, LoadResult]] = {"kernel": {}, "plain": {}, "stream": {}}
    with RssSampler(aiosd.pid) as sampler:
        for connections in plan.concurrencies:
            runs["kernel"][connections] = load("kernel", "plain", connections, plan.seconds)
            for mode in ("plain", "stream"):
                runs[mode][connections] = load("aiosd", mode, connections, plan.seconds)
    rss_peak = sampler.peak

    print(f"memory: {plan.soak_requests} requests twice", flush=True)
    rss_after_matrix = aiosd.rss()
    soaks = [soak(load, plan.soak_requests, aiosd), soak(load, plan.soak_requests, aiosd)]

    print("config edits", flush=True)
    reloads = [time_config_edit(config_path, port, kernel_url, notify, aiosd, number)
               for number in range(plan.reload_edits)]
    details.update(
        runs={target: {str(c): r.as_dict() for c, r in by_c.items()} for target, by_c in runs.items()},
        soaks=[{"requests": requests, "rss_after_bytes": rss} for requests, rss in soaks],
        rss_bytes={"idle": rss_idle, "peak_under_load": rss_peak, "after_matrix": rss_after_matrix},
        start_to_ready_s=aiosd.ready_at - aiosd.started_at,
        reloads=reloads,
    )
    return figures_from(plan, runs, rss_idle, rss_peak, soaks, aiosd.ready_at - aiosd.started_at, reloads)


Load = Callable[[str, str, int, float], LoadResult]


def load_driver(wrk: str, scripts: dict[str, Path], targets: dict[str, tuple[str, int]]) -> Load:
    """``load(server, mode, connections, seconds)``: one wrk run against a server ("kernel", "aiosd",
    "relay", "before") with the "plain" or "stream" body (the kernel: its /query body), and the CPU
    that server's process used per request."""
    def load(server: str, mode: str, connections: int, seconds: float) -> LoadResult:
        url, pid = targets[server]
        script = scripts["kernel" if server == "kernel" else mode]
        cpu_before = cpu_seconds(pid)
        result = run_wrk(wrk, url, script, connections=connections, seconds=seconds)
        if result.requests:
            result.cpu_ms_per_request = round((cpu_seconds(pid) - cpu_before) * 1000 / result.requests, 4)
        what = server if server == "kernel" else f"{server} {mode}"
        print(f"  {what:13} c={connections:<3} {result.rps:8.0f} req/s  p50 {result.p50_us / 1000:6.2f} ms  "
              f"p99 {result.p99_us / 1000:6.2f} ms  errors {result.errors}  CPU {result.cpu_ms_per_request} ms/req",
              flush=True)
        return result

    return load


def count_lines(path: Path) -> int | None:
    """The lines in a log file, or None when the process never wrote one."""
    if not path.exists():
        return None
    with open(path, errors="replace") as lines:
        return sum(1 for _ in lines)


def check_answers(aiosd_url: str, query_url: str, paths: dict[str, Path], log_tail: Callable[[], str],
                  name: str = "aiosd") -> None:
    """One request of each kind, checked, before any load: a fast error is not a fast answer."""
    status, _, body = http_post(query_url, paths["query"].read_bytes())
    if status != 200 or b'"status_code": 200' not in body.replace(b'"status_code":200', b'"status_code": 200'):
        raise BenchFailed(f"the fake kernel's /query answered {status}: {body[:300]!r}")
    status, _, body = http_post(aiosd_url, paths["chat_plain"].read_bytes())
    if status != 200 or b'"chat.completion"' not in body:
        raise BenchFailed(f"{name} answered {status}: {body[:300]!r}; log: {log_tail()}")
    status, _, body = http_post(aiosd_url, paths["chat_stream"].read_bytes())
    if status != 200 or not body.endswith(b"data: [DONE]\n\n"):
        raise BenchFailed(f"{name}'s stream answered {status}: {body[-300:]!r}; log: {log_tail()}")


def soak(load: Load, requests: int, aiosd: AiosdProcess) -> tuple[int, int]:
    """At least ``requests`` requests at concurrency 16 (plain and streamed alternately); (requests done, RSS after)."""
    done = 0
    target = "plain"
    while done < requests:
        result = load("aiosd", target, 16, 1)
        if result.errors:
            raise BenchFailed(f"{result.errors} errors during the memory soak")
        done += result.requests
        target = "stream" if target == "plain" else "plain"
    return done, aiosd.rss()


def time_config_edit(config_path: Path, port: int, kernel_url: str, notify: NotifySocket, aiosd: AiosdProcess,
                     number: int) -> dict:
    """Rename-write a config with one more model; seconds until READY=1 and until /v1/models lists it."""
    model = f"{NEW_MODEL}-{number}"
    written = time.perf_counter()
    write_renamed(config_path, config_text(port, kernel_url, extra_model=model))
    try:
        reloading = notify.wait_for("RELOADING", after=written, timeout=10)
        ready = notify.wait_for("READY", after=reloading, timeout=10)
    except TimeoutError as exc:
        raise BenchFailed(f"config edit {number}: {exc}; log: {aiosd.log_tail()}") from None
    deadline = written + 10
    while True:
        status, body = http_get(f"http://127.0.0.1:{port}/v1/models")
        if status == 200 and f'"{model}"'.encode() in body:
            serving = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise BenchFailed(f"config edit {number}: /v1/models never listed {model}; log: {aiosd.log_tail()}")
        time.sleep(0.002)
    print(f"  edit {number}: READY=1 after {(ready - written) * 1000:.0f} ms, "
          f"serving after {(serving - written) * 1000:.0f} ms", flush=True)
    return {"ready_s": ready - written, "serving_s": serving - written, "reloading_s": reloading - written}


def figures_from(plan: Plan, runs, rss_idle, rss_peak, soaks, ready_seconds, reloads) -> list[Figure]:
    figures: list[Figure] = []
    for mode in ("plain", "stream"):
        label = "streamed" if mode == "stream" else "not streamed"
        for c in plan.concurrencies:
            kernel, relay = runs["kernel"][c], runs[mode][c]
            p50 = (relay.p50_us - kernel.p50_us) / 1000
            p99 = (relay.p99_us - kernel.p99_us) / 1000
            figures.append(Figure(f"added latency p50, c={c}, {label}", round(p50, 3), "ms",
                                  ("<=", 1.0) if c == 1 else None))
            figures.append(Figure(f"added latency p99, c={c}, {label}", round(p99, 3), "ms",
                                  ("<=", 3.0) if c == 1 else None))
    for c in plan.concurrencies:
        if c == 1:
            continue
        for mode in ("plain", "stream"):
            label = "streamed" if mode == "stream" else "not streamed"
            run = runs[mode][c]
            # A run with errors has not sustained its rate: it counts as 0.
            value = round(run.rps) if run.errors == 0 else 0
            note = "" if run.errors == 0 else f"{run.errors} errors"
            figures.append(Figure(f"requests/s with no errors, c={c}, {label}", value, "req/s", (">=", 1000), note))
        figures.append(Figure(f"fake kernel alone, c={c} (for scale)", round(runs["kernel"][c].rps), "req/s"))
    for mode in ("plain", "stream"):
        label = "streamed" if mode == "stream" else "not streamed"
        c = max(plan.concurrencies)
        figures.append(Figure(f"aiosd CPU per request, c={c}, {label}", runs[mode][c].cpu_ms_per_request, "ms"))
    figures.append(Figure(f"fake kernel CPU per /query, c={c}", runs["kernel"][c].cpu_ms_per_request, "ms"))
    figures.append(Figure("RSS idle after start", round(rss_idle / MB, 1), "MB"))
    figures.append(Figure("RSS peak under load", round(rss_peak / MB, 1), "MB", ("<=", 80)))
    (first_n, first_rss), (second_n, second_rss) = soaks
    figures.append(Figure(f"RSS after {first_n} more requests", round(first_rss / MB, 1), "MB"))
    figures.append(Figure(f"RSS growth over the next {second_n} requests", round((second_rss - first_rss) / MB, 2),
                          "MB", ("<=", 1.0)))
    figures.append(Figure("config edit to new config serving (worst)", round(max(r["serving_s"] for r in reloads), 3),
                          "s", ("<=", 1.0)))
    figures.append(Figure("start to READY=1", round(ready_seconds, 3), "s", ("<=", 2.0)))
    return figures


def sync_figures(sync: dict) -> list[Figure]:
    figures: list[Figure] = []
    sync_note = f"{sync['file_bytes'] / 1e6:.1f} MB, {sync['models']} models"
    figures.append(Figure("openclaw sync, nothing to change (median)", sync["unchanged_ms_median"], "ms",
                          note=sync_note))
    figures.append(Figure("openclaw sync, file rewritten (median)", sync["changed_ms_median"], "ms", note=sync_note))
    return figures


if __name__ == "__main__":
    sys.exit(main())
