"""What proves a process to be left over by a runtime: the pure rule, with plain data."""

from __future__ import annotations

from muto.agent.runtime.group_ledger import LedgerDocument, StartedGroup
from muto.agent.runtime.procfs import ProcessEntry
from muto.agent.runtime.reaper import proven

BOOT = "boot-1"
LEADER = ProcessEntry(pid=100, ppid=1, pgid=100, start=5000, alive=True)
CHILD = ProcessEntry(pid=101, ppid=100, pgid=100, start=5001, alive=True)
STRANGER = ProcessEntry(pid=200, ppid=1, pgid=200, start=7000, alive=True)


def ledger(*groups: StartedGroup, boot: str = BOOT) -> LedgerDocument:
    return LedgerDocument(mark="m", boot=boot, groups=groups)


def table(*entries: ProcessEntry) -> dict[int, ProcessEntry]:
    return {e.pid: e for e in entries}


def pids(found: dict[tuple[int, int], ProcessEntry]) -> list[int]:
    return sorted(e.pid for e in found.values())


NAV = StartedGroup(release="nav@1.0.0", pgid=100, start=5000)


def test_a_recorded_leader_that_still_matches_proves_its_whole_group() -> None:
    assert pids(proven(ledger(NAV), BOOT, table(LEADER, CHILD, STRANGER))) == [100, 101]


def test_a_zombie_leader_still_holds_its_group_id() -> None:
    zombie = ProcessEntry(pid=100, ppid=1, pgid=100, start=5000, alive=False)
    assert pids(proven(ledger(NAV), BOOT, table(zombie, CHILD))) == [100, 101]


def test_a_pid_handed_out_again_proves_nothing() -> None:
    recycled = ProcessEntry(pid=100, ppid=1, pgid=100, start=9000, alive=True)
    assert proven(ledger(NAV), BOOT, table(recycled, CHILD)) == {}


def test_a_leader_that_left_its_group_proves_nothing() -> None:
    moved = ProcessEntry(pid=100, ppid=1, pgid=300, start=5000, alive=True)
    assert proven(ledger(NAV), BOOT, table(moved, CHILD)) == {}


def test_members_of_a_group_whose_leader_is_gone_are_not_proven_by_the_record() -> None:
    assert proven(ledger(NAV), BOOT, table(CHILD, STRANGER)) == {}


def test_start_times_of_another_boot_prove_nothing() -> None:
    assert proven(ledger(NAV, boot="boot-0"), BOOT, table(LEADER, CHILD)) == {}
    assert proven(ledger(NAV), "", table(LEADER, CHILD)) == {}  # no /proc: no boot id


def test_the_mark_proves_a_process_whatever_the_records_say() -> None:
    marked = ProcessEntry(pid=300, ppid=1, pgid=300, start=8000, alive=True, marked=True)
    assert pids(proven(ledger(boot="boot-0"), BOOT, table(marked, STRANGER))) == [300]
