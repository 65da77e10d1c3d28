"""The continuation benchmark (issue 17): answers longer than the kernel's 1000-token cap.

    python3 bench/continuation.py                 # about a minute
    python3 bench/continuation.py --quick         # a few seconds: checks the harness
    python3 bench/continuation.py --corpus DIR    # also read *.md under DIR (e.g. the OpenClaw install's) for detection

Three parts:

- **detection**: how often the cut rule (``translate.stitch.verdict``) is wrong. False positives:
  complete answers of about 1000 tokens (2,400-4,500 bytes, consecutive paragraphs ending at a
  paragraph's end) taken from real text: OpenClaw's recorded system prompt, this README, the
  docstrings of Python's standard library, and any ``--corpus`` Markdown. False negatives: the
  same texts cut at 1000 tokens, tokens approximated by a GPT-2-style pre-tokenizer (no real
  tokenizer is available offline; real BPE makes more tokens, so real cuts land a little earlier).
- **latency**: a 3-piece answer (about 2,700 tokens, 10.8 KB) through aiosd from a fake kernel
  that cuts, time to the first streamed content byte and to the end, against the same answer
  from a kernel that does not cut (one call). The fake LLM takes ``--llm-seconds`` a call.
- **cpu**: aiosd's own CPU per continuation: process CPU time of the whole request path (aiosd runs
  in this process; the fake kernel's thread is not counted) for a 3-piece answer minus a 1-piece
  one, divided by 2; and the stitching alone (overlap search, join) on 4000-character pieces.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import pkgutil
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

import httpx  # noqa: E402

from aiosd.translate import stitch  # noqa: E402
from tests.support.aiosd_harness import config_for, serve_aiosd  # noqa: E402
from tests.support.fake_kernel import FakeKernel, Text  # noqa: E402
from tests.support.long_answers import prose  # noqa: E402

CAP = 1000
MODELS = 'models: {map: {sonnet: {kernel_model: "gpt-4o-mini", backend: openai}}}\n'
_PRETOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+""")


# --- detection ------------------------------------------------------------------------------------


def corpus_texts(extra: Path | None) -> dict[str, list[str]]:
    """Real documents by source."""
    texts = {
        "openclaw-system-prompt": [SYSTEM],
        "readme": [(ROOT / "README.md").read_text(encoding="utf-8")],
        "python-docstrings": _stdlib_docstrings(),
    }
    if extra is not None:
        # Documents, not change logs (lists of commit links are no one's answer).
        texts["corpus-md"] = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(extra.rglob("*.md"))
                              if "change" not in p.name.lower() and "history" not in p.name.lower()]
    return texts


def _stdlib_docstrings() -> list[str]:
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_")):
            if module in ("antigravity", "this", "idlelib", "turtledemo", "tkinter", "test"):
                continue
            try:
                mod = __import__(module)
            except BaseException:  # any module that will not import (or exits on import) is skipped
                continue
            for _, obj in inspect.getmembers(mod):
                doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
                if doc and len(doc) > 400:
                    docs.append(doc)
            if inspect.getdoc(mod):
                docs.append(inspect.getdoc(mod) or "")
    return docs


def complete_answers(documents: list[str], rng: random.Random) -> list[str]:
    """Runs of whole paragraphs of 2,400-4,500 UTF-8 bytes (a complete answer of about 1000 tokens)."""
    answers = []
    for document in documents:
        paragraphs = [p for p in re.split(r"\n\s*\n", document) if p.strip()]
        chunk: list[str] = []
        target = rng.randint(2400, 4400)
        for paragraph in paragraphs:
            chunk.append(paragraph)
            size = stitch.utf8_len("\n\n".join(chunk))
            if size >= target:
                if size <= 4500:
                    answers.append("\n\n".join(chunk))
                chunk, target = [], rng.randint(2400, 4400)
    return answers


def cut_answers(documents: list[str]) -> list[str]:
    """Every document long enough, cut after 1000 pre-tokens (and again from there on)."""
    cuts = []
    for document in documents:
        tokens = _PRETOKEN.findall(document)
        for start in range(0, len(tokens) - CAP, CAP):
            cuts.append("".join(tokens[start:start + CAP]))
    return cuts


def detection(extra: Path | None) -> dict:
    rng = random.Random(17)
    results: dict = {}
    for source, documents in corpus_texts(extra).items():
        complete = complete_answers(documents, rng)
        cut = cut_answers(documents)
        false_pos = [a for a in complete if _verdict(a)]
        false_neg = [c for c in cut if not _verdict(c)]
        results[source] = {
            "complete": len(complete), "false_positives": len(false_pos),
            "cut": len(cut), "false_negatives": len(false_neg),
            "fp_endings": [a.rstrip()[-40:] for a in false_pos[:8]],
            "fn_endings": [c.rstrip()[-40:] for c in false_neg[:5]],
        }
    return results


def _verdict(text: str) -> stitch.Verdict:  # the first piece's rule, without tool calls
    return stitch.verdict(text, ends_in_invoke=False, block_open=False, cap_tokens=CAP)


# --- latency and CPU through aiosd ----------------------------------------------------------------


@dataclass
class Timing:
    first_byte: float
    total: float


def _openclaw_system_prompt() -> str:
    recorded = ROOT / "tests/fixtures/openclaw/chat-completions-text-turn.jsonl"
    return json.loads(recorded.read_text(encoding="utf-8").splitlines()[0])["body"]["messages"][0]["content"]


SYSTEM = _openclaw_system_prompt()  # 50 KB: every continuation sends it again


async def _one_stream(client: httpx.AsyncClient) -> Timing:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "a long story"}]
    body = {"model": "sonnet", "messages": messages, "stream": True}
    started = time.perf_counter()
    first = None
    async with client.stream("POST", "/chat/completions", json=body) as response:
        async for chunk in response.aiter_bytes():
            if first is None and b'"content":"S' in chunk:
                first = time.perf_counter() - started
    assert response.status_code == 200
    return Timing(first or float("nan"), time.perf_counter() - started)


async def latency(workdir: Path, runs: int, llm_seconds: float) -> dict:
    answer = prose(10_800, seed=3)
    out = {}
    # The baseline: a kernel that does not cut, and an aiosd told so (a cap it never reaches).
    for label, cap in (("capped, 3 pieces", CAP), ("uncapped, 1 call", None)):
        told = "" if cap else "kernel: {answer_token_cap: 1000000}\n"
        folder = workdir / label.replace(" ", "_").replace(",", "")
        folder.mkdir()
        with FakeKernel(answer_token_cap=cap, llm_latency=llm_seconds, record=False) as kernel:
            kernel.llm = lambda messages, tools, model: Text(answer)
            async with serve_aiosd(config_for(folder, kernel.url, MODELS + told + "logging: {level: warning}\n")) \
                    as aiosd, \
                    httpx.AsyncClient(base_url=aiosd.base_url, timeout=60) as client:
                await _one_stream(client)  # warm-up
                kernel.reset_counters()
                timings = [await _one_stream(client) for _ in range(runs)]
                calls = kernel.query_count / runs
        out[label] = {"first_byte_ms": _median_ms(t.first_byte for t in timings),
                      "total_ms": _median_ms(t.total for t in timings), "kernel_calls": calls}
    return out


def _median_ms(values) -> float:
    return round(statistics.median(values) * 1000, 2)


async def cpu(workdir: Path, runs: int) -> dict:
    answers = {"1 piece": prose(3_000, seed=5), "3 pieces": prose(10_800, seed=3)}
    per_request = {}
    with FakeKernel(record=False) as kernel:
        (workdir / "cpu").mkdir()
        async with serve_aiosd(config_for(workdir / "cpu", kernel.url, MODELS + "logging: {level: warning}\n")) \
                as aiosd, httpx.AsyncClient(base_url=aiosd.base_url, timeout=60) as client:
            for label, answer in answers.items():
                kernel.llm = lambda messages, tools, model, answer=answer: Text(answer)
                await _one_stream(client)
                samples = []
                for _ in range(runs):
                    before = time.thread_time()  # this thread only: aiosd and the client, not the kernel's thread
                    await _one_stream(client)
                    samples.append(time.thread_time() - before)
                per_request[label] = statistics.median(samples)
    per_continuation = (per_request["3 pieces"] - per_request["1 piece"]) / 2
    return {"cpu_per_request_ms": {k: round(v * 1000, 3) for k, v in per_request.items()},
            "cpu_per_continuation_ms": round(per_continuation * 1000, 3),
            "stitch_per_piece_us": _stitch_cost()}


def _stitch_cost() -> dict:
    """The pure text work per 4000-character piece: overlap search and join, exact and repeating models."""
    text = prose(16_000, seed=9)
    pieces = [text[i:i + 4000] for i in range(0, len(text), 4000)]
    out = {}
    for label, make in (("exact", lambda answer, piece: piece),
                        ("repeats last line", lambda answer, piece: answer[answer.rfind("\n\n") + 2:] + piece),
                        ("periodic worst case", lambda answer, piece: "a" * 4000)):
        started = time.perf_counter()
        rounds = 200
        for _ in range(rounds):
            answer = pieces[0]
            for piece in pieces[1:]:
                answer += stitch.join_piece(answer, make(answer, piece), None).added
        out[label] = round((time.perf_counter() - started) / rounds / (len(pieces) - 1) * 1e6, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--corpus", type=Path, help="also read every *.md under this folder for detection")
    parser.add_argument("--llm-seconds", type=float, default=0.5, help="the fake LLM's time per call")
    args = parser.parse_args()
    runs = 3 if args.quick else 15
    results = {"detection": detection(args.corpus)}
    with tempfile.TemporaryDirectory() as tmp:
        results["latency"] = asyncio.run(latency(Path(tmp), runs, 0.05 if args.quick else args.llm_seconds))
        results["cpu"] = asyncio.run(cpu(Path(tmp), runs * 2))
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
