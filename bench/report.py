"""Figures against their targets: the printed table, the JSON file and the Markdown table for RESULTS.md."""

from __future__ import annotations

import json
import operator
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_COMPARE = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    # ("<=", 1.0) or None when the issue sets no target (shown for context).
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.value is None:
            return "MISS"
        op, bound = self.target
        return "pass" if _COMPARE[op](self.value, bound) else "MISS"

    def target_text(self) -> str:
        return "" if self.target is None else f"{self.target[0]} {_number(self.target[1])} {self.unit}"

    def value_text(self) -> str:
        return "n/a" if self.value is None else f"{_number(self.value)} {self.unit}"


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value)}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "target", "")] + [
        (f.name + (f" ({f.note})" if f.note else ""), f.value_text(), f.target_text(), f.verdict) for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| figure | value | target | |", "|---|---|---|---|"]
    for f in figures:
        name = f.name + (f" ({f.note})" if f.note else "")
        lines.append(f"| {name} | {f.value_text()} | {f.target_text()} | {f.verdict} |")
    return "\n".join(lines)


def machine() -> dict:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    try:
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    packages = {}
    for name in ("litestar", "uvicorn", "httptools", "uvloop", "aiohttp", "msgspec"):
        try:
            from importlib.metadata import version

            packages[name] = version(name)
        except Exception:
            packages[name] = None
    wrk = subprocess.run(["sh", "-c", "wrk --version 2>&1 | head -1"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": packages,
        "wrk": wrk,
    }


def write_json(path: Path, figures: list[Figure], details: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "figures": [{**asdict(f), "verdict": f.verdict} for f in figures],
        "details": details,
        "machine": machine(),
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
