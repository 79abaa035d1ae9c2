"""GET /audit/records' paging (muto.cloud.api.audit.read_records) over a log held in a
list: a story's page stops at `limit` records or after SCAN records read, and
`nextAfter` is where reading stopped, so following it reads every kept record once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from eventsourcing.persistence import Notification

from muto.cloud.api.audit import RECORDS_PAGE, SCAN, Keep, read_records

KEPT = uuid.uuid4()


class ListLog:
    """The EventSource port over a list; position n is the n-th record."""

    def __init__(self, kept_every: int, size: int) -> None:
        self.records = [
            Notification(
                id=n,
                originator_id=KEPT if n % kept_every == 0 else uuid.uuid4(),
                originator_version=1,
                topic="muto.domain.model.vehicle:Vehicle.Registered",
                state=b"{}",
            )
            for n in range(1, size + 1)
        ]

    def position(self) -> int:
        return len(self.records)

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        stop = len(self.records) if until is None else until
        return self.records[after : min(after + limit, stop)]

    def decode(self, record: Notification) -> Any:
        raise AssertionError("paging never decodes")


def kept(record: Notification) -> bool:
    return record.originator_id == KEPT


def follow(log: ListLog, limit: int, keep: Keep | None, until: int | None = None) -> list[int]:
    found: list[int] = []
    after: int | None = 0
    while after is not None:
        page, after = read_records(log, after, until, limit, keep)
        assert len(page) <= limit
        found += [r.id for r in page]
    return found


@pytest.mark.parametrize("limit", [7, RECORDS_PAGE])
@pytest.mark.parametrize("kept_every", [1, 3, SCAN + 1])
def test_following_next_after_reads_every_kept_record_once(limit: int, kept_every: int) -> None:
    log = ListLog(kept_every, 2 * SCAN + 5)
    expected = [r.id for r in log.records if kept(r)]
    assert follow(log, limit, kept) == expected
    assert follow(log, limit, None) == [r.id for r in log.records]
    assert follow(log, limit, kept, until=SCAN) == [p for p in expected if p <= SCAN]


def test_a_rare_story_ends_a_page_early_where_reading_stopped() -> None:
    log = ListLog(SCAN + 1, 2 * SCAN + 5)
    page, after = read_records(log, 0, None, 200, kept)
    assert (page, after) == ([], SCAN)
    page, after = read_records(log, after, None, 200, kept)
    assert ([r.id for r in page], after) == ([SCAN + 1], 2 * SCAN)
