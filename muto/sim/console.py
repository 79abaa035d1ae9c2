"""Live progress and summary tables on a terminal (or plain lines in a log)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, TextIO

BAR = 30


class Console:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = ""
        self._last_at = 0.0

    def say(self, text: str = "") -> None:
        self._end_line()
        print(text, file=self.out, flush=True)

    def progress(self, label: str, done: int, total: int, detail: str = "") -> None:
        filled = BAR * done // total if total else BAR
        line = f"  {label:<10} [{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} {detail}"
        if self.tty:
            print("\r" + line.ljust(len(self._last)), end="", file=self.out, flush=True)
        elif line != self._last and time.monotonic() - self._last_at > 2.0:
            print(line, file=self.out, flush=True)
            self._last_at = time.monotonic()
        self._last = line

    def _end_line(self) -> None:
        if self.tty and self._last:
            print(file=self.out)
        self._last = ""

    def table(self, title: str, rows: Iterable[tuple[str, int]]) -> None:
        rows = list(rows)
        width = max((len(k) for k, _ in rows), default=10)
        self.say(f"  {title}")
        for key, count in rows:
            self.say(f"    {key:<{width}}  {count:>5}")


def phase_detail(rollout: dict[str, Any]) -> tuple[int, int, str]:
    """(converged, targeted, one-line detail) over a rollout's phases."""
    phases = rollout["phases"]
    converged = sum(p["converged"] for p in phases.values())
    targeted = sum(p["targeted"] for p in phases.values())
    parts = []
    for name in ("canary", "wave"):
        p = phases.get(name)
        if not p:
            continue
        text = f"{name} {p['converged']}/{p['targeted']}"
        if p["deferred"]:
            text += f" deferred {p['deferred']} {dict(p['deferredBy'])}"
        if p["failed"]:
            text += f" failed {p['failed']} {dict(p['failedBy'])}"
        if p["rolledBack"]:
            text += f" rolled back {p['rolledBack']}"
        parts.append(text)
    return converged, targeted, f"{rollout['state']}: " + " · ".join(parts)


def counts(vehicles: list[dict[str, Any]], key: str) -> list[tuple[str, int]]:
    return sorted(Counter(str(v.get(key) or "-") for v in vehicles).items())


def reason_counts(vehicles: list[dict[str, Any]]) -> list[tuple[str, int]]:
    found = Counter(code for v in vehicles for code in v.get("lastReasonCodes") or [])
    return sorted(found.items()) or [("(none)", 0)]
