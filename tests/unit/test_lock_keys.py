"""Every advisory lock key is in muto.projections.locks, and no two uses share one (the
notifier's lease and the rollout-start lock once did: POST /rollouts hung for ever)."""

from __future__ import annotations

import ast
from pathlib import Path

from muto.projections.locks import BASE, DUTIES, Lock

ROOT = Path(__file__).resolve().parents[2] / "muto"


def test_no_two_locks_share_a_key() -> None:
    keys = [member.value for member in Lock.__members__.values()]  # aliases included
    assert len(keys) == len(set(keys))
    assert set(DUTIES) <= set(Lock)
    assert len(set(DUTIES)) == len(DUTIES)


def test_every_key_is_in_the_muto_range() -> None:
    assert all(BASE <= member < BASE + 64 for member in Lock)


def test_no_module_but_locks_writes_a_key_or_takes_a_session_lock_of_its_own() -> None:
    """Another home for a key (a literal near BASE) or another leader election (a
    `pg_try_advisory_lock` call outside locks.py) would let keys collide again."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "locks.py":
            continue
        source = path.read_text()
        if "pg_try_advisory_lock" in source:
            offenders.append(f"{path}: elects a leader of its own")
        for node in ast.walk(ast.parse(source)):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, int) and BASE <= value < BASE + 64:
                offenders.append(f"{path}:{node.lineno}: a lock key literal")
    assert offenders == []
