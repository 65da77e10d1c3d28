"""CPU of reading OpenClaw's recorded turn and making its /query body, per checkout, in alternated pairs.

    python3 bench/translate_cost.py [--requests 3000] [--pairs 5] [--mode prompt] [TREE ...]

Times ``parse_chat_request`` + ``build_kernel_call`` (what the completion route does between
reading the body and calling the kernel) on the recorded 60 KB turn, written two ways: as bench/
sends it (``json.dumps``: non-ASCII as ``\\u`` escapes) and as OpenClaw sends it (``JSON.stringify``:
UTF-8). Each TREE (a checkout of aiosd, default this one; e.g. a ``git worktree`` of the commit
before a change) runs in its own subprocess with the tree first on ``sys.path``; trees alternate
within each of ``--pairs`` rounds. Prints microseconds of CPU (``time.process_time_ns``) per
request for each round and the median, and checks every tree makes the same /query bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r'''
import hashlib, json, sys, time
import aiosd
from aiosd.translate.chat_request import parse_chat_request
from aiosd.translate.query import build_kernel_call
from tests.support.chat_fixtures import model
requests, mode, fixture = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(fixture) as handle:
    turn = json.loads(handle.readline())["body"]
turn["model"] = "sonnet"
spec = model(tools=mode)
out = {"aiosd": aiosd.__file__}
for name, body in (("escaped", json.dumps(turn).encode()),
                   ("utf8", json.dumps(turn, ensure_ascii=False, separators=(",", ":")).encode())):
    query = build_kernel_call(parse_chat_request(body), spec, "aiosd").content
    for _ in range(200):
        build_kernel_call(parse_chat_request(body), spec, "aiosd")
    started = time.process_time_ns()
    for _ in range(requests):
        build_kernel_call(parse_chat_request(body), spec, "aiosd")
    out[name] = (time.process_time_ns() - started) / requests / 1000
    out[name + "_query"] = hashlib.sha256(query).hexdigest()
print(json.dumps(out))
'''
FIXTURE = HERE.parent / "tests/fixtures/openclaw/chat-completions-text-turn.jsonl"


def run(tree: Path, requests: int, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(requests), mode, str(FIXTURE)], env=env,
                          check=True, capture_output=True, text=True, cwd=tree)
    result: dict = json.loads(done.stdout)
    if not result["aiosd"].startswith(str(tree)):
        raise SystemExit(f"{tree}: imported aiosd from {result['aiosd']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[HERE.parent])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--mode", default="prompt", choices=("prompt", "native", "none"))
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    rounds: dict[Path, list[dict]] = {tree: [] for tree in trees}
    for number in range(args.pairs):
        for tree in trees:
            result = run(tree, args.requests, args.mode)
            rounds[tree].append(result)
            print(f"round {number + 1} {tree}: escaped {result['escaped']:.1f} us, utf8 {result['utf8']:.1f} us",
                  flush=True)
    for tree in trees:
        for body in ("escaped", "utf8"):
            figures = [result[body] for result in rounds[tree]]
            print(f"{tree} {body}: median {statistics.median(figures):.1f} us per request "
                  f"({', '.join(f'{f:.1f}' for f in figures)})")
    for body in ("escaped", "utf8"):
        digests = {result[body + "_query"] for tree in trees for result in rounds[tree]}
        print(f"/query body ({body}): {'identical in every tree' if len(digests) == 1 else 'DIFFERS'}")


if __name__ == "__main__":
    main()
