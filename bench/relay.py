"""The bench's baseline: a bare aiohttp relay (chat completion JSON in, the kernel's /query out, nothing else).

    python3 bench/relay.py --kernel http://127.0.0.1:PORT [--port 0] [--kernel-model NAME --backend NAME]

It does the least any relay must: read the body, parse it, send the messages to the kernel's
/query with one kept-alive aiohttp session, and write the kernel's text back as a chat
completion (one JSON body, or the same as SSE frames when the request says ``stream``). No
validation, auth, limits, logging, metrics, retries nor tool translation. bench/run.py runs it
beside aiosd against the same fake kernel and reports aiosd's CPU per request and added latency
as ratios to this one's. Prints ``relay listening on http://...`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from aiohttp import web


def make_app(kernel_url: str, agent: str, llm: dict) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        query = {"agent_name": agent, "query_type": "llm", "query_data": {
            "messages": body["messages"], "llms": [llm], "tools": [],
            "action_type": "chat", "message_return_type": "text"}}
        async with request.app["session"].post(kernel_url + "/query", data=json.dumps(query).encode(),
                                               headers={"content-type": "application/json"}) as answer:
            text = json.loads(await answer.read())["response"]["response_message"]
        base = {"id": "chatcmpl-relay", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        chunk = {**base, "object": "chat.completion.chunk"}
        frames = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                  {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        data = b"".join(b"data: " + json.dumps(frame).encode() + b"\n\n" for frame in frames)
        return web.Response(body=data + b"data: [DONE]\n\n", content_type="text/event-stream")

    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


async def serve(kernel_url: str, port: int, agent: str, llm: dict) -> None:
    runner = web.AppRunner(make_app(kernel_url, agent, llm), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"relay listening on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", required=True, help="the kernel's base URL")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--agent", default="aiosd")
    parser.add_argument("--kernel-model", default="gpt-4o-mini", help="the llms entry's name (as aiosd's models.map)")
    parser.add_argument("--backend", default="openai")
    args = parser.parse_args()
    llm = {"name": args.kernel_model, "backend": args.backend}
    try:
        asyncio.run(serve(args.kernel.rstrip("/"), args.port, args.agent, llm))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
