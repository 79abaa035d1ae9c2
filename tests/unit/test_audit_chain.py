"""The hash chain's comparison, on plain records: the first disagreement between the
log and the chain is named, whatever the tampering."""

from __future__ import annotations

from dataclasses import dataclass, replace
from uuid import UUID, uuid5

from muto.audit.verify import Finding, Link, check
from muto.projections.chain import GENESIS, canonical, link

AGGREGATE = uuid5(UUID(int=0), "vehicle")


@dataclass(frozen=True)
class Record:
    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


def log(n: int) -> list[Record]:
    return [
        Record(i, AGGREGATE, i, "muto.domain.model.vehicle:Vehicle.Updated", b'{"n":%d}' % i)
        for i in range(1, n + 1)
    ]


def chain(records: list[Record]) -> list[Link]:
    links, previous = [], GENESIS
    for r in records:
        previous = link(previous, r)
        links.append((r.id, previous.hex()))
    return links


def broken(found: Finding) -> tuple[int | None, str]:
    return found.bad_position, (found.reason or "").split(":")[0]


def test_an_intact_log_checks_to_its_head() -> None:
    records = log(5)
    found = check(records, chain(records))
    assert found.intact and (found.checked, found.head_position) == (5, 5)
    assert found.head_hash == chain(records)[-1][1]
    assert check([], []) == Finding(0, 0, GENESIS.hex())


def test_each_kind_of_tampering_is_named_at_its_first_position() -> None:
    records = log(6)
    links = chain(records)
    edited = [*records[:2], replace(records[2], state=b'{"n":33}'), *records[3:]]
    swapped = [
        records[0],
        replace(records[1], state=records[2].state),
        replace(records[2], state=records[1].state),
        *records[3:],
    ]
    renumbered = [replace(r, id=r.id + 10) if r.id >= 4 else r for r in records]
    assert broken(check(edited, links)) == (3, "differs from its chained hash")
    assert broken(check(swapped, links)) == (2, "differs from its chained hash")
    assert broken(check(records[:3] + records[4:], links)) == (
        4,
        "in the chain but missing from the log",
    )
    assert broken(check(records[:-1], links)) == (6, "in the chain but missing from the log")
    assert broken(check([*records, replace(records[0], id=7)], links)) == (
        7,
        "in the log but not in the chain",
    )
    assert broken(check(renumbered, links)) == (4, "in the chain but missing from the log")
    forged_link = [*links[:1], (2, "0" * 64), *links[2:]]
    assert broken(check(records, forged_link)) == (2, "differs from its chained hash")


def test_a_gap_in_positions_is_fine_but_a_row_in_it_is_not() -> None:
    records = [r for r in log(6) if r.id not in (3, 4)]  # PostgreSQL skips ids
    links = chain(records)
    assert check(records, links).intact
    slipped = sorted([*records, replace(log(6)[0], id=3)], key=lambda r: r.id)
    assert broken(check(slipped, links)) == (3, "in the log but not in the chain")


def test_anchors_catch_a_consistent_rewrite() -> None:
    records = log(4)
    anchor = {4: chain(records)[-1][1]}
    rewritten = [*records[:1], replace(records[1], state=b"{}"), *records[2:]]
    assert check(records, chain(records), anchor).anchors_checked == [4]
    assert check(rewritten, chain(rewritten)).intact  # both tables rewritten: consistent
    assert broken(check(rewritten, chain(rewritten), anchor)) == (
        4,
        "differs from the anchored hash",
    )
    assert broken(check(records[:3], chain(records[:3]), anchor)) == (
        4,
        "anchored position is not in the log",
    )


def test_fields_are_framed_so_no_two_records_share_canonical_bytes() -> None:
    one = Record(1, AGGREGATE, 1, "a:B", b"Cd")
    other = Record(1, AGGREGATE, 1, "a:BC", b"d")
    assert canonical(one) != canonical(other)
    assert canonical(one) == canonical(replace(one, originator_id=str(AGGREGATE)))  # type: ignore[arg-type]
