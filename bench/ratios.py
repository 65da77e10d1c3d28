"""aiosd against the bare relay (bench/relay.py), measured in alternation: CPU per request and added p50 as ratios.

Each round runs every server in turn (the order reversed every other round, so neither always
goes first after the fake kernel's own run), for OpenClaw's 60 KB turn not streamed and
streamed, at 1 and 16 connections. A ratio is taken within a round (the machine drifts by more
than the effects between rounds) and the median over the rounds is reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from report import Figure
from wrk_load import LoadResult

CPU_TARGET = 0.67  # aiosd's own CPU per request, at most this times the bare relay's (issue 21)
P50_TARGET = 1.0  # aiosd's added p50 at one connection at most the bare relay's
MODES = ("plain", "stream")
CONNECTIONS = (1, 16)

# load(server, mode, connections, seconds): one wrk run, its CPU per request filled in.
Load = Callable[[str, str, int, float], LoadResult]


@dataclass
class Rounds:
    """Every run of the alternation: ``runs[server][mode][connections]`` is one LoadResult per round."""

    servers: tuple[str, ...]
    runs: dict[str, dict[str, dict[int, list[LoadResult]]]] = field(default_factory=dict)

    def add(self, server: str, mode: str, connections: int, result: LoadResult) -> None:
        self.runs.setdefault(server, {}).setdefault(mode, {}).setdefault(connections, []).append(result)

    def cpu_ratios(self, server: str, mode: str, connections: int) -> list[float]:
        mine, relay = self.runs[server][mode][connections], self.runs["relay"][mode][connections]
        return [a.cpu_ms_per_request / b.cpu_ms_per_request for a, b in zip(mine, relay, strict=True)
                if a.cpu_ms_per_request and b.cpu_ms_per_request]

    def added_p50_ms(self, server: str, mode: str) -> list[float]:
        """Per round: the server's p50 at one connection minus the fake kernel's own (its upstream alone)."""
        kernel = self.runs["kernel"]["plain"][1]
        return [(a.p50_us - k.p50_us) / 1000 for a, k in zip(self.runs[server][mode][1], kernel, strict=True)]

    def as_dict(self) -> dict:
        return {server: {mode: {str(c): [r.as_dict() for r in results] for c, results in by_c.items()}
                         for mode, by_c in by_mode.items()} for server, by_mode in self.runs.items()}


def alternate(load: Load, servers: Sequence[str], rounds: int, seconds: float) -> Rounds:
    """``rounds`` rounds of every server, mode and concurrency, the server order reversed every other round."""
    result = Rounds(tuple(servers))
    for number in range(rounds):
        order = list(servers) if number % 2 == 0 else list(reversed(servers))
        print(f"  round {number + 1}/{rounds}: {' '.join(order)}", flush=True)
        result.add("kernel", "plain", 1, load("kernel", "plain", 1, seconds))
        for mode in MODES:
            for connections in CONNECTIONS:
                for server in order:
                    result.add(server, mode, connections, load(server, mode, connections, seconds))
    return result


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def figures(rounds: Rounds) -> list[Figure]:
    """The ratios for every aiosd in the run (``aiosd``, and ``before`` when a baseline ran)."""
    found: list[Figure] = []
    for server in (s for s in rounds.servers if s != "relay"):
        who = "aiosd" if server == "aiosd" else f"aiosd ({server})"
        for mode in MODES:
            label = "streamed" if mode == "stream" else "not streamed"
            for connections in CONNECTIONS:
                ratios = rounds.cpu_ratios(server, mode, connections)
                found.append(Figure(f"{who} CPU per request / bare relay's, c={connections}, {label}",
                                    _median(ratios), "x", ("<=", CPU_TARGET),
                                    "rounds: " + " ".join(f"{r:.2f}" for r in ratios)))
            mine, relay = rounds.added_p50_ms(server, mode), rounds.added_p50_ms("relay", mode)
            ratios = [a / b for a, b in zip(mine, relay, strict=True) if b > 0]
            found.append(Figure(f"{who} added p50 / bare relay's, c=1, {label}", _median(ratios), "x",
                                ("<=", P50_TARGET),
                                f"{_median(mine)} ms vs {_median(relay)} ms"))
    for mode in MODES:
        label = "streamed" if mode == "stream" else "not streamed"
        cpu = [r.cpu_ms_per_request for r in rounds.runs["relay"][mode][16] if r.cpu_ms_per_request]
        found.append(Figure(f"bare relay CPU per request, c=16, {label} (for scale)", _median(cpu), "ms"))
    return found
