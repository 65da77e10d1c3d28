"""Where aiosd's CPU goes per request, by stage: py-spy samples of the daemon under wrk, each stack given to one stage.

    python3 bench/stages.py [--seconds 15] [--connections 16] [--stream] [--aiosd-pythonpath DIR]

Starts the fake kernel and aiosd as bench/run.py does, drives OpenClaw's 60 KB turn with wrk and
samples aiosd with ``py-spy record --format raw`` (on-CPU samples only; ``pip install py-spy``).
Each sampled stack goes to the first stage whose pattern matches, reading from the innermost
frame out (a log call inside the kernel call counts as logging). The table gives each stage's
share of the samples and that share of the CPU per request measured over the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bodies  # noqa: E402
from procs import AiosdProcess, FakeKernelProcess, NotifySocket, cpu_seconds, free_port  # noqa: E402
from run import config_text  # noqa: E402
from wrk_load import run_wrk, write_script  # noqa: E402

from aiosd.config.loader import load_config  # noqa: E402

# (stage, substrings of a py-spy frame "function (file:line)"); the first stage matching a frame wins,
# frames read from the innermost out.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("/logging/", "aiosd/service/logs.py")),
    ("metrics", ("prometheus_client", "aiosd/service/metrics.py")),
    ("status page records (history, phases)", ("aiosd/service/history.py", "on_phase (", "_phase (")),
    ("parsing + validating the body", ("parse_chat_request", "parse_messages_request", "chat_request.py")),
    ("building the /query body", ("build_kernel_call", "aiosd/translate/tool_prompt.py",
                                  "aiosd/translate/query.py", "aiosd/translate/tool_native.py")),
    ("decoding the kernel's answer", ("answer_json.py", "reply.py", "decode (")),
    ("writing the answer", ("aiosd/api/responses.py", "send_response", "_answer (", "send_error")),
    ("the kernel call (scheduler, pool, client, wire)", ("aiosd/kernel/", "aiohttp/", "forward_query",
                                                     "aiosd/service/forwarding.py")),
    ("reading the body", ("read_body",)),
    ("request guard, connections, routing", ("aiosd/server/", "aiosd/api/request_guard.py",
                                             "request_context.py", "completion_dispatch", "aiosd/api/app.py")),
    ("the completion route itself", ("aiosd/api/completion_routes.py",)),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("event loop and sockets", ("asyncio/", "selectors.py", "uvloop")),
)
OTHER = "other"


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for stage, patterns in STAGES:
            if any(pattern in frame for pattern in patterns):
                return stage
    return OTHER


def sample(pid: int, seconds: float, rate: int, out: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds)),
                             "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stages_of(raw: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[classify(stack)] += int(count)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--aiosd-pythonpath", default="")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="aiosd-stages-"))
    kernel, notify = FakeKernelProcess(workdir), NotifySocket(workdir)
    port = free_port()
    config_path = workdir / "aiosd.yaml"
    aiosd = AiosdProcess(config_path, notify, workdir, pythonpath=args.aiosd_pythonpath)
    try:
        kernel.start()
        config_path.write_text(config_text(port, kernel.url))
        aiosd.start()
        paths = bodies.write_bodies(workdir, load_config(config_path))
        mode = "chat_stream" if args.stream else "chat_plain"
        script = write_script(workdir, "load", paths[mode], stream=args.stream)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        run_wrk("wrk", url, script, connections=args.connections, seconds=2)  # warm-up
        raw = args.raw or workdir / "stacks.txt"
        cpu_before = cpu_seconds(aiosd.pid)
        spy = sample(aiosd.pid, args.seconds, args.rate, raw)
        result: list = []
        loader = threading.Thread(target=lambda: result.append(run_wrk(
            "wrk", url, script, connections=args.connections, seconds=args.seconds)))
        loader.start()
        loader.join()
        _, errors = spy.communicate(timeout=60)
        cpu_ms = (cpu_seconds(aiosd.pid) - cpu_before) * 1000 / result[0].requests
        if not raw.exists():
            print(f"py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}", file=sys.stderr)
            return 2
        counts = stages_of(raw)
    finally:
        aiosd.stop()
        kernel.stop()
        notify.close()
        if not args.raw:
            shutil.rmtree(workdir, ignore_errors=True)
    total = sum(counts.values())
    print(f"{result[0].requests} requests, c={args.connections}, {'streamed' if args.stream else 'not streamed'}, "
          f"{cpu_ms:.3f} ms CPU per request, {total} samples, load {os.getloadavg()[0]:.1f}")
    print("| stage | share | us per request |\n|---|---|---|")
    for stage, count in counts.most_common():
        print(f"| {stage} | {count * 100 / total:.1f}% | {count / total * cpu_ms * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
