"""CPU per request of everything around the kernel call on /v1/chat/completions (in-process ASGI, kernel call stubbed).

    python3 bench/route_cost.py [--requests 20000] [--rounds 5] [--stream]

The whole ASGI stack ``build_app`` returns (request id, guard, dispatch, the completion route:
auth, body, parsing, history, metrics, the log line, the answer) serves a small chat request
``--requests`` times in one event loop, with ``forwarding.complete`` replaced by a coroutine
returning a ready ``Completion`` (what the kernel trip would return), and a ``send`` that keeps
nothing. Logging is set up as the daemon's (lean records, the one-line formatter, writing to
/dev/null) with the status page's log ring on. The figure is CPU time (``time.process_time``)
per request, the median of ``--rounds`` rounds; run two checkouts' copies alternately to compare.
Parsing the 60 KB turn is left out on purpose (a small body): it is not around the kernel call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from aiosd.api import completion_routes  # noqa: E402
from aiosd.api.app import build_app  # noqa: E402
from aiosd.service import logs  # noqa: E402
from aiosd.service.forwarding import Completion  # noqa: E402
from aiosd.service.runtime import Runtime  # noqa: E402
from aiosd.translate.chat_request import parse_chat_request  # noqa: E402
from aiosd.translate.query import build_kernel_call  # noqa: E402
from aiosd.translate.reply import Reply  # noqa: E402
from tests.support.aiosd_harness import config_for  # noqa: E402

BODY = b'{"model": "sonnet", "messages": [{"role": "user", "content": "What is in the README?"}]}'
STREAM_BODY = BODY[:-1] + b', "stream": true}'
HEADERS = [(b"host", b"127.0.0.1:8700"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode()), (b"user-agent", b"openclaw"), (b"accept", b"*/*")]


def setup_logging(runtime: Runtime) -> None:
    """The daemon's logging set-up, writing nowhere; the log ring on as ``Runtime.start`` puts it."""
    lean = getattr(logs, "lean_records", None)  # absent in older checkouts
    if lean is not None:
        lean()
    handler = logging.StreamHandler(open("/dev/null", "w", buffering=1))  # noqa: SIM115  (lives as long as the run)
    handler.setFormatter(logs.OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    logs.set_level("info")
    logging.getLogger("aiosd").addHandler(runtime.log_ring)


async def serve(app: Any, requests: int, body: bytes) -> float:
    """CPU microseconds per request of ``requests`` requests through ``app``."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    headers = [*HEADERS[:2], (b"content-length", str(len(body)).encode()), *HEADERS[3:]]

    async def send(message: dict) -> None:
        pass

    started = time.process_time()
    for _ in range(requests):
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if delivered:
                await never  # the client stays: the disconnect watcher waits until cancelled
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers,
                 "server": ("127.0.0.1", 8700), "client": ("127.0.0.1", 50000), "scheme": "http",
                 "query_string": b"", "root_path": "", "http_version": "1.1", "raw_path": b"/v1/chat/completions"}
        await app(scope, receive, send)
    return (time.process_time() - started) * 1e6 / requests


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as directory:
        config = config_for(Path(directory), "http://127.0.0.1:9")
        runtime = Runtime(config)
        setup_logging(runtime)
        model = config.models.map[0]
        chat = parse_chat_request(STREAM_BODY if args.stream else BODY)
        call = build_kernel_call(chat, model, config.kernel.agent_name)
        completion = Completion(reply=Reply("The README describes aiosd, a relay to AIOS kernels. " * 4),
                                model=model, call=call, attempts=1, waiting=0.002, kernels=["default"])

        async def complete(*args: object, **kwargs: object) -> Completion:
            return completion

        completion_routes.complete = complete  # type: ignore[assignment]  # the kernel trip, stubbed
        app = build_app(runtime)
        body = STREAM_BODY if args.stream else BODY
        await serve(app, args.requests // 10, body)  # warm-up
        rounds = [await serve(app, args.requests, body) for _ in range(args.rounds)]
        print(f"{statistics.median(rounds):.1f} us per request (rounds: {' '.join(f'{r:.1f}' for r in rounds)})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream", action="store_true")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
