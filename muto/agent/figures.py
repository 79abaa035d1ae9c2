"""The agent's own figures: what its health report carries in `metrics` and what the
optional local /metrics port exposes (muto/agent/metrics_port.py). Read from what the
agent keeps anyway (the journal's state, the runtime's status, the journal file's size)
plus one counter: gate blocks by reason code, counted when a pass turns blocked."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from muto.agent.journal.journal import DB_NAME
from muto.agent.journal.state import JournalState
from muto.agent.runtime.base import RuntimeStatus

GATE_BLOCKS = "gate_blocks."  # health-report key prefix, one key per reason code


def journal_bytes(data_dir: Path | None) -> int | None:
    """The journal's files on disk (the database and its write-ahead log); None for a
    journal in memory."""
    if data_dir is None:
        return None
    paths = (data_dir / DB_NAME, data_dir / f"{DB_NAME}-wal")
    return sum(p.stat().st_size for p in paths if p.exists())


@dataclass
class AgentFigures:
    # Since the agent started: a block that persists across passes counts once.
    gate_blocks: Counter[str] = field(default_factory=Counter)

    def blocked(self, codes: Iterable[str]) -> None:
        self.gate_blocks.update(str(code) for code in codes)

    def report(
        self, state: JournalState, runtime: RuntimeStatus, journal_size: int | None
    ) -> dict[str, float]:
        """The health report's `metrics`: flat names, base units."""
        figures = {
            "restarts": float(runtime.restart_count),
            "outbox": float(len(state.outbox)),
        }
        last = state.last_apply
        if last is not None and last.apply_sec is not None:
            figures["apply_seconds"] = float(last.apply_sec)
        if last is not None and last.readiness_sec is not None:
            figures["readiness_seconds"] = float(last.readiness_sec)
        if journal_size is not None:
            figures["journal_bytes"] = float(journal_size)
        for code, count in sorted(self.gate_blocks.items()):
            figures[GATE_BLOCKS + code] = float(count)
        return figures
