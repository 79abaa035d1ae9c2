"""Reaping what a dead agent left running. A process-based runtime does it once, when it
is constructed on its workdir, before it can start anything: a SIGKILLed agent (OOM
killer, `kill -9`) cannot stop its stack, whose process groups outlive it as orphans, and
the next agent would otherwise start a second copy of that stack beside them.

A process is signalled only when it is proven to be one the runtime started:
- it carries the workdir's mark in its environment (MARK_ENV, a random value that only
  the runtime puts there), or
- it belongs to a recorded group whose leader is still the process recorded: same boot,
  same pid, same start time. While that leader exists its pid cannot be handed out, so
  no other group can have that id.
A recycled pid, a record from an earlier boot, or a group whose leader is gone and whose
members do not carry the mark are left alone (the last one is logged).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec

from muto.agent.runtime.group_ledger import (
    GroupLedger,
    LedgerDocument,
    mark_entry,
    new_document,
)
from muto.agent.runtime.procfs import (
    ProcessEntry,
    boot_id,
    process_table,
    signal_process,
)

KILL_WAIT_SEC = 5.0
POLL_SEC = 0.02

logger = logging.getLogger("muto.agent.runtime")

Identity = tuple[int, int]  # (pid, start time): one process, never its successor


def proven(
    document: LedgerDocument, boot: str, table: Mapping[int, ProcessEntry]
) -> dict[Identity, ProcessEntry]:
    """The processes of `table` proven to be left over by the runtime whose ledger is
    `document` (see the module docstring). Pure: plain data in, plain data out."""
    found = {(p.pid, p.start): p for p in table.values() if p.marked}
    if not boot or document.boot != boot:
        return found  # start times from another boot prove nothing
    for group in document.groups:
        leader = table.get(group.pgid)
        if leader is not None and leader.start == group.start and leader.pgid == group.pgid:
            found.update({(p.pid, p.start): p for p in table.values() if p.pgid == group.pgid})
    return found


def take_over(path: Path, grace_sec: float) -> GroupLedger:
    """Reap whatever the ledger at `path` proves to be left over, then return a fresh
    ledger (the same mark, this boot, no groups) for the runtime taking the workdir over.
    Blocks for up to `grace_sec` + KILL_WAIT_SEC when something must be stopped."""
    document = GroupLedger.read(path)
    if document is None:
        ledger = GroupLedger(path, new_document())
    else:
        survivors, boot = reap(document, grace_sec), boot_id()
        # Records of what survived SIGKILL (stuck in the kernel) stay for the next start.
        groups = tuple(
            g
            for g in document.groups
            if document.boot == boot and any(s.pgid == g.pgid for s in survivors)
        )
        fresh = msgspec.structs.replace(document, boot=boot, groups=groups)
        ledger = GroupLedger(path, fresh)
    ledger.save()
    return ledger


def reap(document: LedgerDocument, grace_sec: float) -> list[ProcessEntry]:
    """SIGTERM every proven leftover, SIGKILL what is left after `grace_sec`; return
    what is still alive KILL_WAIT_SEC later (a process stuck in the kernel). Each round
    looks again, so a child forked during the shutdown is found too."""
    mark, boot = mark_entry(document), boot_id()
    doomed: dict[Identity, ProcessEntry] = {}
    sent: dict[Identity, signal.Signals] = {}
    began = time.monotonic()
    first = True
    while True:
        table = process_table(mark)
        if first:
            _log_unproven(document, boot, table)
            first = False
        doomed.update(proven(document, boot, table))
        alive = [p for p in doomed.values() if _still_alive(table, p)]
        elapsed = time.monotonic() - began
        if not alive or elapsed >= grace_sec + KILL_WAIT_SEC:
            break
        sig = signal.SIGTERM if elapsed < grace_sec else signal.SIGKILL
        for entry in alive:
            if sent.get((entry.pid, entry.start)) != sig:
                signal_process(entry, sig)
                sent[(entry.pid, entry.start)] = sig
        time.sleep(POLL_SEC)
    _log_reaped(document, doomed, alive)
    return alive


def _still_alive(table: Mapping[int, ProcessEntry], entry: ProcessEntry) -> bool:
    now = table.get(entry.pid)
    return now is not None and now.start == entry.start and now.alive


def _release_of(document: LedgerDocument, entry: ProcessEntry) -> str:
    recorded = next((g.release for g in document.groups if g.pgid == entry.pgid), None)
    return recorded or entry.release or "an unknown release"


def _log_reaped(
    document: LedgerDocument, doomed: Mapping[Identity, ProcessEntry], alive: list[ProcessEntry]
) -> None:
    groups: dict[int, list[ProcessEntry]] = {}
    for entry in doomed.values():
        groups.setdefault(entry.pgid, []).append(entry)
    for pgid, members in sorted(groups.items()):
        pids = ", ".join(str(m.pid) for m in sorted(members, key=lambda m: m.pid))
        logger.warning(
            "reaped %s left running by an agent that died: process group %d (pids %s)",
            _release_of(document, members[0]),
            pgid,
            pids,
        )
    for entry in alive:
        logger.error(
            "pid %d of %s (process group %d) is still alive after SIGKILL",
            entry.pid,
            _release_of(document, entry),
            entry.pgid,
        )


def _log_unproven(document: LedgerDocument, boot: str, table: Mapping[int, ProcessEntry]) -> None:
    """Recorded groups that still have live members but cannot be proven ours."""
    mine = proven(document, boot, table)
    for group in document.groups:
        others = [
            p.pid
            for p in table.values()
            if p.pgid == group.pgid and p.alive and (p.pid, p.start) not in mine
        ]
        if others:
            logger.warning(
                "process group %d (recorded for %s) has live pids %s that nothing proves to "
                "be its own (leader gone or pid reused): not signalled",
                group.pgid,
                group.release,
                others,
            )
