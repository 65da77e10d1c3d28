"""Driving load with wrk: a Lua script that POSTs a body file and reports exact figures as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

# wrk calls done() once with its merged statistics; printing them as one JSON line avoids parsing
# wrk's rounded human output ("1.23ms"). Latencies are in microseconds.
_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = %(accept)s
local file = assert(io.open(%(body_path)s, "rb"))
wrk.body = file:read("*a")
file:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write("BENCH-JSON ", string.format(
    '{"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect_errors":%%d,"read_errors":%%d,' ..
    '"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"mean_us":%%.1f,"max_us":%%d,"min_us":%%d}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    latency.min), "\\n")
end
"""


@dataclass
class LoadResult:
    requests: int
    duration_us: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int  # answers other than 2xx/3xx
    timeouts: int
    p50_us: int
    p90_us: int
    p99_us: int
    mean_us: float
    max_us: int
    min_us: int
    # CPU time the process under test used per request during the run (set by the caller).
    cpu_ms_per_request: float | None = None

    @property
    def errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.status_errors + self.timeouts

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors, "rps": round(self.rps, 1)}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def ensure_wrk(*, install: bool) -> str | None:
    """wrk's path; with ``install``, apt-get installs it when missing (needs root)."""
    found = wrk_path()
    if found or not install:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return wrk_path()


def write_script(directory: Path, name: str, body_path: Path, *, stream: bool) -> Path:
    accept = "text/event-stream" if stream else "application/json"
    script = directory / f"{name}.lua"
    script.write_text(_LUA % {"body_path": _lua_string(str(body_path)), "accept": _lua_string(accept)})
    return script


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(wrk: str, url: str, script: Path, *, connections: int, seconds: float, timeout_s: int = 5) -> LoadResult:
    """One wrk run with ``connections`` keep-alive connections (one wrk thread: on 2 cores a second
    thread only takes CPU from the processes being measured)."""
    command = [
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s}s",
        "-s", str(script), url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            return LoadResult(**json.loads(line.removeprefix("BENCH-JSON ")))
    raise RuntimeError(f"wrk printed no figures (exit {done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}")
