"""CPU per kernel call of each wire (lean, aiohttp, httpx), in-process against a minimal kernel in its own process.

    python3 bench/wire_cost.py [--calls 3000] [--connections 16] [--rounds 4] [WIRE ...]

The kernel is a few lines of asyncio and httptools answering every request with a fixed
Content-Length JSON answer, in a subprocess (its CPU is not counted). Each wire sends a 62 KB
body ``--calls`` times over ``--connections`` concurrent callers; the figure is this process's
CPU time (``time.process_time``) per call, wires alternated round by round, median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from procs import free_port  # noqa: E402

from aiosd.kernel.client import KernelClient  # noqa: E402
from tests.support.kernel_calls import kernel_settings  # noqa: E402

KERNEL = r'''
import asyncio, sys, httptools
ANSWER = b'{"response": {"response_message": "' + b"x" * 200 + b'", "finished": true, "status_code": 200}}'
REPLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
class Kernel(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.parser = transport, httptools.HttpRequestParser(self)
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_complete(self):
        self.transport.write(REPLY)
async def main():
    server = await asyncio.get_running_loop().create_server(Kernel, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
'''
BODY = b'{"prompt": "' + b"a" * 62_000 + b'"}'


async def cost(transport: str, url: str, calls: int, connections: int) -> float:
    """Microseconds of this process's CPU per call."""
    settings = kernel_settings(url, max_concurrency=connections)
    async with KernelClient(settings, transport=transport) as client:  # type: ignore[arg-type]  # a name from argv
        wire = client._wire

        async def caller(count: int) -> None:
            for _ in range(count):
                answer = await wire.request("POST", "/query", BODY, settings.max_answer_bytes)
                assert answer.status == 200

        await caller(20)  # connections made, code warm
        started = time.process_time()
        await asyncio.gather(*(caller(calls // connections) for _ in range(connections)))
        return (time.process_time() - started) / (calls // connections * connections) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wires", nargs="*", default=["lean", "aiohttp"])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    port = free_port()
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, str(port)])
    try:
        time.sleep(0.5)
        results: dict[str, list[float]] = {wire: [] for wire in args.wires}
        for number in range(args.rounds):
            for wire in args.wires if number % 2 == 0 else reversed(args.wires):
                results[wire].append(asyncio.run(cost(wire, f"http://127.0.0.1:{port}", args.calls, args.connections)))
        for wire, figures in results.items():
            shown = " ".join(f"{figure:.0f}" for figure in figures)
            print(f"{wire:8s} {statistics.median(figures):6.1f} us CPU per call (rounds: {shown})")
    finally:
        kernel.kill()
        kernel.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
