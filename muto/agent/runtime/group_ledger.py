"""The ledger of the process groups a runtime has started, kept in its workdir so that the
runtime constructed after an agent crash knows what the dead agent left running
(reaper.py reads it)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import msgspec

from muto.agent.runtime.procfs import boot_id, read_entry
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.trust.files import atomic_write, private_dir

SCHEMA = "muto.process-groups.v1"
FILE = "process-groups.json"
# In the environment of every process the runtime starts (commands and probes alike),
# so that what they spawn is found even when nobody recorded its group.
MARK_ENV = "MUTO_RUNTIME_MARK"

logger = logging.getLogger("muto.agent.runtime")


class StartedGroup(msgspec.Struct, frozen=True, kw_only=True):
    release: str  # stack@version
    pgid: int  # the leader's pid: it leads a new session, so its group id for life
    start: int  # the leader's start time: pgid + start (+ boot) is the leader, no other


class LedgerDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schema: str = SCHEMA
    mark: str  # the value of MARK_ENV: random, kept for the life of the workdir
    boot: str  # the boot the start times were read in
    groups: tuple[StartedGroup, ...] = ()


def new_document() -> LedgerDocument:
    return LedgerDocument(mark=secrets.token_hex(16), boot=boot_id())


def mark_entry(document: LedgerDocument) -> str:
    """The mark as it appears in /proc/<pid>/environ."""
    return f"{MARK_ENV}={document.mark}"


class GroupLedger:
    """`workdir/process-groups.json`, replaced atomically (temp file, fsync, rename) on
    every change: a crash leaves the old ledger or the new one, never half of one."""

    def __init__(self, path: Path, document: LedgerDocument) -> None:
        self.path = path
        self.document = document

    @staticmethod
    def read(path: Path) -> LedgerDocument | None:
        """The ledger on disk, None if there is none. One that cannot be decoded is
        ReasonError(APPLY_FAILED): without it nothing proves what may still run, so the
        runtime refuses to start rather than risk a second copy of a stack."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return msgspec.json.decode(data, type=LedgerDocument)
        except msgspec.DecodeError as exc:
            detail = f"{path}: {exc}; remove it once no process of this runtime runs"
            raise ReasonError(ReasonCode.APPLY_FAILED, detail) from None

    @property
    def environment(self) -> dict[str, str]:
        """What goes into the environment of every process the runtime starts."""
        return {MARK_ENV: self.document.mark}

    @property
    def mark(self) -> str:
        return mark_entry(self.document)

    def save(self) -> None:
        private_dir(self.path.parent)
        atomic_write(self.path, msgspec.json.encode(self.document))

    def started(self, release: str, pid: int) -> None:
        """Record the group `pid` leads. OSError if the ledger cannot be written: the
        caller then stops the group, since a crash would leave it unrecorded."""
        leader = read_entry(pid)
        if leader is None or leader.ppid != os.getpid() or leader.pgid != pid:
            return  # already exited and reaped: what it left behind carries the mark
        group = StartedGroup(release=release, pgid=pid, start=leader.start)
        kept = tuple(g for g in self.document.groups if g.pgid != pid)
        self._replace((*kept, group))

    def stopped(self, pgid: int) -> None:
        """Forget the group. A failed write is only logged: a stale record is harmless,
        since its leader is gone and a pid that no longer matches is never signalled."""
        try:
            self._replace(tuple(g for g in self.document.groups if g.pgid != pgid))
        except OSError as exc:
            logger.warning("cannot forget process group %d in %s: %s", pgid, self.path, exc)

    def _replace(self, groups: tuple[StartedGroup, ...]) -> None:
        previous = self.document
        self.document = msgspec.structs.replace(previous, groups=groups)
        try:
            self.save()
        except BaseException:
            self.document = previous
            raise
