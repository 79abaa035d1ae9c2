"""`verify`: recompute the hash chain from the raw event table and compare it, link by
link, with the chain the projector stored. The first disagreement is named.

What each finding means:
- a record's recomputed hash differs from its link: the row was edited, or two rows'
  contents were swapped (the hash covers the position), or the link itself was altered;
- a chained position is missing from the log: the row was deleted (also the last one);
- a logged position has no link, below the position the projector says it has chained
  through: the row was inserted (into a PostgreSQL id gap), or the link deleted.
Events logged after that position are not chained yet: counted, never a finding (on a
running control plane the projector reaches them within a second; a row appended while
it is stopped is told from them only by verifying again once it has run).
Anchors (position -> hash recorded outside the database) catch a rewrite of both tables,
and a truncation of either (the finding says which of the two lacks the anchored position).

The check runs up to the chained-through position read first. Links and that position
commit together, and the log's rows up to it were committed before the projector read
them, so both tables are read as of one moment although they are read page by page,
in separate transactions, and on SQLite from separate files: a live control plane
writing meanwhile is no finding (it was: "deleted" at a link written after the log's
last page was read).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Engine,
    Executable,
    MetaData,
    Row,
    bindparam,
    create_engine,
    inspect,
    select,
    text,
)

from muto.audit.source import AuditError, NoDatabase, read_only_url
from muto.projections.chain import GENESIS, HashChain, StoredRecord, link
from muto.projections.store import TRACKING_TABLE

Link = tuple[int, str]  # (position, hex hash) as stored by the projector
# An anchor as an operator passes it: POSITION:SHA256HEX (spec/api.yaml publishes it).
ANCHOR_PATTERN = "^[0-9]{1,10}:[0-9a-fA-F]{64}$"
PAGE = 5000


def parse_anchor(text: str) -> tuple[int, str] | None:
    """(position, hash) from POSITION:SHA256HEX; None when it is not one."""
    if re.fullmatch(ANCHOR_PATTERN, text) is None:
        return None
    position, _, digest = text.partition(":")
    return int(position), digest.lower()


@dataclass(frozen=True)
class Finding:
    checked: int  # records whose hash matched their link
    head_position: int  # the last good position (0: none)
    head_hash: str
    bad_position: int | None = None
    reason: str | None = None
    anchors_checked: list[int] = field(default_factory=list)
    unchained: int = 0  # events logged after the chained-through position

    @property
    def intact(self) -> bool:
        return self.bad_position is None

    def to_json(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "checked": self.checked,
            "headPosition": self.head_position,
            "headHash": self.head_hash,
            "badPosition": self.bad_position,
            "reason": self.reason,
            "anchorsChecked": self.anchors_checked,
            "unchained": self.unchained,
        }

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> Finding:
        """What `to_json` wrote (a control plane's GET /audit/verify answers it)."""
        return cls(
            checked=found["checked"],
            head_position=found["headPosition"],
            head_hash=found["headHash"],
            bad_position=found["badPosition"],
            reason=found["reason"],
            anchors_checked=list(found["anchorsChecked"]),
            unchained=found.get("unchained", 0),  # an older control plane's answer
        )


def check(
    log: Iterable[StoredRecord],
    chain: Iterable[Link],
    anchors: Mapping[int, str] = {},
    past_chain: Collection[int] = (),
) -> Finding:
    """Walk the log and the chain together, in position order (a merge of two sorted
    streams), and stop at the first position where they disagree. `past_chain`: the
    anchored positions the log holds past the end of the walk (the chain ends before
    them), so that a missing anchor says which of the two lacks it."""
    previous, checked, head = GENESIS, 0, 0
    seen: list[int] = []
    records_, links = iter(log), iter(chain)
    record, stored = next(records_, None), next(links, None)

    def bad(position: int, reason: str) -> Finding:
        return Finding(checked, head, previous.hex(), position, reason, seen)

    while record is not None or stored is not None:
        if stored is None or (record is not None and record.id < stored[0]):
            assert record is not None
            return bad(record.id, "in the log but not in the chain: inserted, or its link deleted")
        if record is None or stored[0] < record.id:
            return bad(stored[0], "in the chain but missing from the log: deleted")
        try:
            current = link(previous, record)
        except (TypeError, ValueError, AttributeError):
            return bad(record.id, "is not a well-formed record: edited (its stored types)")
        if current.hex() != stored[1]:
            return bad(record.id, "differs from its chained hash: edited, swapped or re-chained")
        expected = anchors.get(record.id)
        if expected is not None:
            if expected.lower() != current.hex():
                return bad(record.id, "differs from the anchored hash: the chain was rewritten")
            seen.append(record.id)
        previous, checked, head = current, checked + 1, record.id
        record, stored = next(records_, None), next(links, None)
    missing = sorted(set(anchors) - set(seen))
    if missing and missing[0] in past_chain:
        return bad(
            missing[0],
            f"anchored position is in the log but not in the chain, which ends at {head}: "
            "the chain was truncated",
        )
    if missing:
        return bad(missing[0], "anchored position is not in the log: truncated or rewritten")
    return Finding(checked, head, previous.hex(), anchors_checked=seen)


def _pages(engine: Engine, page: Callable[[int], Executable]) -> Iterator[Row[Any]]:
    """Rows in key order, a page at a time (keyset pagination on the first column)."""
    after = 0
    while True:
        with engine.connect() as conn:
            found = conn.execute(page(after)).all()
        yield from found
        if len(found) < PAGE:
            return
        after = found[-1][0]


@dataclass(frozen=True)
class RawRecord:
    """A row of the event table with its values as stored. A tampered row may hold other
    types than these (SQLite keeps whatever was written); `check` reports it."""

    id: int
    originator_id: UUID | str
    originator_version: int
    topic: str
    state: bytes


def raw_records(engine: Engine, events_table: str, through: int) -> Iterator[RawRecord]:
    """Read straight from the table, not through the event store's types, so a malformed
    row is reported at its position instead of failing the whole read."""
    query = text(
        "SELECT id, originator_id, originator_version, topic, state "
        f"FROM {events_table} WHERE id > :after AND id <= :through ORDER BY id LIMIT {PAGE}"
    )
    for row in _pages(engine, lambda after: query.bindparams(after=after, through=through)):
        originator = row.originator_id
        if isinstance(originator, bytes) and len(originator) == 16:
            originator = UUID(bytes=originator)  # SQLite: the UUID's 16 bytes
        state = bytes(row.state) if isinstance(row.state, memoryview) else row.state
        yield RawRecord(row.id, originator, row.originator_version, row.topic, state)


def stored_links(engine: Engine, through: int) -> Iterator[Link]:
    """The projector's chain up to `through`, in position order."""
    table = HashChain(MetaData()).links
    query = (
        select(table.c.position, table.c.hash)
        .where(table.c.position <= through)
        .order_by(table.c.position)
        .limit(PAGE)
    )
    for row in _pages(engine, lambda after: query.where(table.c.position > after)):
        yield row.position, row.hash


def chained_through(engine: Engine) -> int:
    """The position the projector has chained through: its tracked position, which
    commits with the links. A store without that row (its tracking table emptied) is
    read as chained through its last link."""
    links = HashChain(MetaData()).links
    if not inspect(engine).has_table(links.name):
        raise AuditError(
            "no audit chain in the views yet: start the control plane once "
            "(its projector computes the chain), then verify"
        )
    with engine.connect() as conn:
        tracked = conn.execute(
            text(f"SELECT notification_id FROM {TRACKING_TABLE} WHERE application_name = :name"),
            {"name": HashChain.name},
        ).scalar()
        if tracked is None:
            tracked = conn.execute(text(f"SELECT max(position) FROM {links.name}")).scalar()
    return int(tracked or 0)


def logged_after(engine: Engine, events_table: str, position: int) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            text(f"SELECT count(*) FROM {events_table} WHERE id > :p"), {"p": position}
        ).scalar()
    return int(found or 0)


def logged_of(engine: Engine, events_table: str, positions: Iterable[int]) -> set[int]:
    """Which of `positions` the log holds."""
    wanted = sorted(set(positions))
    if not wanted:
        return set()
    query = text(f"SELECT id FROM {events_table} WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    with engine.connect() as conn:
        return {int(found) for found in conn.execute(query, {"ids": wanted}).scalars()}


def no_event_table(events_table: str) -> AuditError:
    return AuditError(f"no event table {events_table} in the database")


def read_only_views_url(views_url: str) -> str:
    """`read_only_url` of the views' database, which holds the chain: a file that is not
    there is said as the chain missing beside the log, and what builds it."""
    try:
        return read_only_url(views_url)
    except NoDatabase as exc:
        raise AuditError(
            f"no audit chain beside the event log: {exc.path} (the views, which hold it) "
            "is not there; serving this store (`muto cloud serve`) builds the chain from "
            "the log as it stands then, so it attests the log from then on, not before (to "
            "verify a backup, restore its views file with its event log)"
        ) from None


def verify(
    events_url: str, views_url: str, events_table: str, anchors: Mapping[int, str] = {}
) -> Finding:
    """Both databases opened read-only (they are one database on PostgreSQL).
    `events_table`: the event store's table, named by the cloud that owns it."""
    events = create_engine(read_only_url(events_url))
    views = create_engine(read_only_views_url(views_url))
    try:
        if not inspect(events).has_table(events_table):
            raise no_event_table(events_table)
        through = chained_through(views)  # first: the moment both tables are read as of
        past_chain = logged_of(events, events_table, (p for p in anchors if p > through))
        found = check(
            raw_records(events, events_table, through),
            stored_links(views, through),
            anchors,
            past_chain,
        )
        return replace(found, unchained=logged_after(events, events_table, through))
    finally:
        events.dispose()
        views.dispose()
