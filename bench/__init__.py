"""Benchmarks: figures for docs/performance.md, never part of the tests.

Each benchmark module (bench/store.py, ...) has a `TITLE` (its heading in the doc) and
`run() -> list[Result]`. Every figure names its workload and is compared with a
baseline measured in the same run, on the same machine, so that a figure from a noisy
or slower machine still says something. `python -m bench` runs them all.
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


@dataclass(frozen=True)
class Result:
    """One figure. `ratio` is value ÷ baseline (a rate above 1, or a time below 1, beats
    the baseline)."""

    name: str
    value: float
    unit: str
    workload: str
    baseline_name: str
    baseline_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(action: Callable[[], object]) -> float:
    """Seconds taken by `action()`."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_ms(action: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(action) for _ in range(repeat)) * 1000


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def machine() -> str:
    """One line: where and when the figures were measured."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs (`nproc`), {cpu_model()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}; load average {load:.1f} when it finished "
        "(other work on the machine slows every figure; the ratios move less)"
    )


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(result: Result) -> str:
    value = result.ratio
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def section(name: str, title: str, results: list[Result], notes: str = "") -> str:
    """The doc section of one module, between markers that `update_doc` finds again."""
    lines = [
        f"<!-- bench:{name}:begin (written by `python -m bench {name}`) -->",
        f"## {title}",
        "",
        f"Measured {machine()}.",
        "",
        "| Figure | Value | Baseline (same run) | Ratio | Workload |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {number(r.value)} {r.unit} | {r.baseline_name}: "
            f"{number(r.baseline_value)} {r.unit} | {ratio(r)} | {r.workload} |"
        )
    if notes:
        lines += ["", notes.strip()]
    lines.append(f"<!-- bench:{name}:end -->")
    return "\n".join(lines)


def update_doc(name: str, text: str, doc: Path = DOC) -> None:
    """Replace the module's section in docs/performance.md, or append it."""
    current = doc.read_text() if doc.exists() else "# Performance\n"
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:begin.*?<!-- bench:{re.escape(name)}:end -->", re.S
    )
    if pattern.search(current):
        updated = pattern.sub(lambda _: text, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(updated)
